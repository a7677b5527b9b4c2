"""Damaged or crafted MANO pkl files: every one is refused with an AssetError naming the
file and the field, before numpy or scipy builds anything from it, and nothing is cached.

The files are written here in MANO's format (MANO is licence-restricted: no real file is
used): plain numpy arrays and real ``scipy.sparse.csc_matrix`` objects whose internals are
tampered with before pickling, and arrays whose pickled header is forged.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from fake_chumpy import Ch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.core.multiarray import _reconstruct

from handmocap.errors import AssetError, HandmocapError
from handmocap.models import mano_files
from handmocap.models.mano_files import convert_mano_folder, parse_mano_pkl, read_mano_pkl

DAMAGED = "this file is damaged or not an official MANO file"


class _ForgedArray:
    """Pickles exactly as numpy pickles an ndarray, with a header (shape, dtype, bytes)
    that need not agree with itself."""

    def __init__(self, shape, dtype, raw, fortran=False):
        self.state = (1, tuple(shape), np.dtype(dtype), fortran, raw)

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, (0,), b"b"), self.state)


def _regressor(rng) -> scipy.sparse.csc_matrix:
    dense = np.abs(rng.normal(size=(16, 778))) * (rng.uniform(size=(16, 778)) < 0.02)
    return scipy.sparse.csc_matrix(dense)


def _valid(seed=0) -> dict:
    """A model in MANO's layout, plain arrays only (J_regressor a real csc_matrix)."""
    rng = np.random.default_rng(seed)
    return {
        "v_template": rng.normal(scale=0.05, size=(778, 3)),
        "f": rng.integers(0, 778, size=(1538, 3)).astype(np.uint32),
        "J_regressor": _regressor(rng),
        "weights": np.full((778, 16), 1 / 16),
        "kintree_table": np.array(
            [[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], list(range(16))]
        ),
        "shapedirs": rng.normal(scale=0.01, size=(778, 3, 10)),
        "posedirs": np.zeros((778, 3, 135)),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
        "bs_style": "lbs",
    }


def _tamper_sparse(**changes):
    """A mutation that edits the J_regressor csc_matrix's internals in place."""

    def mutate(model):
        m = model["J_regressor"]
        for name, value in changes.items():
            if callable(value):
                value(m)
            else:
                setattr(m, name, value)

    return mutate


def _set(key, value):
    def mutate(model):
        model[key] = value(model) if callable(value) else value

    return mutate


def _poke(key, index, value):
    def mutate(model):
        model[key] = np.array(model[key])
        model[key][index] = value

    return mutate


def _set_item(array_name, index, value):
    def edit(m):
        getattr(m, array_name)[index] = value

    return edit


def _non_monotone(m):
    m.indptr[5], m.indptr[6] = m.indptr[6] + 1, m.indptr[5]


def _bare_csc(model):
    """A csc_matrix assembled attribute by attribute, never checked by scipy."""
    m = object.__new__(scipy.sparse.csc_matrix)
    m._shape = (16, 778)
    m.maxprint = 50
    m.data = np.ones(3)
    m.indices = np.array([0, 5, -7], dtype=np.int32)
    m.indptr = np.concatenate([[0, 3], np.full(777, 3)]).astype(np.int32)
    return m


