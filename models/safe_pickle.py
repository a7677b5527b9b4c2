"""Read numeric arrays out of an untrusted pickle without executing or trusting it.

Unpickling executes whatever the file names, and even the allowed names are dangerous:
scipy writes outside its arrays for a sparse matrix with an out-of-range index, and a
forged array header can declare hundreds of GiB. So this module never lets numpy or scipy
build anything from the file's parts:

1. :func:`load_records` unpickles with an allow-list of names (numpy arrays and dtypes,
   scipy CSC/CSR matrices, chumpy objects, and the few helpers pickles use to carry them).
   Each of those becomes an inert record holding the file's numbers as Python values and
   bytes; anything else is refused.
2. :func:`record_to_array` (or :func:`array_from_record` / :func:`dense_from_sparse`
   directly) turns one record into an array, with numpy alone, after checking its declared
   shape, dtype, byte count and, for sparse matrices, indices and values, against the
   caller's expected shape and size limits.

Every problem with a record is a :class:`RecordError` whose message names the field
(``what``) and the offending value; the caller adds the file name. Nothing here knows any
particular model's layout; only the wording of three messages ("MANO arrays hold plain
numbers", "MANO's is <shape>", "outside the MANO format") names its one user, MANO.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools

import numpy as np

__all__ = [
    "CorruptPickle",
    "RecordError",
    "RefusedPickle",
    "array_from_record",
    "check_finite",
    "dense_from_sparse",
    "load_records",
    "record_to_array",
]

MAX_NDIM = 4  # most dimensions an array record may declare
MAX_CHUMPY_DEPTH = 8  # most chumpy objects nested around one array

_NUMERIC_DTYPES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"]
)
_ORDERS = ("<", ">", "|", "=")
_DTYPE_WORDS = {"O": "Python objects", "c": "complex numbers", "U": "text", "S": "text",
                "a": "text", "V": "raw records", "M": "dates", "m": "time spans"}  # fmt: skip


class RefusedPickle(pickle.UnpicklingError):
    """The file names a class or function outside the allow-list, or misuses one."""


class CorruptPickle(Exception):
    """The file is not a readable pickle; the message is ``"<ExceptionName>: <detail>"``."""


class RecordError(Exception):
    """A record fails validation; the message names the field and the value."""


# ----------------------------------------------------------------------------------------
# Inert records: what the allowed names unpickle to. They only store their pickled state.


class _ChumpyStandIn:
    """Receives a chumpy object's pickled state; its array is the state's ``x``."""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _ArrayRecord:
    """A numpy array as the file describes it: ``state`` is ndarray's pickled state,
    ``(version, shape, dtype, fortran, raw)``. Nothing is allocated for it."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _DtypeRecord:
    """A numpy dtype as the file describes it (``np.dtype(name, align, copy)`` plus its
    pickled state), resolved only against :data:`_NUMERIC_DTYPES`."""

    def __init__(self, name=None, align=False, copy=False):
        self.name = name
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _SparseRecord:
    """A scipy sparse matrix as the file describes it: ``state`` is its attribute dict
    (``data``, ``indices``, ``indptr``, ``_shape``). scipy never sees it."""

    fmt = ""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _CscRecord(_SparseRecord):
    fmt = "csc"


class _CsrRecord(_SparseRecord):
    fmt = "csr"


_INERT = (_ChumpyStandIn, _ArrayRecord, _DtypeRecord, _CscRecord, _CsrRecord)


# ----------------------------------------------------------------------------------------
# The restricted unpickler and its allow-list.


def _reconstruct(subtype, shape=None, typecode=None) -> _ArrayRecord:
    """Stands in for ``numpy.core.multiarray._reconstruct``: an empty record."""
    if subtype is not _ArrayRecord:
        raise RefusedPickle(
            f"refusing to rebuild an array of type {getattr(subtype, '__name__', '?')}"
        )
    return _ArrayRecord()


def _scalar(dtype, raw=None) -> _ArrayRecord:
    """Stands in for ``numpy.core.multiarray.scalar``: a 0-d array record."""
    record = _ArrayRecord()
    record.state = (1, (), dtype, False, raw)
    return record


def _reconstructor(cls, base, state) -> object:
    """Stands in for ``copyreg._reconstructor`` (Python 2 and protocol 0/1 pickles)."""
    if cls not in _INERT or base is not object or state is not None:
        raise RefusedPickle("refusing an object reconstruction outside the MANO format")
    return object.__new__(cls)


