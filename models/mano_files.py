"""Use a real MANO model the user has (MANO_RIGHT.pkl / MANO_LEFT.pkl), safely.

The official files are Python 2 pickles holding chumpy objects, and chumpy does not
install on Python 3.11. More importantly, unpickling executes whatever the file names. So
we never use ``pickle.load``: a restricted unpickler resolves only the handful of classes
a MANO file legitimately contains (numpy arrays and dtypes, scipy sparse matrices, chumpy
arrays, which become plain numpy arrays) and refuses everything else. The result is
checked against MANO's shapes and converted once to plain-array ``.npz`` files in the
cache, which the rest of handmocap loads like the open model.

The official left-hand file has a known defect: its shape directions' x components were
not mirrored, so shaped left hands come out distorted. When the left file's x components
equal the right's, we negate them.
"""

from __future__ import annotations

import codecs
import copyreg
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np

from handmocap.errors import AssetError

from .hand_model import HandModelFiles
from .webxr_asset import cache_root

_MANO_SHAPES = {
    "v_template": (778, 3),
    "f": (1538, 3),
    "J_regressor": (16, 778),
    "weights": (778, 16),
    "kintree_table": (2, 16),
    "shapedirs": (778, 3, 10),
    "posedirs": (778, 3, 135),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}
MANO_TIP_IDS = (744, 320, 443, 554, 671)


class _ChumpyStandIn:
    """Receives a chumpy object's pickled state; :func:`_plain` turns it into an array."""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


def _sparse_class(name: str):
    import scipy.sparse

    return getattr(scipy.sparse, name)


def _numpy_reconstruct():
    from numpy.core.multiarray import _reconstruct

    return _reconstruct


# (module, name) -> what to build instead. Nothing else may be named by the file.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "scalar"): lambda: np.core.multiarray.scalar,
    # Python 2 pickles (the official files) rebuild objects through copy_reg.
    ("copy_reg", "_reconstructor"): lambda: copyreg._reconstructor,
    ("copyreg", "_reconstructor"): lambda: copyreg._reconstructor,
    ("__builtin__", "object"): lambda: object,
    ("_codecs", "encode"): lambda: codecs.encode,  # bytes in protocol <= 2 pickles
    ("builtins", "object"): lambda: object,
    ("scipy.sparse.csc", "csc_matrix"): lambda: _sparse_class("csc_matrix"),
    ("scipy.sparse._csc", "csc_matrix"): lambda: _sparse_class("csc_matrix"),
    ("scipy.sparse.csr", "csr_matrix"): lambda: _sparse_class("csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"): lambda: _sparse_class("csr_matrix"),
}


class _Refused(pickle.UnpicklingError):
    """The file names a class or function outside the allowlist."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("chumpy"):
            return _ChumpyStandIn
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]()
        raise _Refused(f"refusing to load {module}.{name} from a model file")


def _plain(value):
    """chumpy stand-ins and sparse matrices -> numpy arrays; anything else as is."""
    if isinstance(value, _ChumpyStandIn):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise AssetError("a chumpy object in the file has no array data")
        return np.asarray(state["x"])
    if hasattr(value, "toarray"):
        return value.toarray()
    return value


def read_mano_pkl(path: Path) -> dict[str, np.ndarray]:
    """Parse one MANO pkl without executing anything from it; validate its arrays."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise AssetError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        data = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as err:
        raise AssetError(f"{path} is not a MANO model file: {err}") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as err:  # fmt: skip
        raise AssetError(
            f"{path} is corrupt or not a MANO pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(data, dict):
        raise AssetError(f"{path} is not a MANO model file (it holds a {type(data).__name__})")
    out = {}
    for key, shape in _MANO_SHAPES.items():
        if key not in data:
            raise AssetError(f"{path} is not a MANO model file: it has no {key!r}")
        arr = np.asarray(_plain(data[key]))
        if arr.shape != shape:
            raise AssetError(f"{path}: {key} has shape {arr.shape}, MANO's is {shape}")
        out[key] = arr.astype(np.int64 if key in ("f", "kintree_table") else np.float64)
    return out


def fix_left_shapedirs(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> bool:
    """Negate the left model's shapedirs x components when they were left unmirrored
    (equal to the right's). Returns whether it fixed anything."""
    if np.abs(left["shapedirs"][:, 0, :] - right["shapedirs"][:, 0, :]).sum() < 1.0:
        left["shapedirs"][:, 0, :] *= -1.0
        return True
    return False


def convert_mano_folder(folder: Path) -> HandModelFiles:
    """Convert ``folder``'s MANO_RIGHT.pkl and MANO_LEFT.pkl once into cached npz files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AssetError(f"the MANO folder {folder} does not exist")
    paths = {side: folder / f"MANO_{side.upper()}.pkl" for side in ("right", "left")}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise AssetError(
            f"the MANO folder {folder} lacks {', '.join(missing)}: it must hold the files "
            "MANO_RIGHT.pkl and MANO_LEFT.pkl from the MANO download (mano_v1_2/models)"
        )
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths.values())).hexdigest()[:12]
    out = cache_root() / "models" / f"mano-{digest}"
    if all((out / f"MANO_{s}.npz").is_file() for s in ("RIGHT", "LEFT")):
        return HandModelFiles(out, f"mano-{digest}")
    models = {side: read_mano_pkl(p) for side, p in paths.items()}
    fix_left_shapedirs(models["left"], models["right"])
    out.mkdir(parents=True, exist_ok=True)
    for side, arrays in models.items():
        np.savez(out / f"MANO_{side.upper()}.npz", **arrays, tip_vertex_ids=np.array(MANO_TIP_IDS))
    return HandModelFiles(out, f"mano-{digest}")
