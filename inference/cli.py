"""``handmocap``: the command line tool (also ``python -m handmocap.inference``).

    handmocap capture clip.mp4 -o take.npz --overlay check.mp4
    handmocap capture frames/ --fps 24 -o take.npz --progress jsonl
    handmocap batch shoot/ more.mp4 list.txt -o takes/ --workers 2 --overlays
    handmocap smooth take.npz --smoothing 2 -o smoother.npz
    handmocap info --json
    handmocap models

Exit codes: 0 success (also when no hand was found: the take then has no tracks),
1 bad input or a failure with a message, 2 bad usage, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM, as the Blender add-on cancels). Interrupted or terminated runs
leave no half-written output.

batch: 0 every clip has its take (captured now or already up to date), 3 some clips
failed (each with its message in OUT_DIR/report.json and report.html; the others are
done), 1 bad input before any clip ran (no clips found, a missing input, bad numbers, an
unusable OUT_DIR, models not built, Ray could not start or be joined), 2 bad usage (an
unknown flag or choice, as for every command).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from handmocap import __version__
from handmocap.errors import HandmocapError

from .backend import DEVICES

if TYPE_CHECKING:
    from .capture import CaptureConfig


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
    cap.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads the capture may use, 1..256 (default 0: every core it may run on); "
        "lower it to run several captures side by side",
    )  # fmt: skip
    _add_capture_options(cap)
    _add_progress(cap)
    _add_batch(sub)
    smooth = sub.add_parser(
        "smooth", help="re-solve a take's motion prior at another strength (no video needed)"
    )
    smooth.add_argument("take", type=Path, help="a take file (.npz) written by capture")
    smooth.add_argument("-o", "--output", type=Path, required=True, help="the take to write")
    _add_smoothing(smooth)
    _add_progress(smooth)
    info = sub.add_parser("info", help="engine version, the device that would run, model status")
    info.add_argument("--json", action="store_true")
    info.add_argument("--device", choices=DEVICES, default="auto")
    sub.add_parser(
        "models",
        help="obtain and build the hand models into the user cache ($HANDMOCAP_CACHE or "
        "~/.cache/handmocap); once after installing the engine, a few minutes",
    )
    return ap


def _add_batch(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser(
        "batch", help="capture many clips on Ray: a take per clip, report.json and report.html",
        description="Capture every clip of INPUTS with the same settings, on a local Ray "
        "instance (or the Ray cluster at --address): one take per clip under OUT_DIR, named "
        "<stem>-<hash of its path>, and OUT_DIR/report.json and report.html. Clips whose take "
        "is up to date (same source, same settings) are skipped; a failing clip does not stop "
        "the others. Exit codes: 0 all clips done, 3 some failed, 1 bad input, 2 bad usage.",
    )  # fmt: skip
    batch.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT",
        help="video files, folders of PNG/JPEG frames, folders to search for both, or .txt "
        "files listing any of them (one per line)",
    )  # fmt: skip
    batch.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT_DIR",
        help="the folder for the takes, thumbnails and the report (created if missing)",
    )  # fmt: skip
    batch.add_argument(
        "--overlays", action="store_true",
        help="also write each clip's overlay video (<name>.overlay.mp4)",
    )  # fmt: skip
    _add_capture_options(batch)
    batch.add_argument(
        "--workers", type=int, metavar="N",
        help="clips captured at once, each worker loading the models once (default: the "
        "CPUs Ray has / --cpus-per-worker, at most one per clip)",
    )  # fmt: skip
    batch.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                       help="CPUs each worker declares to Ray (default 1)")  # fmt: skip
    batch.add_argument(
        "--address",
        help="join this running Ray cluster (host:port or auto; every node must see INPUTS and "
        "OUT_DIR at the same paths); default: a local Ray instance for this command",
    )  # fmt: skip
    batch.add_argument(
        "--force", action="store_true",
        help="capture every clip again, even when its take is up to date",
    )  # fmt: skip
    _add_progress(batch)


def _add_capture_options(parser: argparse.ArgumentParser) -> None:
    """The capture settings (device, hands, frame range, camera, MANO, motion prior): one
    definition for ``capture`` and ``batch``, read back by :func:`_capture_config`."""
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--max-hands", type=int, default=2)
    parser.add_argument(
        "--hands", choices=HANDS, default="both",
        help="keep both hands or one side only (both are still followed, so the other hand "
        "cannot take the chosen one's place)",
    )  # fmt: skip
    parser.add_argument(
        "--deocclusion", action=argparse.BooleanOptionalAction, default=True,
        help="clean each hand's crop of the other hand where two hands overlap, and look "
        "behind a followed hand for one it hides (default on)",
    )  # fmt: skip
    parser.add_argument("--start", type=int, default=0, help="first frame (inclusive)")
    parser.add_argument("--end", type=int, help="last frame (exclusive)")
    parser.add_argument("--stride", type=int, default=1, help="use every K-th frame")
    parser.add_argument(
        "--fov", type=float, help="horizontal field of view in degrees (default: a guess)"
    )
    parser.add_argument(
        "--fps", type=float,
        help="frames per second, 1..1000: of an image folder (default 30), or overriding a "
        "video's own rate (needed when the file does not say it)",
    )  # fmt: skip
    parser.add_argument(
        "--mano-dir",
        type=Path,
        help="folder with your MANO_RIGHT.pkl and MANO_LEFT.pkl (default: the open hand model)",
    )
    parser.add_argument("--skip-mano", action="store_true", help="keypoints only, no MANO fit")
    _add_smoothing(parser)


def _add_smoothing(parser: argparse.ArgumentParser) -> None:
    from .motion_prior import DEFAULT_SMOOTHING, MAX_SMOOTHING

    parser.add_argument(
        "--smoothing", type=float, default=DEFAULT_SMOOTHING, metavar="S",
        help=f"motion prior strength, 0..{MAX_SMOOTHING:g} (default {DEFAULT_SMOOTHING:g}): "
        "motion faster than 3/S Hz is treated as noise and short hidden runs are filled; "
        "0 keeps the per-frame fit",
    )  # fmt: skip


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", choices=("bar", "jsonl", "none"),
        help="progress display (default: bar on a terminal, none otherwise)",
    )  # fmt: skip


# Optional stages of the pipeline and whether this engine has them.
ENGINE_STAGES = (("mano_fit", True), ("deocclusion", True), ("motion_prior", True))
HANDS = ("both", "left", "right")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (the Blender add-on cancels so). It unwinds like Ctrl-C, so that every
    ``atomic_output`` block deletes its temporary file, and the CLI then exits 143."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut clean-up short
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show the engine's warnings (skipped files, missing frames, a short video) on stderr as
    ``warning: ...`` lines while the block runs."""
    logger = logging.getLogger("handmocap")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise HandmocapError(f"cannot write {path}: it is a folder; give a file name (take.npz)")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise HandmocapError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise HandmocapError(f"cannot write {path}: permission denied")


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path once links are resolved, or
    (both existing) the same device and inode, i.e. hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_not_in_folder(flag: str, out: Path, folder: Path) -> None:
    top, real = os.path.realpath(folder), os.path.realpath(out)
    if real == top:
        raise HandmocapError(f"{flag} {out} is the input frame folder; give an output file "
                             "outside it")  # fmt: skip
    if os.path.commonpath([real, top]) == top:
        raise HandmocapError(f"{flag} {out} is inside the input frame folder {folder}; write "
                             "outputs outside the folder of frames")  # fmt: skip
    try:
        st = os.stat(out)
    except OSError:
        return  # a new file outside the folder
    for entry in os.scandir(folder):  # a hard or symbolic link to one of the frames
        try:
            frame = entry.stat()
        except OSError:
            continue
        if (frame.st_dev, frame.st_ino) == (st.st_dev, st.st_ino):
            raise HandmocapError(f"{flag} {out} is the same file as the frame {entry.path} of "
                                 "the input folder; give the output another name")  # fmt: skip


