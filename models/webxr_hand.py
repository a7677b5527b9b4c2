"""Read the WebXR generic hand (a skinned glTF binary) into plain numpy arrays.

No Blender here: the same rest skeleton feeds the renderer (through bpy), the open hand
model in MANO's layout, and the tests.

**Hand space** is the asset's space expressed in Blender's axes (Z up, metres), i.e.
what an imported armature's armature space is: ``p_hand = GLTF_TO_BLENDER @ p_gltf``.

Each WebXR joint carries an authored frame that follows the WebXR Hand Input convention,
verified on this asset (within 3 degrees): local **-Z points along the bone towards the
fingertip** and **+Y points out of the back of the hand**. We use those frames as the
anatomical frames in which joint limits (flexion, spread, twist) are expressed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handmocap.errors import AssetError
from handmocap.retarget.hand_skeleton import WEBXR_25, WEBXR_25_PARENTS
from handmocap.retarget.rotations import GLTF_TO_BLENDER, orthonormalize, quat_to_matrix
from handmocap.sides import Side

_COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16,
                     5125: np.uint32, 5126: np.float32}  # fmt: skip
_TYPE_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


@dataclass(frozen=True)
class WebXRHand:
    """One hand of the WebXR generic hand asset, in hand space (metres, Z up).

    Attributes:
        side: which physical hand.
        joint_names: the 25 WebXR joint names in :data:`WEBXR_25` order.
        parents: (25,) parent index per joint, -1 for the wrist.
        rest_positions: (25, 3) joint positions at rest.
        rest_frames: (25, 3, 3) authored joint frames at rest; columns are the joint's
            local x, y, z axes in hand space (-z along the bone, +y back of the hand).
        vertices: (V, 3) rest vertices, V = 1360.
        faces: (F, 3) triangle vertex indices.
        skin_joints: (V, 4) joint indices (WEBXR_25 order) influencing each vertex.
        skin_weights: (V, 4) their weights, rows summing to 1.
    """

    side: Side
    joint_names: tuple[str, ...]
    parents: np.ndarray
    rest_positions: np.ndarray
    rest_frames: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray

    def joint(self, name: str) -> int:
        return self.joint_names.index(name)

    def keypoint_rest_positions(self, inset_m: float = 0.003) -> np.ndarray:
        """(25, 3) rest positions of the keypoint skeleton: the joints, with each fingertip
        moved from the WebXR tip joint (10-12 mm inside the finger) out to ``inset_m``
        short of the end of the finger mesh.

        MediaPipe's tip landmark marks the end of the finger, so this is the point the
        ground truth and the fitted hand must agree on. The site stays on the line from the
        distal joint through the tip joint, so it moves rigidly with the tip bone.
        """
        out = self.rest_positions.copy()
        main = self.skin_joints[np.arange(len(self.vertices)), self.skin_weights.argmax(axis=1)]
        for j, name in enumerate(self.joint_names):
            if not name.endswith("-tip"):
                continue
            parent = int(self.parents[j])
            d = self.rest_positions[j] - self.rest_positions[parent]
            d /= np.linalg.norm(d)
            finger_verts = self.vertices[np.isin(main, (j, parent))]
            reach = float(np.max((finger_verts - self.rest_positions[j]) @ d))
            out[j] = self.rest_positions[j] + max(reach - inset_m, 0.0) * d
        return out

    def palm_normal(self) -> np.ndarray:
        """(3,) unit normal pointing out of the **palm** (opposite the back of the hand)."""
        back = self.rest_frames[self.joint("wrist")][:, 1]
        return -back / np.linalg.norm(back)

    def finger_direction(self) -> np.ndarray:
        """(3,) unit vector from the wrist towards the middle finger's knuckle."""
        d = (
            self.rest_positions[self.joint("middle-finger-phalanx-proximal")]
            - self.rest_positions[0]
        )
        return d / np.linalg.norm(d)


