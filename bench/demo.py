"""``python3 build.py demo``: what the project can do end to end, written to ``out/demo``.

At this stage: the default demo clip (the embedded clip the capture demo will run on),
rendered by the synthetic renderer with its ground truth. The clip comes from the clip
cache, so the tests and the demo render it once between them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from handmocap.errors import HandmocapError

from .synth.cache import cached_clip
from .synth.ground_truth import load_ground_truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    args = ap.parse_args(argv)
    try:
        print("[demo] rendering the demo clip (about 4 minutes the first time, cached after)")
        mp4, npz = cached_clip("demo")
        args.out.mkdir(parents=True, exist_ok=True)
        out_mp4, out_npz = args.out / mp4.name, args.out / npz.name
        shutil.copyfile(mp4, out_mp4)
        shutil.copyfile(npz, out_npz)
        gt = load_ground_truth(out_npz)
    except HandmocapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write the demo outputs to {args.out}: {err}", file=sys.stderr)
        return 1
    render = gt.header["render"]
    print(
        f"[demo] {gt.num_frames} frames, {gt.header['width']}x{gt.header['height']}, "
        f"{gt.num_hands} hand(s) {', '.join(gt.handedness)}; rendered at "
        f"{render['seconds_per_frame']:.2f} s/frame (Cycles CPU, {render['samples']} samples)"
    )
    print(f"video:        {out_mp4.resolve()}")
    print(f"ground truth: {out_npz.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
