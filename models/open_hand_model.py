"""The open hand model: MANO's file layout, built from the WebXR generic hand (MIT).

MANO itself is licence-restricted, so handmocap ships this stand-in. It has MANO's
kinematics (16 joints: wrist + 3 per finger; finger metacarpals folded into the rigid
palm), MANO's arrays and names, and loads through ``smplx.MANO`` unchanged, so every
line of code that poses it also runs on a real MANO model.

What is built (V = 1365: the 1360 WebXR vertices plus 5 fingertip sites):

* ``v_template`` (V, 3) rest vertices in hand space, metres; ``f`` (F, 3) triangles.
* ``weights`` (V, 16) skinning weights: the WebXR weights folded onto MANO's joints.
* ``J_regressor`` (16, V) sparse convex combinations of nearby vertices that reproduce
  each joint, so shape changes move the joints with the surface.
* ``kintree_table`` (2, 16); ``posedirs`` (V, 3, 135) zero (no pose correctives);
  ``hands_components`` identity and ``hands_mean`` zero (a flat mean hand).
* ``shapedirs`` (V, 3, 10): ten anthropometric modes, one standard deviation each
  (:data:`SHAPE_MODES`): overall size, palm width, palm length, the four finger lengths,
  thumb length, finger thickness, palm thickness.
* fingertips: smplx reads MANO's five tip joints from fixed vertex ids (744, 320, 443,
  554, 671). Our tips are the fingertip sites the ground truth uses (3 mm inside the end
  of each finger), added as vertices bound to the distal joint and *placed at those ids*
  by permuting the vertex order.

The left hand is the mirror image of the right (x -> -x in hand space).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handmocap.errors import AssetError
from handmocap.retarget.hand_skeleton import MANO_16_PARENTS, WEBXR_25, WEBXR_FOR_MANO
from handmocap.retarget.rotations import MIRROR_X
from handmocap.sides import Side

from .webxr_hand import WebXRHand

MODEL_ID = "handmocap-open-hand-1"
MANO_TIP_VERTEX_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (smplx)
_TIP_JOINTS = (
    "thumb-tip",
    "index-finger-tip",
    "middle-finger-tip",
    "ring-finger-tip",
    "pinky-finger-tip",
)
_FINGERS = ("index", "middle", "ring", "pinky")

# Each mode's size at beta = 1 (one standard deviation of adult hands, roughly: hand
# length varies about 5.5 %, segment lengths and widths 5-6 %, thicknesses 8 %).
SHAPE_MODES = (
    ("size", 0.055), ("palm_width", 0.05), ("palm_length", 0.05),
    ("index_length", 0.06), ("middle_length", 0.06), ("ring_length", 0.06),
    ("pinky_length", 0.06), ("thumb_length", 0.06), ("finger_thickness", 0.08),
    ("palm_thickness", 0.08),
)  # fmt: skip


@dataclass(frozen=True)
class ManoLayout:
    """A hand model's arrays in MANO's layout (see module docstring for shapes)."""

    side: Side
    v_template: np.ndarray
    f: np.ndarray
    weights: np.ndarray
    J_regressor: np.ndarray
    kintree_table: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    tip_vertex_ids: np.ndarray
    model_id: str = MODEL_ID

    def save(self, folder: Path) -> Path:
        """Write ``MANO_RIGHT.npz`` / ``MANO_LEFT.npz`` (plain arrays, no pickled objects)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"MANO_{self.side.upper()}.npz"
        arrays = {k: v for k, v in vars(self).items() if k != "side"}
        arrays["model_id"] = np.array(self.model_id)
        np.savez(path, **arrays)
        return path


def _mano_joint_of_webxr() -> np.ndarray:
    """(25,) the MANO joint each WebXR joint's vertices follow (metacarpals -> wrist,
    tips -> the distal joint, thumb metacarpal -> thumb1)."""
    out = np.zeros(25, np.int64)
    for mano, webxr in enumerate(WEBXR_FOR_MANO):
        out[webxr] = mano
    for name in _TIP_JOINTS:
        j = WEBXR_25.index(name)
        out[j] = out[j - 1]
    return out  # finger metacarpals stay 0 (the wrist)


