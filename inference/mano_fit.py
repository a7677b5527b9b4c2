"""MANO regression: 21 keypoints per frame -> MANO pose, shape and wrist translation.

Two stages, both batched over all frames of a track (no Python loop over frames):

1. **IK network** (ONNX): lifted 3D keypoints (below) -> 16 rotations + shape, per frame. Trained on
   right hands; left hands are mirrored in (x -> -x) and out (axis-angle y, z negated),
   which is exact because the open left hand is the mirror of the right.
2. **Refinement** (Adam, gradients written out in numpy, :mod:`.fit_grad`): rotations per
   frame (6D), translation per frame, one shape per track, fitted to the lifted 3D
   keypoints and the 2D keypoints through the camera intrinsics, robustly and weighted by
   keypoint confidence, with anatomical joint limits, a shape prior and a pull towards the
   IK solution.

The 3D input is MediaPipe's 2.5D estimate lifted into camera axes: image x, y and the
network's relative depth z (in the same pixel scale), divided by the focal length. Its
world landmarks are not used: measured on rendered clips they are rotated a median 24
degrees away from the true camera-space hand, frame by frame, and fitting them gave 27-38
degree orientation errors against 13-15 with the lifted points (a first design fitted the
world landmarks; docs/architecture.md, "Data flow", records the choice). The 3D term aligns
scale only (treated as a constant in each step), so depth order still decides which way a
flat hand is turned, which the 2D term alone cannot (foreshortening has no sign).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handmocap.models.keypoint_rig import KeypointRig, features
from handmocap.retarget.hand_skeleton import WEBXR_FOR_MANO
from handmocap.retarget.joint_limits import limits_array
from handmocap.retarget.rotations import MIRROR_X, matrix_to_axis_angle, mirror_rotations
from handmocap.sides import BOTH, Side

from . import fit_grad
from .backend import Backend, create_session
from .fit_grad import Adam, forward_kinematics, rot6d_to_matrix, rotations_from_6d
from .fit_settings import FitAssets, FitConfig, fit_assets

if TYPE_CHECKING:
    from handmocap.models.hand_model import HandModelFiles

# The IK network runs on at most this many frames per call.
IK_ROWS = 2048
# ``fit`` reports its progress at most this often (seconds apart), and always at the end.
PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ManoFit:
    """One track's MANO parameters. T frames. The per-frame arrays are float32 (as a take
    stores them), ``betas`` and ``rest_keypoints`` float64.

    Attributes:
        pose: (T, 16, 3) axis-angle, radians: [0] global orientation in camera space,
            [1:] the 15 finger joints (MANO order, local).
        betas: (10,) shape, shared by the track.
        translation: (T, 3) wrist joint in camera space, metres.
        keypoints_3d: (T, 21, 3) the fitted model's keypoints in camera space, metres.
        ik_keypoints_3d: (T, 21, 3) the IK network's keypoints before refinement, wrist at
            the refined translation (for comparing the stages).
        rest_keypoints: (21, 3) the hand with these betas at rest (MediaPipe order, hand
            space, wrist at the origin), metres.
    """

    pose: np.ndarray
    betas: np.ndarray
    translation: np.ndarray
    keypoints_3d: np.ndarray
    ik_keypoints_3d: np.ndarray
    rest_keypoints: np.ndarray


class IKRegressor:
    """The IK network: :meth:`preprocess` -> :meth:`run` -> :meth:`postprocess`.

    Pre- and postprocessing are plain array maths (the left hand mirrored in and out);
    :meth:`run` is the one ONNX Runtime call, on the providers
    :func:`.backend.choose_backend` picked.
    """

    def __init__(self, model: Path, backend: Backend, threads: int = 0):
        """``model``: the trained ``iknet.onnx``; ``threads`` 0 = every usable core."""
        self.backend = backend
        self.session = create_session(model, backend, threads)

    @staticmethod
    def preprocess(world: np.ndarray, side: str) -> np.ndarray:
        """(T, 21, 3) world landmarks -> (T, 123) features of the equivalent right hand."""
        return features(world @ MIRROR_X if side == Side.LEFT else world)

    @staticmethod
    def postprocess(out: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(T, 106) -> rotations (T, 16, 3, 3) float32 of the actual hand and betas (T, 10)."""
        rots = rotations_from_6d(out[:, :96].reshape(-1, 16, 6))
        if side == Side.LEFT:
            rots = mirror_rotations(rots)
        return rots.astype(np.float32), 2.5 * np.tanh(out[:, 96:].astype(np.float64))

    def run(self, feats: np.ndarray) -> np.ndarray:
        """(T, 123) float32 features -> (T, 106): 16 rotations in 6D, then 10 shape logits.
        Run ``IK_ROWS`` rows at a time: ONNX Runtime keeps the largest activations it ever
        allocated, ~100 MB for one call on a 20,000-frame track."""
        outs = [self.session.run(None, {"features": feats[i : i + IK_ROWS]})[0]
                for i in range(0, len(feats), IK_ROWS)]  # fmt: skip
        return np.concatenate(outs) if outs else np.zeros((0, 106), np.float32)

    def estimate(self, world: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(T, 21, 3) keypoints of one ``side`` -> rotations (T, 16, 3, 3), betas (T, 10)."""
        return self.postprocess(self.run(self.preprocess(world, side)), side)

    __call__ = estimate


# The entries (row, column) of a joint's frames^T @ local @ frames that its angles read.
_ANGLE_ENTRIES = ((0, 2), (1, 2), (2, 2), (0, 1), (0, 0))


def anatomical_angles(local: np.ndarray, frames: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """(T, 15, 3, 3) local rotations -> (T, 15, 3) flex, spread, twist in degrees (inverse of
    ``retarget.joint_limits.angles_to_local_rotations``: R = Rx(-flex) Ry(s spread) Rz(-twist)),
    through the joint ``frames`` (15, 3, 3) one by one; the fit folds them into
    :func:`angle_map`."""
    a = frames.swapaxes(-1, -2) @ local @ frames
    a = np.stack([a[..., r, c] for r, c in _ANGLE_ENTRIES], -1)
    beta = np.arcsin(np.clip(a[..., 0], -1.0, 1.0))
    alpha = np.arctan2(-a[..., 1], a[..., 2])
    gamma = np.arctan2(-a[..., 3], a[..., 4])
    return np.degrees(np.stack([-alpha, beta * signs, -gamma], axis=-1))


def angle_map(frames: np.ndarray, mirrored: bool) -> np.ndarray:
    """(J * 9, J * 5) float32 matrix taking J local rotations, flattened, to the
    ``_ANGLE_ENTRIES`` of each one's frames^T @ local @ frames (``frames`` (J, 3, 3));
    ``mirrored`` first mirrors them (MIRROR_X @ local @ MIRROR_X, a left hand's rotations as
    a right hand's). One matrix product instead of two batched 3x3 products per joint (four
    for a left hand): a fit of 423 frames takes 9% (right) to 20% (left) less CPU."""
    j = len(frames)
    rows = [r for r, _ in _ANGLE_ENTRIES]
    cols = [c for _, c in _ANGLE_ENTRIES]
    w = frames[:, :, None, rows] * frames[:, None, :, cols]  # (J, k, l, entry)
    if mirrored:
        m = np.diag(MIRROR_X)
        w = w * (m[:, None] * m[None, :])[None, :, :, None]
    block = np.zeros((j, 9, j, 5))
    block[np.arange(j), :, np.arange(j), :] = w.reshape(j, 9, 5)
    return block.reshape(j * 9, j * 5).astype(np.float32)


def mapped_angles(local: np.ndarray, amap: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """:func:`anatomical_angles` of ``local`` (T, J, 3, 3) through the joint frames folded
    into ``amap`` (:func:`angle_map`) -> (T, J, 3) degrees."""
    return fit_grad.anatomical_angles(local, amap, signs)[0]


def lift_keypoints(uv: np.ndarray, rel_depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(T, 21, 2) px and (T, 21) relative depth -> (T, 21, 3) camera-axis points, centred,
    in units of the wrist's depth (the fit aligns scale per frame).

    MediaPipe's relative depth is in the pixel scale of x: z = (Z - Z_wrist) f / Z_wrist, so
    Z / Z_wrist = 1 + z / f, and X / Z_wrist = (u - cx) / f * Z / Z_wrist (full perspective,
    not the weak-perspective shortcut that would widen near fingers by up to 20 %).
    """
    k = intrinsics
    depth = 1.0 + rel_depth / k[0, 0]
    x = (uv[..., 0] - k[0, 2]) / k[0, 0] * depth
    y = (uv[..., 1] - k[1, 2]) / k[1, 1] * depth
    pts = np.stack([x, y, depth], axis=-1)
    return pts - pts.mean(axis=1, keepdims=True)


def initial_translation(
    rel: np.ndarray, uv: np.ndarray, weights: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """Wrist positions (T, 3) putting wrist-relative keypoints rel (T, 21, 3) onto 2D
    keypoints uv (T, 21, 2) through K: linear least squares per frame, all frames at once.

    From u = fx (X + tx) / (Z + tz) + cx: fx tx - (u - cx) tz = (u - cx) Z - fx X (same in y).
    """
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    du, dv = uv[..., 0] - cx, uv[..., 1] - cy
    zeros = np.zeros_like(du)
    rows_u = np.stack([np.full_like(du, fx), zeros, -du], axis=-1)
    rows_v = np.stack([zeros, np.full_like(dv, fy), -dv], axis=-1)
    a = np.concatenate([rows_u, rows_v], axis=1) * np.concatenate([weights, weights], 1)[..., None]
    b = np.concatenate(
        [du * rel[..., 2] - fx * rel[..., 0], dv * rel[..., 2] - fy * rel[..., 1]], 1
    )
    b = b * np.concatenate([weights, weights], 1)
    ata = np.einsum("tki,tkj->tij", a, a) + 1e-9 * np.eye(3)
    atb = np.einsum("tki,tk->ti", a, b)
    return np.linalg.solve(ata, atb[..., None])[..., 0]


class ManoFitter:
    """Fits tracks. ``rig`` is the side's :class:`KeypointRig`; ``frames``/``signs`` are the
    anatomical joint frames (15, 3, 3) and spread signs (15,) of the right hand."""

    def __init__(self, ik: IKRegressor, rigs: dict[str, KeypointRig], frames: np.ndarray,
                 signs: np.ndarray, config: FitConfig | None = None):  # fmt: skip
        self.ik = ik
        self.rigs = rigs
        self.config = (config or FitConfig()).validated()
        finger_frames = frames[WEBXR_FOR_MANO[1:]].astype(np.float64)
        self.angle_maps = {side: angle_map(finger_frames, side == Side.LEFT) for side in BOTH}
        self.signs = signs[WEBXR_FOR_MANO[1:]].astype(np.float32)
        lim = limits_array()[WEBXR_FOR_MANO[1:]].astype(np.float32)
        self.lo, self.hi = lim[..., 0], lim[..., 1]

    def fit(self, side: str, uv: np.ndarray, rel_depth: np.ndarray, confidence: np.ndarray,
            intrinsics: np.ndarray,
            on_progress: Callable[[float], None] | None = None) -> ManoFit:  # fmt: skip
        """uv (T, 21, 2) px; rel_depth (T, 21) px-scaled relative depth; confidence (T, 21);
        intrinsics K (3, 3).

        ``on_progress(fraction)``, if given, is called with the share of the optimisation
        steps done (increasing, 0 < fraction <= 1), at most every ``PROGRESS_INTERVAL_S``
        seconds and always with 1.0 at the end; it does not change the result.

        A track longer than ``FitConfig.window`` frames is fitted in windows of that many
        frames, with the shape fitted first on that many frames spread over the track."""
        world = lift_keypoints(uv, rel_depth, intrinsics)
        rots0, betas0 = self.ik(world, side)
        beta0 = betas0.mean(axis=0)
        t, window = uv.shape[0], self.config.window
        inputs = (side, uv, world, confidence, intrinsics, rots0, beta0)
        if t <= window:
            return self._refine(*inputs, np.arange(t), None, on_progress)
        starts = range(0, t, window)
        passes = 1 + len(starts)

        def part(k: int) -> Callable[[float], None] | None:
            if on_progress is None:
                return None
            return lambda fraction: on_progress(min((k + fraction) / passes, 1.0))

        spread = np.linspace(0, t - 1, window).round().astype(int)
        shaped = self._refine(*inputs, spread, None, part(0))
        # Each window's result goes straight into the track's arrays (no list of windows to
        # concatenate: on long videos that was a second copy of every output). The betas are
        # fixed from here on, so the shape pass's rest skeleton is every window's.
        out = ManoFit(
            pose=np.empty((t, 16, 3), np.float32),
            betas=shaped.betas,
            translation=np.empty((t, 3), np.float32),
            keypoints_3d=np.empty((t, 21, 3), np.float32),
            ik_keypoints_3d=np.empty((t, 21, 3), np.float32),
            rest_keypoints=shaped.rest_keypoints,
        )
        for k, a in enumerate(starts):
            rows = slice(a, min(a + window, t))
            fit = self._refine(*inputs, np.arange(t)[rows], shaped.betas, part(k + 1))
            for name in ("pose", "translation", "keypoints_3d", "ik_keypoints_3d"):
                getattr(out, name)[rows] = getattr(fit, name)
        return out

    def _refine(self, side: str, uv: np.ndarray, world: np.ndarray, confidence: np.ndarray,
                intrinsics: np.ndarray, rots0: np.ndarray, beta0: np.ndarray, rows: np.ndarray,
                shape: np.ndarray | None,
                on_progress: Callable[[float], None] | None) -> ManoFit:  # fmt: skip
        """The refinement of frames ``rows`` of a track (arrays as in :meth:`fit`, plus the
        lifted keypoints ``world`` (T, 21, 3), the IK rotations ``rots0`` (T, 16, 3, 3) and
        the IK's mean shape ``beta0`` (10,)). ``shape`` (10,) fixes the betas; None fits
        them."""
        cfg = self.config
        rig = self.rigs[side]
        uv, world, confidence, rots0 = uv[rows], world[rows], confidence[rows], rots0[rows]
        t = uv.shape[0]
        f32 = np.float32
        rots0 = rots0.astype(f32)
        kp0 = forward_kinematics(rig.shaped(beta0).astype(f32), rots0)[0]
        rel0 = kp0 - kp0[:, :1]
        transl0 = initial_translation(rel0, uv, confidence, intrinsics)

        rot6 = rots0[..., :2].transpose(0, 1, 3, 2).reshape(t, 16, 6).copy()
        betas = np.asarray(beta0 if shape is None else shape, f32).copy()
        transl = np.asarray(transl0, f32)
        params = [rot6, betas, transl] if shape is None else [rot6, transl]
        lrs = [cfg.lr] * (len(params) - 1) + [cfg.lr_translation]
        opt = Adam(params, lrs)
        w3 = world.astype(f32)
        w3 = w3 - w3.mean(axis=1, keepdims=True)
        uv32, conf, k = uv.astype(f32), confidence.astype(f32), intrinsics.astype(f32)
        size_px = np.maximum(np.linalg.norm(np.ptp(uv, axis=1), axis=-1), 1.0).astype(f32)
        amap = self.angle_maps[side]
        shape_rows = rig.shape.astype(f32)  # (21, 3, 10)

        reported = time.perf_counter()
        for step in range(cfg.iterations + 1):
            r, r_backward = rot6d_to_matrix(rot6)
            kp, kp_backward = forward_kinematics(rig.shaped(betas).astype(f32), r)
            # The wrist at ``transl``: kp[:, 0] is the rest wrist on every frame.
            cam = kp - kp[:, :1] + transl[:, None]
            if step == cfg.iterations:
                break
            _, d_3d = fit_grad.keypoint_term(cam, w3, conf, cfg.robust_3d_m)
            _, d_2d = fit_grad.reprojection_term(cam, uv32, size_px, k, conf, cfg.robust_2d)
            _, d_limits = fit_grad.joint_limit_term(r[:, 1:], amap, self.signs, self.lo, self.hi)
            _, d_ik = fit_grad.ik_prior_term(r, rots0)
            d_cam = d_3d(cfg.w_3d) + d_2d(cfg.w_2d)
            d_r = d_ik(cfg.w_ik)
            d_r[:, 1:] += d_limits(cfg.w_limits)
            d_wrist = np.einsum("tkc->tc", d_cam)  # every keypoint moves with the wrist
            d_kp = d_cam.copy()
            d_kp[:, 0] -= d_wrist
            d_r_fk, d_rest = kp_backward(d_kp)
            grads = [r_backward(d_r + d_r_fk)]
            if shape is None:
                _, d_shape = fit_grad.shape_term(betas)
                grads.append(d_shape(cfg.w_shape) + np.einsum("kcb,kc->b", shape_rows, d_rest))
            grads.append(d_wrist)
            opt.step(grads)
            if on_progress is not None and step + 1 < cfg.iterations:
                now = time.perf_counter()
                if now - reported >= PROGRESS_INTERVAL_S:
                    reported = now
                    on_progress((step + 1) / cfg.iterations)
        # Per-frame outputs in float32, as the take stores them (half the memory on long
        # videos); the per-track shape and rest skeleton in float64.
        pose = matrix_to_axis_angle(r.astype(np.float64)).astype(np.float32)
        transl_np = transl.copy()
        betas_np = betas.astype(np.float64)
        rest = rig.rest + np.einsum("kcb,b->kc", rig.shape, betas_np)
        if on_progress is not None:
            on_progress(1.0)
        return ManoFit(
            pose=pose,
            betas=betas_np,
            translation=transl_np,
            keypoints_3d=cam,
            ik_keypoints_3d=(rel0 + transl_np[:, None]).astype(np.float32),
            rest_keypoints=rest - rest[0],
        )


def load_fitter(assets: FitAssets, backend: Backend, config: FitConfig | None = None) -> ManoFitter:
    """The fitter over ``assets``, its IK network on ``backend``."""
    from handmocap.models.iknet_build import load_rig
    from handmocap.models.webxr_hand import load_webxr_hand
    from handmocap.retarget.joint_limits import spread_signs

    files = assets.hand_model
    rigs = {side: load_rig(files.folder, side) for side in BOTH}
    hand = load_webxr_hand(assets.webxr_hand.right, Side.RIGHT)
    ik = IKRegressor(assets.iknet, backend)
    signs = spread_signs(hand.rest_frames, hand.rest_positions)
    return ManoFitter(ik, rigs, hand.rest_frames, signs, config)


def build_fitter(
    mano_dir: Path | None, backend: Backend, config: FitConfig | None = None
) -> tuple[ManoFitter, HandModelFiles]:
    """(fitter, hand model files) for the open model, or the user's MANO when ``mano_dir``;
    a missing asset fails fast (:func:`fit_assets`)."""
    assets = fit_assets(mano_dir)
    return load_fitter(assets, backend, config), assets.hand_model


__all__ = ["Adam", "FitAssets", "FitConfig", "IKRegressor", "ManoFit", "ManoFitter",
           "build_fitter", "fit_assets", "load_fitter"]  # fmt: skip
