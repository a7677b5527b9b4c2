"""``python3 build.py demo``: what the project can do end to end, written to ``out/demo``.

The default demo clip, rendered by the synthetic renderer with its ground truth (from the
clip cache, so the tests and the demo render it once between them), then captured by the
engine exactly as ``handmocap capture`` does it: a take file and an overlay video to check
by eye, with the 2D error against the ground truth; then the take keyed onto a rigged hand
in Blender (the add-on's code), saved as a .blend and exported as FBX.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.inference.capture import CaptureConfig, capture
from handmocap.inference.progress import BarProgress, NoProgress

from .suites import pa_mpjpe_mm
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
        print("[demo] capturing it with the engine")
        overlay = args.out / "demo_overlay.mp4"
        progress = BarProgress(sys.stdout) if sys.stdout.isatty() else NoProgress()
        # The demo clip's camera is known, as a user who knows theirs passes --fov.
        config = CaptureConfig(fov_deg=gt.header["spec"]["fov_deg"])
        result = capture(out_mp4, config, progress=progress, overlay=overlay)
        take_path = result.take.save(args.out / "demo_take.npz")
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
    errors = []
    for tr in result.take.tracks:
        hand = gt.handedness.index(tr.handedness) if tr.handedness in gt.handedness else 0
        truth = gt.keypoints_px[tr.frames, hand]
        errors.append(np.linalg.norm(tr.keypoints_2d - truth, axis=-1).ravel())
    found = sum(len(t) for t in result.take.tracks)
    median = f"{np.median(np.concatenate(errors)):.2f} px" if errors else "n/a"
    engine = result.take.header.engine
    fps = result.frames / engine.tracking_seconds
    print(
        f"[demo] engine on {engine.device}: {fps:.1f} frames/s tracking, hands "
        f"found on {found} of {gt.num_frames * gt.num_hands} hand-frames, median 2D error {median}"
    )
    for tr in result.take.tracks:
        if tr.keypoints_3d is not None:
            hand = gt.handedness.index(tr.handedness)
            pa = pa_mpjpe_mm(tr.keypoints_3d.astype(np.float64),
                             gt.keypoints_cam[tr.frames, hand].astype(np.float64))  # fmt: skip
            print(f"[demo] MANO fit ({result.take.header.hand_model}), {tr.handedness} hand: "
                  f"PA-MPJPE {pa.mean():.1f} mm against the ground truth")  # fmt: skip
    try:
        from .demo_blender import write_blend_and_fbx

        print("[demo] keying the take onto a rigged hand in Blender")
        blend, fbx_paths = write_blend_and_fbx(take_path, args.out)
    except HandmocapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"video:        {out_mp4.resolve()}")
    print(f"ground truth: {out_npz.resolve()}")
    print(f"take:         {take_path.resolve()}")
    print(f"overlay:      {overlay.resolve()}")
    print(f"blend:        {blend.resolve()}")
    for path in fbx_paths:
        print(f"fbx:          {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
