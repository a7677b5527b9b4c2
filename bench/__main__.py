"""``python3 build.py bench``: speed, accuracy and smoothness, written to bench/results/.

    python -m bench                 # every suite
    python -m bench render          # one suite
    python -m bench --list

Each suite writes ``bench/results/<suite>.json``; all of them together are summarised in
``bench/results/summary.md``. Timings come with a ratio to a reference workload timed in
the same run, because the machine is shared and noisy: compare ratios across runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from handmocap.errors import HandmocapError

from .suites import SUITES, Result, reference_seconds

RESULTS = Path(__file__).resolve().parent / "results"


def _markdown(results: list[Result]) -> str:
    machine = platform.processor() or platform.machine()
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        "# handmocap benchmarks",
        "",
        f"{machine}, Python {platform.python_version()}, {when}",
        "",
    ]
    for r in results:
        lines += [f"## {r.suite}", "", r.description, ""]
        lines += ["| metric | value | unit | note |", "|---|---|---|---|"]
        for m in r.metrics:
            value = f"{m.value:.4g}" if isinstance(m.value, float) else str(m.value)
            lines.append(f"| {m.name} | {value} | {m.unit} | {m.note} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("suites", nargs="*", help=f"suites to run (default: all of {sorted(SUITES)})")
    ap.add_argument("--list", action="store_true", help="list the suites and exit")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.list:
        for name, suite in SUITES.items():
            print(f"{name:12s} {suite.__doc__.strip().splitlines()[0]}")
        return 0
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        print(f"error: unknown suite(s) {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    ref = reference_seconds()
    print(f"[bench] reference workload: {ref:.3f} s")
    results = []
    for name in args.suites or list(SUITES):
        print(f"[bench] {name} ...", flush=True)
        try:
            result = SUITES[name](ref)
        except HandmocapError as err:
            print(f"error: suite {name}: {err}", file=sys.stderr)
            return 1
        results.append(result)
        (args.out / f"{name}.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        for m in result.metrics:
            print(f"    {m.name:40s} {m.value!s:>12} {m.unit}")
    (args.out / "summary.md").write_text(_markdown(results))
    print(f"[bench] results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