def _check_paths(video: Path, outputs: list[tuple[str, Path]]) -> None:
    """Refuse, before any work, an output that is (through links too) the input video, in or
    of the input frame folder, or another output."""
    for i, (flag, out) in enumerate(outputs):
        if video.is_dir():
            _check_not_in_folder(flag, out, video)
        elif _same_file(out, video):
            raise HandmocapError(
                f"{flag} {out} is the same file as the input video {video}; writing it would "
                "replace the video. Give the output another name."
            )
        for other_flag, other in outputs[:i]:
            if _same_file(out, other):
                raise HandmocapError(f"{other_flag} {other} and {flag} {out} are the same file; "
                                     "give each output its own name")  # fmt: skip


def _capture_config(args: argparse.Namespace) -> CaptureConfig:
    """The capture settings from the flags, every number checked (HandmocapError names the
    flag): --fps finite 1..1000, --fov 10..170, --max-hands 1..4, the frame range."""
    from handmocap.sides import Side
    from handmocap.take import FrameRange

    from .capture import CaptureConfig
    from .deocclusion import DeocclusionConfig
    from .motion_prior import PriorConfig
    from .tracker import TrackerConfig
    from .video import check_fps

    if args.fps is not None:
        check_fps(args.fps)
    deocclusion = DeocclusionConfig(enabled=args.deocclusion)
    return CaptureConfig(
        tracker=TrackerConfig(device=args.device, max_hands=args.max_hands,
                              deocclusion=deocclusion, threads=getattr(args, "threads", 0)),
        hands=None if args.hands == "both" else Side(args.hands),
        frames=FrameRange(args.start, args.end, args.stride),
        fov_deg=args.fov, fps=args.fps, fit_mano=not args.skip_mano, mano_dir=args.mano_dir,
        prior=PriorConfig(smoothing=args.smoothing),
    ).validated()  # fmt: skip


