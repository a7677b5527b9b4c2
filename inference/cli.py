"""``handmocap``: the command line tool (also ``python -m handmocap.inference``).

    handmocap capture clip.mp4 -o take.npz --overlay check.mp4
    handmocap capture frames/ --fps 24 -o take.npz --progress jsonl
    handmocap info --json

Exit codes: 0 success (also when no hand was found: the take then has no tracks),
1 bad input or a failure with a message, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from handmocap import __version__
from handmocap.errors import HandmocapError

from .backend import DEVICES


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="handmocap", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--version", action="version", version=f"handmocap {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="capture hands from a video into a take file")
    cap.add_argument("video", type=Path, help="a video file or a folder of PNG/JPEG frames")
    cap.add_argument(
        "-o", "--output", type=Path, required=True, help="the take file (.npz) to write"
    )
    cap.add_argument("--overlay", type=Path, help="also write a video with the skeletons drawn")
    cap.add_argument("--device", choices=DEVICES, default="auto")
    cap.add_argument("--max-hands", type=int, default=2)
    cap.add_argument("--start", type=int, default=0, help="first frame (inclusive)")
    cap.add_argument("--end", type=int, help="last frame (exclusive)")
    cap.add_argument("--stride", type=int, default=1, help="use every K-th frame")
    cap.add_argument(
        "--fov", type=float, help="horizontal field of view in degrees (default: a guess)"
    )
    cap.add_argument("--fps", type=float, help="frame rate of an image folder (default 30)")
    cap.add_argument(
        "--mano-dir",
        type=Path,
        help="folder with your MANO_RIGHT.pkl and MANO_LEFT.pkl (default: the open hand model)",
    )
    cap.add_argument("--skip-mano", action="store_true", help="keypoints only, no MANO fit")
    cap.add_argument(
        "--progress", choices=("bar", "jsonl", "none"),
        help="progress display (default: bar on a terminal, none otherwise)",
    )  # fmt: skip
    info = sub.add_parser("info", help="engine version, the device that would run, model status")
    info.add_argument("--json", action="store_true")
    info.add_argument("--device", choices=DEVICES, default="auto")
    return ap


# Optional stages of the pipeline and whether this engine has them.
ENGINE_STAGES = (("mano_fit", True), ("deocclusion", False), ("motion_prior", False))


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise HandmocapError(f"cannot write {path}: it is a folder; give a file name (take.npz)")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise HandmocapError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise HandmocapError(f"cannot write {path}: permission denied")


def cmd_capture(args: argparse.Namespace) -> int:
    from .capture import CaptureConfig, capture
    from .progress import make_progress
    from .tracker import TrackerConfig
    from .video import FrameRange

    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    progress = make_progress(kind)
    try:
        for path in (args.output, args.overlay):
            if path is not None:
                _check_output(path)
        if args.mano_dir and not args.skip_mano:
            from handmocap.models.mano_files import convert_mano_folder

            convert_mano_folder(args.mano_dir)  # fails now, before any work, if it is unusable
        config = CaptureConfig(
            tracker=TrackerConfig(device=args.device, max_hands=args.max_hands),
            frames=FrameRange(args.start, args.end, args.stride),
            fov_deg=args.fov, fps=args.fps, fit_mano=not args.skip_mano, mano_dir=args.mano_dir,
        )  # fmt: skip
        result = capture(args.video, config, progress, overlay=args.overlay)
        result.take.save(args.output)
    except HandmocapError as err:
        progress.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        return 1
    tracks = result.take.tracks
    progress.finish(take=str(args.output), tracks=len(tracks), frames=result.frames,
                    seconds=round(result.seconds, 3), fps=round(result.fps, 2))  # fmt: skip
    if kind != "jsonl":
        if not tracks:
            print(f"no hands found in {result.frames} frames of {args.video}; wrote an empty take "
                  f"{args.output}", file=sys.stderr)  # fmt: skip
        else:
            hands = ", ".join(f"#{t.track_id} {t.handedness} ({len(t)} frames)" for t in tracks)
            device = result.take.header["device"]
            print(f"{result.frames} frames at {result.fps:.1f} fps on {device}: {hands}",
                  file=sys.stderr)  # fmt: skip
        print(f"take: {args.output}")
        if args.overlay:
            print(f"overlay: {args.overlay}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from handmocap.models.iknet_build import built_iknet
    from handmocap.models.mediapipe_port import built_mediapipe_models

    from .backend import choose_backend
    from .take import VERSION as TAKE_VERSION

    report: dict = {"version": __version__, "python": sys.version.split()[0]}
    try:
        backend = choose_backend(args.device)
        report.update(
            device=backend.device, provider=backend.providers[0], device_reason=backend.reason
        )
    except HandmocapError as err:
        report.update(device=None, device_error=str(err))
    try:
        models = built_mediapipe_models()
        built_iknet()
        report.update(models_built=True, models_folder=str(models.folder))
    except HandmocapError as err:
        report.update(models_built=False, models_error=str(err))
    # What a client (the Blender add-on) may rely on: the take format it will read, and the
    # optional pipeline stages this engine has, so that it offers no option that does nothing.
    report.update(take_version=TAKE_VERSION, stages=dict(ENGINE_STAGES))
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:15s} {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"capture": cmd_capture, "info": cmd_info}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
