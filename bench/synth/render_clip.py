"""Render a synthetic hand clip with ground truth.

    python -m bench.synth.render_clip --preset demo --out out/demo
    python -m bench.synth.render_clip --preset two_crossing --frames 96 --size 640x480 --png

Writes ``<out>/<name>.mp4`` and ``<out>/<name>.npz`` (see ``ground_truth.py``), each hand
rendered alone on the frames where two hands meet on screen as
``<out>/<name>_alone/h<h>_<t:05d>.png``, and with ``--png`` also
``<out>/<name>_frames/00000.png ...``. Everything is decided by the spec's
seed: the same spec renders the same clip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from handmocap.errors import HandmocapError
from handmocap.models.webxr_asset import VERSION as ASSET_VERSION
from handmocap.models.webxr_asset import WebXRHandFiles, ensure_webxr_hand
from handmocap.models.webxr_hand import WebXRHand, load_webxr_hand
from handmocap.retarget.hand_skeleton import MANO_16, MEDIAPIPE_21, WEBXR_25
from handmocap.retarget.rotations import matrix_to_quat

from .clip_spec import INTERACTION_LAYOUTS, PRESETS, ClipSpec, plan_hands
from .ground_truth import (
    FORMAT,
    VERSION,
    ClipGroundTruth,
    Visibility,
    alone_image_name,
    hands_meet,
    intrinsics_from_fov,
    project,
)
from .interaction import plan_interaction
from .look import random_look
from .motion import HandMotion, articulation_track, fast_finger_track, wrist_track
from .occluder import fully_hidden_run, plan_occluder

# Blender must place the bones exactly where our kinematics says; this is the tolerance
# of that self-check (float32 bone matrices give ~1e-7 m).
POSE_CHECK_TOLERANCE_M = 1e-4


def plan_motion(spec: ClipSpec, hands: dict[str, WebXRHand]) -> tuple[np.ndarray, list[HandMotion]]:
    """Intrinsics (3, 3) and one HandMotion per hand, all from the spec's seed."""
    rng = np.random.default_rng(spec.seed)
    k = intrinsics_from_fov(spec.width, spec.height, spec.fov_deg)
    if spec.layout in INTERACTION_LAYOUTS:
        return k, plan_interaction(spec, hands, rng)
    motions = []
    fingers = fast_finger_track if spec.finger_motion == "fast" else articulation_track
    for plan in plan_hands(spec, hands, rng):
        angles = fingers(rng, spec.num_frames, spec.fps)
        wrist = wrist_track(
            rng, spec.num_frames, spec.fps, plan.base_rotation, plan.start, plan.end
        )
        motions.append(HandMotion(hands[plan.side], angles, wrist.rotations, wrist.positions))
    return k, motions