def _joint_regressor(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(J, V) rows of non-negative weights summing to 1 over vertices near each joint,
    reproducing the joint position within 0.05 mm (least squares with a heavy sum-to-one
    row). The neighbourhood grows until the joint lies inside it (the wrist sits near the
    mesh's open cuff and needs more)."""
    # Imported here: the model build needs it, a capture (which imports this module for its
    # constants) would pay scipy.optimize's 0.13 s import on every start.
    from scipy.optimize import nnls

    reg = np.zeros((len(joints), len(vertices)))
    for j, p in enumerate(joints):
        by_distance = np.argsort(np.linalg.norm(vertices - p, axis=1))
        for k in (16, 32, 64, 128, 256):
            near = by_distance[:k]
            a = np.vstack([vertices[near].T, 10.0 * np.ones(k)])
            w, _ = nnls(a, np.concatenate([p, [10.0]]))
            if w.sum() > 0 and np.abs(w @ vertices[near] / w.sum() - p).max() < 5e-5:
                break
        else:
            raise AssetError(f"no convex combination of vertices reproduces joint {j}")
        reg[j, near] = w / w.sum()
    return reg


def _shape_directions(hand: WebXRHand, verts: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """(V, 3, 10) displacement of every vertex for beta_i = 1, linear by construction.

    ``skin`` (V, 25) holds each vertex's WebXR skinning weights (fingertip sites: one-hot).
    """
    rest = hand.rest_positions
    wrist = rest[0]
    axis = hand.finger_direction()
    normal = hand.palm_normal() - (hand.palm_normal() @ axis) * axis
    normal /= np.linalg.norm(normal)
    radial = np.cross(normal, axis)
    mcps = {f: rest[WEBXR_25.index(f"{f}-finger-phalanx-proximal")] for f in _FINGERS}
    centre = np.mean(list(mcps.values()), axis=0) * 0.5 + wrist * 0.5

    def member(prefix: str, segments: tuple[str, ...]) -> np.ndarray:
        idx = [WEBXR_25.index(f"{prefix}-{s}") for s in segments]
        return skin[:, idx].sum(axis=1)

    finger_segs = ("phalanx-proximal", "phalanx-intermediate", "phalanx-distal", "tip")
    fingers = {f: member(f"{f}-finger", finger_segs) for f in _FINGERS}
    thumb = member("thumb", ("metacarpal", "phalanx-proximal", "phalanx-distal", "tip"))
    palm = np.clip(1.0 - thumb - sum(fingers.values()), 0.0, 1.0)
    thumb_base = rest[WEBXR_25.index("thumb-metacarpal")]

    def along(v: np.ndarray, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
        return ((v - origin) @ d)[:, None] * d

    dirs = np.zeros((len(verts), 3, len(SHAPE_MODES)))
    scale = dict(SHAPE_MODES)
    dirs[:, :, 0] = (verts - wrist) * scale["size"]
    # Palm width/length: the palm stretches, each digit moves with its base.
    width = palm[:, None] * along(verts, centre, radial)
    length = palm[:, None] * along(verts, wrist, axis)
    for f, m in fingers.items():
        width += m[:, None] * along(mcps[f][None], centre, radial)
        length += m[:, None] * along(mcps[f][None], wrist, axis)
    width += thumb[:, None] * along(thumb_base[None], centre, radial)
    dirs[:, :, 1] = width * scale["palm_width"]
    dirs[:, :, 2] = length * scale["palm_length"]
    thick = np.zeros_like(verts)
    for i, f in enumerate(_FINGERS):
        tip = rest[WEBXR_25.index(f"{f}-finger-tip")]
        d = (tip - mcps[f]) / np.linalg.norm(tip - mcps[f])
        dirs[:, :, 3 + i] = fingers[f][:, None] * along(verts, mcps[f], d) * scale[f"{f}_length"]
        off = verts - mcps[f]
        radial_part = off - (off @ d)[:, None] * d
        thick += fingers[f][:, None] * radial_part
    tip = rest[WEBXR_25.index("thumb-tip")]
    d = (tip - thumb_base) / np.linalg.norm(tip - thumb_base)
    dirs[:, :, 7] = thumb[:, None] * along(verts, thumb_base, d) * scale["thumb_length"]
    dirs[:, :, 8] = thick * scale["finger_thickness"]
    dirs[:, :, 9] = palm[:, None] * along(verts, centre, normal) * scale["palm_thickness"]
    return dirs


def build_right_hand(hand: WebXRHand) -> ManoLayout:
    """The right hand in MANO's layout from the right WebXR hand."""
    if hand.side != Side.RIGHT:
        raise AssetError("build the open model from the right WebXR hand; the left is its mirror")
    sites = hand.keypoint_rest_positions()[[WEBXR_25.index(n) for n in _TIP_JOINTS]]
    verts = np.vstack([hand.vertices, sites])
    n_mesh = len(hand.vertices)
    skin = np.zeros((len(verts), 25))
    np.add.at(
        skin, (np.repeat(np.arange(n_mesh), 4), hand.skin_joints.ravel()), hand.skin_weights.ravel()
    )
    for i, name in enumerate(_TIP_JOINTS):
        skin[n_mesh + i, WEBXR_25.index(name)] = 1.0
    to_mano = _mano_joint_of_webxr()
    weights = np.zeros((len(verts), 16))
    for j in range(25):
        weights[:, to_mano[j]] += skin[:, j]

    # Put the fingertip sites at MANO's tip vertex ids; everything else keeps its order.
    order = np.full(len(verts), -1)
    order[list(MANO_TIP_VERTEX_IDS)] = n_mesh + np.arange(5)
    order[order < 0] = np.arange(n_mesh)
    new_index = np.empty_like(order)
    new_index[order] = np.arange(len(order))
    verts, weights, skin = verts[order], weights[order], skin[order]
    faces = new_index[hand.faces]

    joints = hand.rest_positions[WEBXR_FOR_MANO]
    return ManoLayout(
        side=Side.RIGHT,
        v_template=verts,
        f=faces.astype(np.int64),
        weights=weights,
        J_regressor=_joint_regressor(verts, joints),
        kintree_table=np.array(
            [[2**32 - 1 if p < 0 else p for p in MANO_16_PARENTS], list(range(16))], dtype=np.int64
        ),
        shapedirs=_shape_directions(hand, verts, skin),
        posedirs=np.zeros((len(verts), 3, 135)),
        hands_components=np.eye(45),
        hands_mean=np.zeros(45),
        tip_vertex_ids=np.array(MANO_TIP_VERTEX_IDS),
    )


def mirror(right: ManoLayout) -> ManoLayout:
    """The left hand: x -> -x in hand space, triangles re-wound to keep normals outward."""
    m = MIRROR_X.diagonal()  # x -> -x on each row
    return ManoLayout(
        side=Side.LEFT,
        v_template=right.v_template * m,
        f=right.f[:, ::-1].copy(),
        weights=right.weights,
        J_regressor=right.J_regressor,
        kintree_table=right.kintree_table,
        shapedirs=right.shapedirs * m[None, :, None],
        posedirs=right.posedirs,
        hands_components=right.hands_components,
        hands_mean=right.hands_mean,
        tip_vertex_ids=right.tip_vertex_ids,
        model_id=right.model_id,
    )