# (id, mutation of a valid model, exact fragment of the message after the path)
BAD_CASES = [
    ("index-huge", _tamper_sparse(i=_set_item("indices", 0, 10**6)),
     "J_regressor row index 1000000 is out of range for its 16 rows"),
    ("index-past-end", _tamper_sparse(i=_set_item("indices", 3, 16)),
     "J_regressor row index 16 is out of range for its 16 rows"),
    ("index-negative", _tamper_sparse(i=_set_item("indices", 2, -1)),
     "J_regressor row index -1 is out of range for its 16 rows"),
    ("index-negative-bare", _set("J_regressor", _bare_csc),
     "J_regressor row index -7 is out of range for its 16 rows"),
    ("indptr-non-monotone", _tamper_sparse(i=_non_monotone),
     "J_regressor indptr decreases from"),
    ("indptr-short", _tamper_sparse(i=lambda m: setattr(m, "indptr", m.indptr[:-1])),
     "J_regressor indptr has 778 entries; a 16 x 778 csc matrix needs 779"),
    ("indptr-wrong-end", _tamper_sparse(i=_set_item("indptr", -1, 10**5)),
     "J_regressor indptr runs from 0 to 100000; it must run from 0 to the"),
    ("indptr-wrong-start", _tamper_sparse(i=_set_item("indptr", 0, 1)),
     "J_regressor indptr runs from 1 to"),
    ("data-count", _tamper_sparse(i=lambda m: setattr(m, "data", m.data[:-1])),
     "data values for"),
    ("sparse-huge-shape", _tamper_sparse(_shape=(10**6, 10**6)),
     "J_regressor declares a 1000000 x 1000000 sparse matrix, beyond the limit"),
    ("sparse-wrong-V", _tamper_sparse(_shape=(16, 779)),
     "J_regressor has shape (16, 779), MANO's is (16, 778)"),
    ("sparse-indices-float", _tamper_sparse(i=lambda m: setattr(m, "indices",
                                                                m.indices.astype(float))),
     "J_regressor indices has dtype float64; it must hold integers"),
    ("sparse-data-complex", _tamper_sparse(i=lambda m: setattr(m, "data",
                                                               m.data.astype(complex))),
     "J_regressor data has dtype 'c16' (complex numbers)"),
    ("sparse-data-nan", _tamper_sparse(i=_set_item("data", 1, np.nan)),
     "J_regressor data holds 1 non-finite values (NaN or infinity)"),
    ("dense-forged-huge", _set("posedirs", _ForgedArray((10**11,), "f8", b"\0" * 80)),
     "posedirs declares shape (100000000000,) (800,000,000,000 bytes), beyond the"),
    ("dense-forged-3d-huge", _set("v_template", _ForgedArray((10**4, 10**4, 10**4), "f8",
                                                             b"\0" * 24)),
     "v_template declares shape (10000, 10000, 10000)"),
    ("dense-forged-short", _set("v_template", _ForgedArray((778, 3), "f8", b"\0" * 80)),
     "v_template declares shape (778, 3) of float64 (18,672 bytes) but the file carries "
     "80 bytes for it"),
    ("dense-forged-long", _set("weights", _ForgedArray((778, 16), "f8", b"\0" * 99_600)),
     "weights declares shape (778, 16) of float64 (99,584 bytes) but the file carries "
     "99,600 bytes for it"),
    ("dense-forged-negative-shape", _set("hands_mean", _ForgedArray((-45,), "f8", b"")),
     "hands_mean declares the malformed shape (-45,)"),
    ("dense-object", _set("v_template", lambda m: m["v_template"].astype(object)),
     "v_template holds Python objects instead of numbers"),
    ("dense-complex", _set("v_template", lambda m: m["v_template"].astype(complex)),
     "v_template has dtype 'c16' (complex numbers); MANO arrays hold plain numbers"),
    ("dense-text", _set("hands_mean", np.full(45, "0.0")),
     "hands_mean has dtype 'U3' (text); MANO arrays hold plain numbers"),
    ("dense-bytes", _set("hands_mean", np.full(45, b"0")),
     "hands_mean has dtype 'S1' (text)"),
    ("dense-structured", _set("hands_mean", np.zeros(45, dtype=[("a", "f8")])),
     "hands_mean has dtype 'V8' (raw records)"),
    ("dense-int-for-float", _set("weights", np.ones((778, 16), dtype=np.int64)),
     "weights has dtype int64; it must hold floating-point values"),
    ("faces-float", _set("f", lambda m: m["f"].astype(np.float64)),
     "f has dtype float64; it must hold integers"),
    ("nan", _poke("v_template", (5, 1), np.nan),
     "v_template holds 1 non-finite values (NaN or infinity)"),
    ("inf", _poke("posedirs", (7, 2, 100), -np.inf),
     "posedirs holds 1 non-finite values (NaN or infinity)"),
    ("face-past-end", _poke("f", (10, 2), 778),
     "f (the faces) refers to vertex 778, out of range for 778 vertices"),
    ("face-huge", _poke("f", (0, 0), 4294967295),
     "f (the faces) refers to vertex 4294967295, out of range for 778 vertices"),
    ("face-negative", _set("f", lambda m: np.where(m["f"] == m["f"][3, 1], -2,
                                                   m["f"]).astype(np.int64)),
     "f (the faces) refers to vertex -2, out of range for 778 vertices"),
    ("kintree-parent", _poke("kintree_table", (0, 5), 9),
     "kintree_table gives joint 5 the parent 9; a parent must be an earlier joint (0 to 4)"),
    ("mismatched-V-weights", _set("weights", np.full((779, 16), 1 / 16)),
     "weights has shape (779, 16), MANO's is (778, 16)"),
    ("mismatched-V-shapedirs", _set("shapedirs", np.zeros((777, 3, 10))),
     "shapedirs has shape (777, 3, 10), MANO's is (778, 3, 10)"),
    ("not-an-array", _set("weights", [[0.0] * 16] * 778),
     "weights holds a list, not an array"),
]  # fmt: skip