def render_clip(
    spec: ClipSpec, out_dir: Path, files: WebXRHandFiles, log=print
) -> tuple[Path, Path]:
    """Render ``spec`` into ``out_dir``; returns (mp4 path, npz path)."""
    from . import blender_scene as bs  # bpy only when actually rendering

    spec = spec.validated()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hands = {side: load_webxr_hand(files.glb(side), side) for side in spec.handedness}
    k, motions = plan_motion(spec, hands)
    t_count, h_count = spec.num_frames, len(motions)
    rng = np.random.default_rng(spec.seed + 1_000_003)
    target = np.mean([m.root_position[0] for m in motions], axis=0) + np.array([0.0, -0.09, 0.0])
    look = random_look(rng, h_count, target)

    bs.reset_blender()
    scene = bs.setup_render(spec.width, spec.height, spec.samples, spec.denoise, spec.noise_seed)
    bs.add_camera(scene, k, spec.width, spec.height)
    bs.add_environment(scene, look)
    bhands = [
        bs.import_hand(scene, files.glb(m.hand.side), m.hand, look.skin_rgb[i], pass_index=i + 1)
        for i, m in enumerate(motions)
    ]
    owners = [{b.mesh.name, b.forearm.name} for b in bhands]

    keypoints_cam = np.stack([m.keypoints_cam for m in motions], axis=1)  # (T, H, 21, 3)
    keypoints_px = project(keypoints_cam, k)
    occluder = plan_occluder(spec, keypoints_cam, k)
    board = bs.add_occluder(scene, occluder.size, occluder.rgb) if occluder else None
    visibility = np.zeros((t_count, h_count, 21), dtype=np.int8)
    segmentation = np.zeros((t_count, spec.height, spec.width), dtype=np.uint8)
    amodal = np.zeros((t_count, h_count, spec.height, spec.width), dtype=bool)
    alone_dir = out_dir / f"{spec.name}_alone"
    for stale in alone_dir.glob("h*_*.png"):  # from an earlier render into this folder
        stale.unlink()
    alone_frames: list[int] = []
    alone_seconds = 0.0

    with tempfile.TemporaryDirectory(prefix="handmocap-render-") as tmp:
        frames_dir = out_dir / f"{spec.name}_frames" if spec.keep_png else Path(tmp) / "frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        masks_dir = Path(tmp) / "masks"
        bs.setup_mask_output(scene, masks_dir, [b.pass_index for b in bhands])
        started = time.perf_counter()
        for t in range(t_count):
            for m, b in zip(motions, bhands, strict=True):
                bs.pose_hand(
                    b, m.g_hand[t], m.p_hand[t], m.root_rotation[t], m.root_position[t],
                    m.hand.rest_positions[0],
                )  # fmt: skip
            if board is not None:
                bs.place_occluder(board, occluder.centres[t])
            scene.frame_current = t
            bpy_update()
            for m, b in zip(motions, bhands, strict=True):
                err = np.abs(bs.evaluated_joint_heads(b) - m.joints_cam[t]).max()
                if err > POSE_CHECK_TOLERANCE_M:
                    raise HandmocapError(
                        f"frame {t}: Blender placed the {m.hand.side} hand's bones "
                        f"{err * 1e3:.3f} mm away from the kinematics; the rig import is broken"
                    )
            visibility[t] = bs.keypoint_visibility(
                scene, keypoints_cam[t], owners, spec.width, spec.height, keypoints_px[t]
            )
            bs.render_frame(scene, t, frames_dir / f"{t:05d}.png")
            for h, b in enumerate(bhands):
                segmentation[t][_take_mask(masks_dir, b.pass_index, t)] = h + 1
            if spec.render_alone and hands_meet(segmentation[t], h_count):
                alone_started = time.perf_counter()
                amodal[t] = _render_alone(scene, bhands, t, alone_dir, masks_dir)
                alone_seconds += time.perf_counter() - alone_started
                alone_frames.append(t)
            else:
                amodal[t] = segmentation[t] == np.arange(1, h_count + 1)[:, None, None]
            elapsed = time.perf_counter() - started
            log(f"[render] {spec.name}: frame {t + 1}/{t_count}  {elapsed / (t + 1):.2f} s/frame")
        seconds_per_frame = (time.perf_counter() - started) / t_count
        mp4 = write_mp4(frames_dir, out_dir / f"{spec.name}.mp4", spec.fps, t_count)

    gt = ClipGroundTruth(
        header={
            "format": FORMAT,
            "version": VERSION,
            "name": spec.name,
            "spec": asdict(spec),
            "num_frames": t_count,
            "width": spec.width,
            "height": spec.height,
            "fps": spec.fps,
            "asset": {
                "package": "@webxr-input-profiles/assets",
                "version": ASSET_VERSION,
                "hand": "generic-hand",
            },
            "render": {
                "engine": "CYCLES",
                "device": "CPU",
                "samples": spec.samples,
                "denoise": spec.denoise,
                "noise_seed": spec.noise_seed,
                "seconds_per_frame": round(seconds_per_frame, 3),
                # Both hands rendered alone, per frame that has them (in seconds_per_frame).
                "alone_seconds_per_frame": (
                    round(alone_seconds / len(alone_frames), 3) if alone_frames else None
                ),
            },
            "keypoint_order": list(MEDIAPIPE_21),
            "joint_order": list(WEBXR_25),
            "mano_order": list(MANO_16),
            "visibility_codes": {v.name.lower(): int(v) for v in Visibility},
            "occluder": _occluder_header(visibility) if occluder else None,
            "alone_frames": alone_frames if spec.render_alone else None,
            "alone_dir": alone_dir.name if spec.render_alone else None,
        },
        intrinsics=k,
        handedness=tuple(m.hand.side for m in motions),
        keypoints_cam=keypoints_cam.astype(np.float32),
        keypoints_px=keypoints_px.astype(np.float32),
        visibility=visibility,
        joint_local_quat=np.stack([matrix_to_quat(m.local) for m in motions], 1).astype(np.float32),
        wrist_rotation=np.stack([m.root_rotation for m in motions], 1).astype(np.float32),
        wrist_position=np.stack([m.root_position for m in motions], 1).astype(np.float32),
        mano_pose=np.stack([m.mano_pose() for m in motions], 1).astype(np.float32),
        segmentation=segmentation,
        amodal=amodal if spec.render_alone else None,
    )
    npz = gt.save(out_dir / f"{spec.name}.npz")
    return mp4, npz


