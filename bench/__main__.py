"""``python3 build.py bench``: speed, accuracy and smoothness, written to bench/results/.

    python -m bench                 # every suite
    python -m bench render          # one suite
    python -m bench --list

Each suite writes ``bench/results/<suite>.json``; every suite's last run is summarised in
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


def _markdown(results: list[tuple[Result, str]]) -> str:
    """The summary of ``results``: each suite's result and when it was written."""
    machine = platform.processor() or platform.machine()
    lines = [
        "# handmocap benchmarks",
        "",
        f"{machine}, Python {platform.python_version()}; each suite's figures are from its "
        "last run (its time below), which may differ from the others'.",
        "",
    ]
    for r, when in results:
        lines += [f"## {r.suite}", "", f"Run {when or 'at an unrecorded time'}.", "",
                  r.description, ""]  # fmt: skip
        lines += ["| metric | value | unit | note |", "|---|---|---|---|"]
        for m in r.metrics:
            value = f"{m.value:.4g}" if isinstance(m.value, float) else str(m.value)
            lines.append(f"| {m.name} | {value} | {m.unit} | {m.note} |")
        lines.append("")
    return "\n".join(lines)


def _recorded(folder: Path) -> list[tuple[Result, str]]:
    """Every suite's last result in ``folder`` (``<suite>.json``), in the suites' order,
    with the time it was written; a file that cannot be read is named and skipped."""
    out = []
    for name in SUITES:
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            out.append((Result.from_json(data), str(data.get("written", ""))))
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"[bench] {path} left out of the summary: {err}", file=sys.stderr)
    return out


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
    for name in args.suites or list(SUITES):
        print(f"[bench] {name} ...", flush=True)
        try:
            result = SUITES[name](ref)
        except HandmocapError as err:
            print(f"error: suite {name}: {err}", file=sys.stderr)
            return 1
        record = {**result.to_json(), "written": time.strftime("%Y-%m-%d %H:%M")}
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        for m in result.metrics:
            print(f"    {m.name:40s} {m.value!s:>12} {m.unit}")
    (args.out / "summary.md").write_text(_markdown(_recorded(args.out)))
    print(f"[bench] results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