def _encode(text, encoding="utf-8") -> bytes:
    """Stands in for ``_codecs.encode``, which pickles use to carry bytes as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"refusing to encode with {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """Stands in for ``bytes``, which protocol 2 pickles call with no argument for b""."""
    if args:
        raise RefusedPickle("refusing to build bytes from arguments")
    return b""


# (module, name) -> what to build instead. Nothing else may be named by the file
# (besides any ``chumpy*`` name, which becomes a :class:`_ChumpyStandIn`).
_ALLOWED = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _reconstruct
    _ALLOWED[(_mod, "scalar")] = _scalar
_ALLOWED.update({
    ("numpy", "ndarray"): _ArrayRecord,
    ("numpy", "dtype"): _DtypeRecord,
    # Python 2 pickles rebuild objects through copy_reg.
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("_codecs", "encode"): _encode,  # bytes in protocol <= 2 pickles
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
})  # fmt: skip
for _mod in ("scipy.sparse.csc", "scipy.sparse._csc"):
    _ALLOWED[(_mod, "csc_matrix")] = _CscRecord
    _ALLOWED[(_mod, "csc_array")] = _CscRecord
for _mod in ("scipy.sparse.csr", "scipy.sparse._csr"):
    _ALLOWED[(_mod, "csr_matrix")] = _CsrRecord
    _ALLOWED[(_mod, "csr_array")] = _CsrRecord


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("chumpy"):
            return _ChumpyStandIn
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise RefusedPickle(f"refusing to load {module}.{name} from a model file")


# What a malformed pickle stream can raise from the unpickler.
_STREAM_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                  IndexError, KeyError, OverflowError, RecursionError, MemoryError)  # fmt: skip


def load_records(raw: bytes) -> object:
    """Unpickle ``raw`` (a whole pickle file's bytes) into Python containers and inert records.

    Plain values (dicts, lists, tuples, numbers, strings) come back as themselves; numpy
    arrays, scipy CSC/CSR matrices and chumpy objects come back as records, to be turned
    into arrays by :func:`record_to_array`. Raises :class:`RefusedPickle` when the file
    names anything outside the allow-list, :class:`CorruptPickle` when it is not a
    readable pickle.
    """
    _check_memo_indices(raw)
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except RefusedPickle:
        raise
    except _STREAM_ERRORS as err:
        raise CorruptPickle(f"{type(err).__name__}: {err}") from err


_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def _check_memo_indices(raw: bytes) -> None:
    """Refuse memo slots no well-formed pickle of this size uses, before unpickling:
    CPython's unpickler sizes its memo table by the largest slot named, so a 9-byte file
    asking for slot 2.5e9 makes it zero-fill about 20 GB before any check of ours runs.
    A pickle of n bytes stores at most n objects, so every slot is below ``len(raw)``."""
    try:
        for opcode, arg, _pos in pickletools.genops(raw):
            if opcode.name in _MEMO_OPCODES and isinstance(arg, int) and arg > len(raw):
                raise RefusedPickle(f"memo slot {arg} in a pickle of {len(raw)} bytes")
    except RefusedPickle:
        raise
    except _STREAM_ERRORS as err:
        raise CorruptPickle(f"{type(err).__name__}: {err}") from err


# ----------------------------------------------------------------------------------------
# Validated reconstruction of dense arrays.


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve_dtype(record, what: str) -> np.dtype:
    """The numeric dtype a :class:`_DtypeRecord` names; refuses anything else."""
    if not isinstance(record, _DtypeRecord):
        raise RecordError(f"{what} has no valid dtype")
    name = record.name
    if isinstance(name, bytes):
        name = name.decode("latin1")
    if not isinstance(name, str):
        raise RecordError(f"{what} has no valid dtype")
    if name not in _NUMERIC_DTYPES:
        words = _DTYPE_WORDS.get(name[:1], "no plain numbers")
        raise RecordError(f"{what} has dtype {name!r} ({words}); MANO arrays hold plain numbers")
    order = "|"
    state = record.state
    if state is not None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, elsize,
        # alignment, flags[, metadata]); a plain numeric dtype has no subarray or fields.
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[1] in _ORDERS
                and state[2:5] == (None, None, None) and state[8:] in ((), (None,))):  # fmt: skip
            raise RecordError(f"{what} has a structured or malformed dtype")
        order = state[1]
    return np.dtype(name).newbyteorder(order if order in ("<", ">") else "=")


def _declared_shape(shape, what: str) -> tuple[int, ...]:
    if not (isinstance(shape, tuple) and len(shape) <= MAX_NDIM
            and all(_is_int(n) and n >= 0 for n in shape)):  # fmt: skip
        raise RecordError(f"{what} declares the malformed shape {shape!r}")
    return shape


def array_from_record(
    record: _ArrayRecord,
    what: str,
    expected_shape: tuple[int, ...] | None = None,
    *,
    max_bytes: int,
) -> np.ndarray:
    """Build the array an array record describes, with numpy alone.

    Checks, in this order: the declared shape (at most :data:`MAX_NDIM` non-negative
    ints), that the record holds numbers, the dtype (plain numeric only), the declared size
    (at most ``max_bytes`` bytes), the shape against ``expected_shape`` when given, and that
    the file carries exactly the bytes the shape needs. Returns a native-byte-order,
    C-ordered, owned array of the file's dtype and the declared shape. Raises
    :class:`RecordError` naming ``what``.
    """
    state = record.state
    if not (isinstance(state, tuple) and len(state) in (4, 5)):
        raise RecordError(f"{what} is a malformed array")
    shape, dtype_record, fortran, raw = state[-4:]
    shape = _declared_shape(shape, what)
    if isinstance(raw, list):  # how numpy pickles an object array
        raise RecordError(f"{what} holds Python objects instead of numbers")
    dtype = _resolve_dtype(dtype_record, what)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > max_bytes or math.prod(max(n, 1) for n in shape) > max_bytes:
        raise RecordError(
            f"{what} declares shape {shape} ({nbytes:,} bytes), beyond the "
            f"{max_bytes:,}-byte limit for one array"
        )
    if expected_shape is not None and shape != expected_shape:
        raise RecordError(f"{what} has shape {shape}, MANO's is {expected_shape}")
    if isinstance(raw, str):  # Python 2 byte strings, read back as latin-1 text
        try:
            raw = raw.encode("latin1")
        except UnicodeEncodeError:
            raw = None
    version_ok = len(state) == 4 or _is_int(state[0])
    if not (isinstance(raw, bytes) and isinstance(fortran, int) and version_ok):
        raise RecordError(f"{what} is a malformed array")
    if len(raw) != nbytes:
        raise RecordError(
            f"{what} declares shape {shape} of {dtype.name} ({nbytes:,} bytes) but the file "
            f"carries {len(raw):,} bytes for it"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    arr = flat.reshape(shape, order="F" if fortran else "C")
    return arr.astype(dtype.newbyteorder("="), order="C", copy=True)


def check_finite(arr: np.ndarray, what: str) -> None:
    """Raise :class:`RecordError` when ``arr`` (any shape) holds NaN or infinity."""
    bad = ~np.isfinite(arr)
    if bad.any():
        raise RecordError(f"{what} holds {int(bad.sum())} non-finite values (NaN or infinity)")


# ----------------------------------------------------------------------------------------
# Validated reconstruction of sparse matrices, densified with numpy.


def _sparse_part(state: dict, part: str, what: str, kinds: str, max_bytes: int) -> np.ndarray:
    """One of a sparse record's 1-d arrays (``indptr``, ``indices``, ``data``), of a dtype
    kind in ``kinds`` (``"iu"`` integers or ``"f"`` floats)."""
    record = state.get(part)
    if not isinstance(record, _ArrayRecord):
        raise RecordError(f"{what} is a sparse matrix without its {part} array")
    arr = array_from_record(record, f"{what} {part}", max_bytes=max_bytes)
    if arr.ndim != 1:
        raise RecordError(f"{what} {part} has shape {arr.shape}; it must be one-dimensional")
    if arr.dtype.kind not in kinds:
        kind = "integers" if kinds == "iu" else "floating-point values"
        raise RecordError(f"{what} {part} has dtype {arr.dtype.name}; it must hold {kind}")
    return arr


def _as_int(value, what: str, max_bytes: int):
    """A Python int for a pickled int or numpy integer scalar; anything else unchanged."""
    if isinstance(value, _ArrayRecord):
        arr = array_from_record(value, what, max_bytes=max_bytes)
        if arr.shape == () and arr.dtype.kind in "iu":
            return int(arr)
    return value


def _sparse_shape(
    state: dict, what: str, max_side: int, max_values: int, max_bytes: int
) -> tuple[int, int]:
    """The declared (rows, cols), within ``max_side`` each and ``max_values`` in all."""
    shape = state.get("_shape", state.get("shape"))
    if isinstance(shape, tuple):  # old scipy may have stored numpy integers
        shape = tuple(_as_int(n, f"{what} shape", max_bytes) for n in shape)
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(_is_int(n) and n >= 0
                                                                  for n in shape)):  # fmt: skip
        raise RecordError(f"{what} is a sparse matrix with the malformed shape {shape!r}")
    rows, cols = shape
    if max(rows, cols) > max_side or rows * cols > max_values:
        raise RecordError(
            f"{what} declares a {rows} x {cols} sparse matrix, beyond the limit of "
            f"{max_side} rows or columns and {max_values:,} values"
        )
    return rows, cols


def _check_sparse_structure(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, what: str, fmt: str,
    shape: tuple[int, int],
) -> None:  # fmt: skip
    """``indptr`` (major + 1,) runs from 0 to nnz without decreasing; ``indices`` and
    ``data`` (nnz,) agree in length, indices lie within the minor axis, data is finite."""
    rows, cols = shape
    csc = fmt == "csc"
    major, minor = (cols, rows) if csc else (rows, cols)
    minor_name = "row" if csc else "column"
    nnz = len(indices)
    if len(indptr) != major + 1:
        raise RecordError(f"{what} indptr has {len(indptr)} entries; a {rows} x {cols} "
                          f"{fmt} matrix needs {major + 1}")  # fmt: skip
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise RecordError(f"{what} indptr runs from {indptr[0]} to {indptr[-1]}; it must run "
                          f"from 0 to the {nnz} stored entries")  # fmt: skip
    drops = np.flatnonzero(indptr[1:] < indptr[:-1])
    if drops.size:
        i = int(drops[0])
        raise RecordError(f"{what} indptr decreases from {indptr[i]} to {indptr[i + 1]} at "
                          f"entry {i + 1}; it must never decrease")  # fmt: skip
    if len(data) != nnz:
        raise RecordError(f"{what} has {len(data)} data values for {nnz} indices")
    if nnz:
        bad = indices[(indices < 0) | (indices >= minor)]
        if bad.size:
            raise RecordError(f"{what} {minor_name} index {bad[0]} is out of range for its "
                              f"{minor} {minor_name}s")  # fmt: skip
        check_finite(data, f"{what} data")


def dense_from_sparse(
    record: _SparseRecord,
    what: str,
    expected_shape: tuple[int, ...],
    *,
    max_side: int,
    max_values: int,
    max_bytes: int,
) -> np.ndarray:
    """Validate a CSC/CSR record's structure with numpy and build its dense array.

    The declared (rows, cols) must be within ``max_side`` each and ``max_values`` in all,
    then equal ``expected_shape``. For CSC the major axis is columns and ``indices`` are
    row numbers; CSR the reverse. ``indptr`` (major + 1,) must start at 0, never decrease
    and end at nnz; ``indices`` (nnz,) must be integers within the minor axis and ``data``
    (nnz,) finite floats; each part at most ``max_bytes`` bytes. Duplicate entries are
    summed, as scipy does. Returns a float64 array of shape (rows, cols). Raises
    :class:`RecordError` naming ``what``.
    """
    state = record.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]  # (dict, slots) state of objects with __slots__
    if not isinstance(state, dict):
        raise RecordError(f"{what} is a malformed sparse matrix")
    rows, cols = _sparse_shape(state, what, max_side, max_values, max_bytes)
    if (rows, cols) != expected_shape:
        raise RecordError(f"{what} has shape {(rows, cols)}, MANO's is {expected_shape}")
    indptr = _sparse_part(state, "indptr", what, "iu", max_bytes)
    indices = _sparse_part(state, "indices", what, "iu", max_bytes)
    data = _sparse_part(state, "data", what, "f", max_bytes)
    _check_sparse_structure(indptr, indices, data, what, record.fmt, (rows, cols))
    csc = record.fmt == "csc"
    major = cols if csc else rows
    dense = np.zeros((rows, cols))
    lines = np.repeat(np.arange(major), np.diff(indptr.astype(np.int64)))
    at = (indices.astype(np.int64), lines) if csc else (lines, indices.astype(np.int64))
    np.add.at(dense, at, data.astype(np.float64))
    return dense


# ----------------------------------------------------------------------------------------
# Any record to an array.


def _unwrap_chumpy(value, what: str):
    """The value a chumpy object (possibly nested) wraps; other values unchanged."""
    for _ in range(MAX_CHUMPY_DEPTH):
        if not isinstance(value, _ChumpyStandIn):
            return value
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise RecordError(f"{what} is a chumpy object with no array data")
        value = state["x"]
    raise RecordError(f"{what} nests chumpy objects more than {MAX_CHUMPY_DEPTH} deep")


def record_to_array(
    value: object,
    what: str,
    expected_shape: tuple[int, ...],
    *,
    max_side: int,
    max_values: int,
    max_bytes: int,
) -> np.ndarray:
    """The array one value from :func:`load_records` holds, of shape ``expected_shape``.

    Unwraps chumpy objects (up to :data:`MAX_CHUMPY_DEPTH` deep), then builds an array
    record with :func:`array_from_record` (the file's dtype) or a sparse record with
    :func:`dense_from_sparse` (float64), under the given limits. Anything else, and any
    failed check, raises :class:`RecordError` naming ``what``.
    """
    value = _unwrap_chumpy(value, what)
    if isinstance(value, _SparseRecord):
        return dense_from_sparse(value, what, expected_shape, max_side=max_side,
                                 max_values=max_values, max_bytes=max_bytes)  # fmt: skip
    if isinstance(value, _ArrayRecord):
        return array_from_record(value, what, expected_shape, max_bytes=max_bytes)
    raise RecordError(f"{what} holds a {type(value).__name__}, not an array")
