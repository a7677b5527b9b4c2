"""Use a real MANO model the user has (MANO_RIGHT.pkl / MANO_LEFT.pkl), safely.

The official files are Python 2 pickles holding chumpy objects, and chumpy does not
install on Python 3.11. More importantly, unpickling executes whatever the file names, and
a crafted array or sparse matrix can make numpy or scipy allocate hundreds of GiB or write
outside an array. So we never use ``pickle.load``: :mod:`.safe_pickle` unpickles the file
into inert records (only the names a MANO file legitimately contains are allowed) and
builds each array with numpy alone after checking it.

This module knows MANO's layout: which fields handmocap uses and their shapes
(:data:`_MANO_SHAPES`), which hold integers, and the MANO-specific checks (faces name
existing vertices, each joint's parent is an earlier joint). The result is converted once
to plain-array ``.npz`` files in the cache, which the rest of handmocap loads like the open
model; a file that fails any check writes nothing.

The official left-hand file has a known defect: its shape directions' x components were
not mirrored, so shaped left hands come out distorted. When the left file's x components
equal the right's, we negate them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from handmocap.atomic import atomic_output
from handmocap.errors import AssetError
from handmocap.sides import Side

from .hand_model import HandModelFiles
from .open_hand_model import MANO_TIP_VERTEX_IDS
from .safe_pickle import (
    CorruptPickle,
    RecordError,
    RefusedPickle,
    check_finite,
    load_records,
    record_to_array,
)
from .webxr_asset import cache_root

MANO_VERTICES = 778
MANO_JOINTS = 16
_MANO_SHAPES = {
    "v_template": (MANO_VERTICES, 3),
    "f": (1538, 3),
    "J_regressor": (MANO_JOINTS, MANO_VERTICES),
    "weights": (MANO_VERTICES, MANO_JOINTS),
    "kintree_table": (2, MANO_JOINTS),
    "shapedirs": (MANO_VERTICES, 3, 10),
    "posedirs": (MANO_VERTICES, 3, (MANO_JOINTS - 1) * 9),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}
_INT_FIELDS = ("f", "kintree_table")

# Sanity bounds, checked before anything is allocated. A real MANO file is about 4 MB and
# its largest array 2.5 MB; a file declaring more than these is damaged or crafted.
MAX_VERTICES = 100_000
MAX_JOINTS = 64
MAX_SPARSE_VALUES = MAX_VERTICES * MAX_JOINTS  # dense size of a sparse matrix, in values
MAX_ARRAY_BYTES = 1 << 30  # one array, as declared by the file
MAX_FILE_BYTES = 1 << 31
_CACHE_VERSION = 2  # caches written before validation existed are not trusted

_DAMAGED = "this file is damaged or not an official MANO file"


def _field(value, key: str) -> np.ndarray:
    """One MANO field as a validated float64 (int64 for faces and the tree) array of
    shape ``_MANO_SHAPES[key]``. Raises RecordError naming the field."""
    arr = record_to_array(value, key, _MANO_SHAPES[key], max_side=MAX_VERTICES,
                          max_values=MAX_SPARSE_VALUES, max_bytes=MAX_ARRAY_BYTES)  # fmt: skip
    if key in _INT_FIELDS:
        if arr.dtype.kind not in "iu":
            raise RecordError(f"{key} has dtype {arr.dtype.name}; it must hold integers")
        return _checked_ints(arr, key)
    if arr.dtype.kind != "f":
        raise RecordError(f"{key} has dtype {arr.dtype.name}; it must hold floating-point values")
    check_finite(arr, key)
    return arr.astype(np.float64)


def _checked_ints(arr: np.ndarray, key: str) -> np.ndarray:
    """Faces must name existing vertices; each joint's parent must be an earlier joint.
    Comparisons run on the file's own dtype, before any conversion can wrap a value."""
    if key == "f":
        bad = arr[(arr < 0) | (arr >= MANO_VERTICES)]
        if bad.size:
            raise RecordError(f"f (the faces) refers to vertex {bad[0]}, out of range for "
                              f"{MANO_VERTICES} vertices")  # fmt: skip
        return arr.astype(np.int64)
    parents = arr[0]
    for joint in range(1, len(parents)):
        if not 0 <= parents[joint] < joint:
            raise RecordError(
                f"kintree_table gives joint {joint} the parent {parents[joint]}; "
                f"a parent must be an earlier joint (0 to {joint - 1})"
            )
    # the root's parent is a placeholder (-1, or 2**32 - 1 in the official files)
    return arr.astype(np.int64)