def _take_mask(masks_dir: Path, pass_index: int, t: int) -> np.ndarray:
    """(height, width) bool mask of ``pass_index`` that the last render of frame ``t``
    wrote; the file is removed, so a render that writes none is never read stale."""
    path = masks_dir / f"mask{pass_index}_{t:04d}.png"
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise HandmocapError(f"the mask pass for frame {t} was not written")
    path.unlink()
    return mask > 127


def _render_alone(scene, bhands: list, t: int, alone_dir: Path, masks_dir: Path) -> np.ndarray:
    """Render frame ``t`` once per hand with every other hand hidden, at full quality, into
    ``alone_dir``; (H, height, width) bool: each hand's mask when alone (its amodal mask)."""
    from . import blender_scene as bs

    alone_dir.mkdir(parents=True, exist_ok=True)
    masks = []
    for h, b in enumerate(bhands):
        with bs.hidden_from_render([o for o in bhands if o is not b]):
            bs.render_frame(scene, t, alone_dir / alone_image_name(t, h))
        masks.append(_take_mask(masks_dir, b.pass_index, t))
        for other in bhands:  # the hidden hands' masks of this render are empty
            if other is not b:
                _take_mask(masks_dir, other.pass_index, t)
    return np.stack(masks)


def _occluder_header(visibility: np.ndarray) -> dict[str, int | None]:
    first, last = fully_hidden_run(visibility)
    return {"first_hidden": first, "last_hidden": last}


def bpy_update() -> None:
    import bpy

    bpy.context.view_layer.update()


def write_mp4(frames_dir: Path, path: Path, fps: float, count: int) -> Path:
    """Encode PNG frames 00000.png... into an MPEG-4 video that OpenCV and MediaPipe read."""
    first = cv2.imread(str(frames_dir / "00000.png"))
    if first is None:
        raise HandmocapError(f"no rendered frames in {frames_dir}")
    h, w = first.shape[:2]
    part = path.with_name(path.stem + ".part.mp4")
    writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise HandmocapError(f"cannot write a video to {path}: check the folder is writable")
    try:
        for t in range(count):
            img = cv2.imread(str(frames_dir / f"{t:05d}.png"))
            writer.write(img)
    finally:
        writer.release()
    part.replace(path)
    return path


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from err
    return w, h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.synth.render_clip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    ap.add_argument("--out", type=Path, default=Path("out/synth"))
    ap.add_argument("--name")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--size", type=_parse_size)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--fov", type=float)
    ap.add_argument("--layout")
    ap.add_argument("--png", action="store_true", help="keep the PNG frames")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--spec-json", help="a whole ClipSpec as JSON (overrides the preset)")
    args = ap.parse_args(argv)
    try:
        base = ClipSpec(**json.loads(args.spec_json)) if args.spec_json else PRESETS[args.preset]
        spec = base.with_overrides(
            name=args.name, num_frames=args.frames, seed=args.seed, samples=args.samples,
            fov_deg=args.fov, layout=args.layout, keep_png=args.png or None,
            width=args.size[0] if args.size else None, height=args.size[1] if args.size else None,
        )  # fmt: skip
        files = ensure_webxr_hand()
        mp4, npz = render_clip(
            spec, args.out, files, log=(lambda *_: None) if args.quiet else print
        )
    except HandmocapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (json.JSONDecodeError, TypeError) as err:
        print(f"error: --spec-json is not a valid clip spec: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write the clip to {args.out}: {err}", file=sys.stderr)
        return 1
    print(f"video:        {mp4}")
    print(f"ground truth: {npz}")
    if spec.keep_png:
        print(f"frames:       {args.out / (spec.name + '_frames')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