def _pkl(model: dict) -> bytes:
    return pickle.dumps(model, protocol=2)


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _mano_folder(tmp_path, monkeypatch, right: bytes, left: bytes):
    """(cache, folder): an empty model cache in use and a MANO folder holding ``right`` and
    ``left`` as MANO_RIGHT.pkl / MANO_LEFT.pkl."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HANDMOCAP_CACHE", str(cache))
    folder = tmp_path / "mano"
    folder.mkdir()
    (folder / "MANO_RIGHT.pkl").write_bytes(right)
    (folder / "MANO_LEFT.pkl").write_bytes(left)
    return cache, folder


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])  # fmt: skip
def test_bad_file_is_refused_and_nothing_is_cached(tmp_path, monkeypatch, mutate, message):
    bad = _valid(0)
    mutate(bad)
    cache, folder = _mano_folder(tmp_path, monkeypatch, _pkl(bad), _pkl(_valid(1)))
    with pytest.raises(AssetError) as caught:
        convert_mano_folder(folder)
    text = str(caught.value)
    assert text.startswith(f"{folder / 'MANO_RIGHT.pkl'}: ")
    assert message in text
    assert text.endswith(DAMAGED)
    assert isinstance(caught.value, HandmocapError)
    assert _files(cache) == []


def test_chumpy_wrapped_field_is_checked_too(tmp_path, chumpy_module):
    model = _valid()
    shapedirs = model["shapedirs"].copy()
    shapedirs[0, 0, 0] = np.inf
    model["shapedirs"] = Ch(shapedirs)
    path = tmp_path / "MANO_LEFT.pkl"
    path.write_bytes(_pkl(model))
    with pytest.raises(AssetError, match=r"MANO_LEFT\.pkl: shapedirs holds 1 non-finite"):
        read_mano_pkl(path)
    model["shapedirs"] = Ch(_ForgedArray((778, 3, 10), "f8", b"\0" * 8))
    path.write_bytes(_pkl(model))
    with pytest.raises(AssetError, match=r"shapedirs declares shape \(778, 3, 10\) of float64"):
        read_mano_pkl(path)


def test_valid_file_reads_exactly(tmp_path):
    model = _valid()
    out = parse_mano_pkl(_pkl(model), tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(out["J_regressor"], model["J_regressor"].toarray())
    np.testing.assert_array_equal(out["f"], model["f"].astype(np.int64))
    assert out["kintree_table"][0, 0] == 4294967295
    assert {k: v.dtype for k, v in out.items()} == {
        k: np.dtype(np.int64 if k in ("f", "kintree_table") else np.float64) for k in out
    }


def test_fortran_big_endian_and_csr_arrays_read_as_numpy_would(tmp_path):
    model = _valid()
    model["posedirs"] = np.asfortranarray(np.arange(778 * 3 * 135.0).reshape(778, 3, 135))
    model["v_template"] = model["v_template"].astype(">f8")
    model["J_regressor"] = scipy.sparse.csr_matrix(model["J_regressor"])
    out = parse_mano_pkl(_pkl(model), tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(out["posedirs"], model["posedirs"])
    np.testing.assert_array_equal(out["v_template"], model["v_template"])
    np.testing.assert_array_equal(out["J_regressor"], model["J_regressor"].toarray())
    assert out["v_template"].dtype == np.dtype("=f8")


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_python2_style_pickles_are_read_and_checked_alike(tmp_path, protocol):
    """Python 2 files carry array bytes as text (latin-1) and rebuild objects through
    copy_reg: the same records and the same checks apply."""
    model = _valid()
    v = model["v_template"]
    model["v_template"] = _ForgedArray(v.shape, "f8", v.tobytes().decode("latin1"))
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(model, protocol=protocol))
    np.testing.assert_array_equal(read_mano_pkl(path)["v_template"], v)
    model["J_regressor"].indices[0] = 90000
    path.write_bytes(pickle.dumps(model, protocol=protocol))
    with pytest.raises(AssetError, match="J_regressor row index 90000 is out of range"):
        read_mano_pkl(path)


def test_a_bad_file_keeps_the_earlier_valid_cache(tmp_path, monkeypatch):
    cache, folder = _mano_folder(tmp_path, monkeypatch, _pkl(_valid(0)), _pkl(_valid(1)))
    good = convert_mano_folder(folder)
    before = {p: p.read_bytes() for p in _files(cache)}
    assert sorted(p.name for p in before) == ["MANO_LEFT.npz", "MANO_RIGHT.npz"]
    bad = _valid(0)
    bad["J_regressor"].indices[0] = 10**6
    (folder / "MANO_RIGHT.pkl").write_bytes(_pkl(bad))
    with pytest.raises(AssetError, match="J_regressor row index 1000000"):
        convert_mano_folder(folder)
    assert {p: p.read_bytes() for p in _files(cache)} == before
    (folder / "MANO_RIGHT.pkl").write_bytes(_pkl(_valid(0)))
    assert convert_mano_folder(folder) == good


def test_a_cache_written_before_validation_is_not_trusted(tmp_path, monkeypatch):
    """The unvalidated converter cached models of crafted files under ``mano-<digest>``;
    those folders are never served (a crafted file is re-read, and refused)."""
    import hashlib

    bad = _valid(0)
    bad["J_regressor"].indices[0] = 17
    raw = {"RIGHT": _pkl(bad), "LEFT": _pkl(_valid(1))}
    cache, folder = _mano_folder(tmp_path, monkeypatch, raw["RIGHT"], raw["LEFT"])
    digest = hashlib.sha256(raw["RIGHT"] + raw["LEFT"]).hexdigest()[:12]
    old = cache / "models" / f"mano-{digest}"
    old.mkdir(parents=True)
    for side in raw:
        np.savez(old / f"MANO_{side}.npz", v_template=np.zeros((778, 3)))
    with pytest.raises(AssetError, match="J_regressor row index 17 is out of range"):
        convert_mano_folder(folder)


def test_an_interrupted_write_leaves_no_half_cache(tmp_path, monkeypatch):
    cache, folder = _mano_folder(tmp_path, monkeypatch, _pkl(_valid(0)), _pkl(_valid(1)))
    real_savez = np.savez
    calls = []

    def failing_savez(fh, **arrays):
        calls.append(1)
        if len(calls) == 2:
            fh.write(b"PK half")
            raise OSError(28, "No space left on device")
        real_savez(fh, **arrays)

    monkeypatch.setattr(mano_files.np, "savez", failing_savez)
    with pytest.raises(HandmocapError, match="No space left on device"):
        convert_mano_folder(folder)
    assert [p.name for p in _files(cache)] == ["MANO_RIGHT.npz"]  # no LEFT, no temp file
    monkeypatch.setattr(mano_files.np, "savez", real_savez)
    files = convert_mano_folder(folder)
    assert sorted(p.name for p in _files(cache)) == ["MANO_LEFT.npz", "MANO_RIGHT.npz"]
    with np.load(files.folder / "MANO_LEFT.npz", allow_pickle=False) as left:
        assert left["J_regressor"].shape == (16, 778)


def test_refused_names_and_oversized_files(tmp_path, monkeypatch):
    path = tmp_path / "MANO_RIGHT.pkl"
    model = _valid()
    model["v_template"] = np.ma.masked_array(model["v_template"])
    path.write_bytes(_pkl(model))
    with pytest.raises(AssetError, match=r"refusing to load numpy\.ma\.core"):
        read_mano_pkl(path)
    monkeypatch.setattr(mano_files, "MAX_FILE_BYTES", 1000)
    path.write_bytes(_pkl(_valid()))
    with pytest.raises(AssetError, match="is larger than 1,000 bytes"):
        read_mano_pkl(path)
    # A memo slot far beyond the file's size makes CPython's unpickler zero-fill a table of
    # that many entries (2.5e9: ~20 GB) before anything else runs: refused from the opcodes.
    for memo in (b"\xff\xff\xff\x7f", b"\x00\xf9\x02\x95"):  # slots 2**31 - 1 and 2.5e9
        started = time.perf_counter()
        with pytest.raises(AssetError, match=r"not a MANO model file: memo slot \d+ in a pickle"):
            parse_mano_pkl(b"\x80\x02Nr" + memo + b".", path)
        assert time.perf_counter() - started < 1.0


_SURVIVES = textwrap.dedent(
    """
    import sys
    from handmocap.errors import AssetError
    from handmocap.models.mano_files import read_mano_pkl
    for path in sys.argv[1:]:
        try:
            read_mano_pkl(path)
            print("ACCEPTED", path)
        except AssetError as err:
            print("REFUSED", err)
    """
)


def test_crafted_sparse_files_never_crash_the_process(tmp_path):
    """With the scipy conversion these files crashed Python with SIGSEGV (index 10**6,
    90000) or read memory outside the array (index 17): run them in a child process."""
    paths = []
    for index in (10**6, 90000, 17, 2**31 - 1, -(2**31)):
        model = _valid()
        model["J_regressor"].indices[4] = index
        paths.append(tmp_path / f"MANO_RIGHT_{index}.pkl")
        paths[-1].write_bytes(_pkl(model))
    done = subprocess.run([sys.executable, "-c", _SURVIVES, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, index in zip(lines, (10**6, 90000, 17, 2**31 - 1, -(2**31)), strict=True):
        assert line.startswith("REFUSED ")
        assert f"J_regressor row index {index} is out of range for its 16 rows" in line


_BASE = _valid(3)


@settings(max_examples=60, deadline=None)
@given(
    indices=st.lists(st.integers(-3, 20), min_size=0, max_size=12),
    cuts=st.lists(st.integers(-2, 14), min_size=779, max_size=779),
    sort_cuts=st.booleans(),
)
def test_any_sparse_structure_is_read_exactly_or_refused(indices, cuts, sort_cuts):
    """Random indices/indptr: either valid, and then read exactly as scipy would, or
    refused with J_regressor named; never another exception."""
    nnz = len(indices)
    indptr = np.array(sorted(cuts) if sort_cuts else cuts, dtype=np.int32)
    if sort_cuts:
        indptr = np.clip(indptr, 0, nnz)
        indptr[0], indptr[-1] = 0, nnz
    m = object.__new__(scipy.sparse.csc_matrix)
    m._shape, m.maxprint = (16, 778), 50
    m.data = np.arange(1.0, nnz + 1)
    m.indices = np.array(indices, dtype=np.int32)
    m.indptr = indptr
    valid = (
        indptr[0] == 0 and indptr[-1] == nnz and bool(np.all(np.diff(indptr) >= 0))
        and all(0 <= i < 16 for i in indices)
    )  # fmt: skip
    model = dict(_BASE, J_regressor=m)
    if valid:
        out = parse_mano_pkl(_pkl(model), Path("MANO_RIGHT.pkl"))
        expected = scipy.sparse.csc_matrix((m.data, m.indices, m.indptr), shape=(16, 778))
        np.testing.assert_array_equal(out["J_regressor"], expected.toarray())
    else:
        with pytest.raises(AssetError, match=r"^MANO_RIGHT\.pkl: J_regressor .*" + DAMAGED):
            parse_mano_pkl(_pkl(model), Path("MANO_RIGHT.pkl"))