def _read_model_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise AssetError(f"cannot read {path}: {err.strerror or err}") from err
    if len(raw) > MAX_FILE_BYTES:
        raise AssetError(
            f"{path} is larger than {MAX_FILE_BYTES:,} bytes; a MANO model file is about "
            "4 MB: point handmocap at the MANO_RIGHT.pkl/MANO_LEFT.pkl of the MANO download"
        )
    return raw


def parse_mano_pkl(raw: bytes, path: Path) -> dict[str, np.ndarray]:
    """Parse one MANO pkl's bytes (``path`` only names it in messages) into validated
    plain arrays: shapes as :data:`_MANO_SHAPES`, float64 except int64 ``f`` and
    ``kintree_table``. Raises AssetError naming the file and the field."""
    try:
        data = load_records(raw)
    except RefusedPickle as err:
        raise AssetError(f"{path} is not a MANO model file: {err}") from err
    except CorruptPickle as err:
        raise AssetError(f"{path} is corrupt or not a MANO pickle ({err})") from err
    if not isinstance(data, dict):
        raise AssetError(f"{path} is not a MANO model file (it holds a {type(data).__name__})")
    out = {}
    for key in _MANO_SHAPES:
        if key not in data:
            raise AssetError(f"{path} is not a MANO model file: it has no {key!r}")
        try:
            out[key] = _field(data[key], key)
        except RecordError as err:
            raise AssetError(f"{path}: {err}; {_DAMAGED}") from None
    return out


def read_mano_pkl(path: Path) -> dict[str, np.ndarray]:
    """Parse one MANO pkl without executing anything from it; validate its arrays."""
    path = Path(path)
    return parse_mano_pkl(_read_model_file(path), path)


def fix_left_shapedirs(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> bool:
    """Negate the left model's shapedirs x components when they were left unmirrored
    (equal to the right's). Returns whether it fixed anything."""
    if np.abs(left["shapedirs"][:, 0, :] - right["shapedirs"][:, 0, :]).sum() < 1.0:
        left["shapedirs"][:, 0, :] *= -1.0
        return True
    return False


def convert_mano_folder(folder: Path) -> HandModelFiles:
    """Convert ``folder``'s MANO_RIGHT.pkl and MANO_LEFT.pkl once into cached npz files.

    The cache is keyed by the two files' content (and the converter's version): a file
    that fails validation writes nothing, and never touches an earlier valid conversion.
    Each npz is written atomically, so an interrupted conversion leaves no half file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AssetError(f"the MANO folder {folder} does not exist")
    paths = {side: folder / f"MANO_{side.upper()}.pkl" for side in (Side.RIGHT, Side.LEFT)}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise AssetError(
            f"the MANO folder {folder} lacks {', '.join(missing)}: it must hold the files "
            "MANO_RIGHT.pkl and MANO_LEFT.pkl from the MANO download (mano_v1_2/models)"
        )
    raw = {side: _read_model_file(p) for side, p in paths.items()}
    digest = hashlib.sha256(raw[Side.RIGHT] + raw[Side.LEFT]).hexdigest()[:12]
    model_id = f"mano-{digest}"
    out = cache_root() / "models" / f"{model_id}-v{_CACHE_VERSION}"
    if all((out / f"MANO_{s}.npz").is_file() for s in ("RIGHT", "LEFT")):
        return HandModelFiles(out, model_id)
    models = {side: parse_mano_pkl(raw[side], paths[side]) for side in paths}
    fix_left_shapedirs(models[Side.LEFT], models[Side.RIGHT])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AssetError(f"cannot create the cache folder {out}: {err.strerror or err}") from err
    for side, arrays in models.items():
        with atomic_output(out / f"MANO_{side.upper()}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, tip_vertex_ids=np.array(MANO_TIP_VERTEX_IDS))
    return HandModelFiles(out, model_id)