def cmd_capture(args: argparse.Namespace) -> int:
    from .capture import capture
    from .progress import make_progress

    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    progress = make_progress(kind)
    outputs = [("-o", args.output)] + ([("--overlay", args.overlay)] if args.overlay else [])
    try:
        with _sigterm_as_interrupt(), _warnings_to_stderr():
            config = _capture_config(args)
            _check_paths(args.video, outputs)
            for _, path in outputs:
                _check_output(path)
            if args.mano_dir and not args.skip_mano:
                from handmocap.models.mano_files import convert_mano_folder

                convert_mano_folder(args.mano_dir)  # fails now, before any work, if unusable
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
            device = result.take.header.engine.device
            print(f"{result.frames} frames at {result.fps:.1f} fps on {device}: {hands}",
                  file=sys.stderr)  # fmt: skip
        print(f"take: {args.output}")
        if args.overlay:
            print(f"overlay: {args.overlay}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """Capture many clips on Ray (:mod:`.batch`); exit codes in the module docstring."""
    from .batch import BatchConfig, run_batch
    from .batch_report import make_display

    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    display = make_display(kind)
    try:
        with _sigterm_as_interrupt(), _warnings_to_stderr():
            config = BatchConfig(
                out_dir=args.output, capture=_capture_config(args), overlays=args.overlays,
                workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                address=args.address, force=args.force,
            ).validated()  # fmt: skip
            if args.mano_dir and not args.skip_mano:
                from handmocap.models.mano_files import convert_mano_folder

                convert_mano_folder(args.mano_dir)  # fails now, before any work, if unusable
            outcome = run_batch(args.inputs, config, display)
    except HandmocapError as err:
        display.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        return 1
    s = outcome.summary
    code = 3 if s.failed else 0
    display.finish(clips=s.clips, ok=s.ok, failed=s.failed, skipped=s.skipped,
                   report=str(outcome.report_json), html=str(outcome.report_html),
                   exit_code=code)  # fmt: skip
    if kind != "jsonl":
        up_to_date = f" ({s.skipped} up to date, skipped)" if s.skipped else ""
        print(f"{s.clips} clips: {s.ok} ok{up_to_date}, {s.failed} failed, in "
              f"{s.wall_seconds:.1f} s", file=sys.stderr)  # fmt: skip
        for r in outcome.results:
            if not r.ok:
                print(f"failed: {r.source}: {r.error}", file=sys.stderr)
        print(f"report: {outcome.report_html}")
    return code


def cmd_smooth(args: argparse.Namespace) -> int:
    """Re-solve the motion prior of a take; nothing is written unless it all succeeds."""
    from handmocap.take import load_take

    from .motion_prior import PriorConfig, resolve_take
    from .progress import make_progress

    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    progress = make_progress(kind)
    try:
        with _sigterm_as_interrupt():
            config = PriorConfig(smoothing=args.smoothing).validated()
            if _same_file(args.output, args.take):
                raise HandmocapError(f"-o {args.output} is the input take; give the output "
                                     "another name")  # fmt: skip
            _check_output(args.output)
            take = load_take(args.take)
            rows = sum(len(t) for t in take.tracks)
            progress.start(rows, stages=["motion_prior"])
            progress.stage("motion_prior", len(take.tracks), "tracks")
            smoothed, report = resolve_take(take, config)
            progress.update(len(take.tracks))
            smoothed.save(args.output)
    except HandmocapError as err:
        progress.error(str(err))
        print(f"error: {err}", file=sys.stderr)
        return 1
    progress.finish(take=str(args.output), tracks=len(smoothed.tracks),
                    infilled_frames=report.infilled_frames,
                    seconds=round(report.seconds, 3))  # fmt: skip
    if kind != "jsonl":
        print(f"smoothing {config.smoothing:g}: {len(smoothed.tracks)} track(s), "
              f"{report.infilled_frames} frame(s) filled in {report.seconds:.2f} s",
              file=sys.stderr)  # fmt: skip
        print(f"take: {args.output}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from handmocap.models.iknet_build import built_iknet
    from handmocap.models.mediapipe_port import built_mediapipe_models
    from handmocap.take import VERSION as TAKE_VERSION

    from .backend import choose_backend

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
    from .motion_prior import DEFAULT_SMOOTHING, MAX_SMOOTHING

    smoothing = {"min": 0.0, "max": MAX_SMOOTHING, "default": DEFAULT_SMOOTHING}
    report.update(take_version=TAKE_VERSION, stages=dict(ENGINE_STAGES), smoothing=smoothing,
                  hands=list(HANDS))  # fmt: skip
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:15s} {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Obtain and build every asset the engine needs (``handmocap.models.build_assets``):
    what is built and verified already is kept, so a second run takes a second."""
    from handmocap.models.build_assets import main as build_assets

    return build_assets()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"capture": cmd_capture, "batch": cmd_batch, "smooth": cmd_smooth,
                    "info": cmd_info, "models": cmd_models}  # fmt: skip
        return commands[args.command](args)
    except Terminated:
        print("terminated", file=sys.stderr)
        if argv is None:  # the program itself, not a caller in Python
            # Every output was cleaned up while unwinding. Skip the interpreter's teardown
            # (seconds with torch loaded): the add-on sends SIGKILL 2 s after SIGTERM.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(143)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