def read_glb(path: Path) -> tuple[dict, bytes]:
    """Split a .glb file into its JSON document and binary buffer."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AssetError(f"cannot read the hand asset {path}: {err}") from err
    if len(data) < 20 or data[:4] != b"glTF":
        raise AssetError(f"{path} is not a binary glTF (.glb) file")
    version, length = struct.unpack("<II", data[4:12])
    if version != 2 or length != len(data):
        raise AssetError(f"{path} is a truncated or unsupported glb (version {version})")
    offset, doc, blob = 12, None, b""
    while offset < len(data):
        chunk_len, chunk_type = struct.unpack("<II", data[offset : offset + 8])
        chunk = data[offset + 8 : offset + 8 + chunk_len]
        if chunk_type == 0x4E4F534A:  # JSON
            doc = json.loads(chunk)
        elif chunk_type == 0x004E4942:  # BIN
            blob = chunk
        offset += 8 + chunk_len
    if doc is None:
        raise AssetError(f"{path} has no JSON chunk")
    return doc, blob


def _accessor(doc: dict, blob: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_COMPONENT_DTYPES[acc["componentType"]])
    width = _TYPE_WIDTH[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", 0) or dtype.itemsize * width
    count = acc["count"]
    rows = np.ndarray(
        shape=(count, width),
        dtype=dtype,
        buffer=blob,
        offset=start,
        strides=(stride, dtype.itemsize),
    )
    return np.array(rows)


def load_webxr_hand(path: Path, side: Side) -> WebXRHand:
    """Parse ``left.glb`` / ``right.glb`` of the WebXR generic hand into a :class:`WebXRHand`."""
    doc, blob = read_glb(path)
    nodes = doc["nodes"]
    by_name = {n.get("name"): i for i, n in enumerate(nodes)}
    missing = [name for name in WEBXR_25 if name not in by_name]
    if missing:
        raise AssetError(f"{path} is not the WebXR generic hand: joints {missing} are missing")
    skin = doc["skins"][0]

    positions = np.zeros((25, 3))
    frames = np.zeros((25, 3, 3))
    for j, name in enumerate(WEBXR_25):
        node = nodes[by_name[name]]
        # The asset's layout (docs/architecture.md, "Models and assets"): joints are siblings
        # under the armature root, so a node's TRS is already its rest transform in asset space.
        t = np.asarray(node.get("translation", [0.0, 0.0, 0.0]))
        q = node.get("rotation", [0.0, 0.0, 0.0, 1.0])  # glTF order x, y, z, w
        r = quat_to_matrix(np.array([q[3], q[0], q[1], q[2]]))
        positions[j] = GLTF_TO_BLENDER @ t
        frames[j] = GLTF_TO_BLENDER @ r
    frames = orthonormalize(frames)

    mesh_node = next(n for n in nodes if "mesh" in n)
    prim = doc["meshes"][mesh_node["mesh"]]["primitives"][0]
    verts = _accessor(doc, blob, prim["attributes"]["POSITION"]).astype(np.float64)
    faces = _accessor(doc, blob, prim["indices"]).reshape(-1, 3).astype(np.int64)
    skin_local = _accessor(doc, blob, prim["attributes"]["JOINTS_0"]).astype(np.int64)
    weights = _accessor(doc, blob, prim["attributes"]["WEIGHTS_0"]).astype(np.float64)
    # Skin joint slots index skin["joints"] (node indices); re-index to WEBXR_25 order.
    slot_to_joint = np.array([WEBXR_25.index(nodes[n]["name"]) for n in skin["joints"]])
    skin_joints = slot_to_joint[skin_local]
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)

    return WebXRHand(
        side=side,
        joint_names=WEBXR_25,
        parents=np.asarray(WEBXR_25_PARENTS, dtype=np.int64),
        rest_positions=positions,
        rest_frames=frames,
        vertices=verts @ GLTF_TO_BLENDER.T,
        faces=faces,
        skin_joints=skin_joints,
        skin_weights=weights,
    )
