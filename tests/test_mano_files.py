"""Real MANO support, tested on pkl files in MANO's format that this test writes itself
(MANO is licence-restricted: no real file is ever used here)."""

import pickle

import numpy as np
import pytest
import scipy.sparse
from fake_chumpy import Ch

from handmocap.errors import AssetError
from handmocap.models.hand_model import HandModel
from handmocap.models.mano_files import convert_mano_folder, fix_left_shapedirs, read_mano_pkl


def _mano_like(rng, left=False):
    v = rng.normal(scale=0.05, size=(778, 3))
    shapedirs = rng.normal(scale=0.01, size=(778, 3, 10))
    return {
        "v_template": v,
        "f": rng.integers(0, 778, size=(1538, 3)).astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(
            np.abs(rng.normal(size=(16, 778))) * (rng.uniform(size=(16, 778)) < 0.02)
        ),
        "weights": np.full((778, 16), 1 / 16),
        "kintree_table": np.array(
            [[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], list(range(16))]
        ),
        "shapedirs": Ch(shapedirs),
        "posedirs": Ch(np.zeros((778, 3, 135))),
        "hands_components": np.eye(45),
        "hands_mean": np.zeros(45),
        "bs_style": "lbs",
    }


def _write(path, data, protocol):
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [1, 2])  # 1 writes copy_reg reconstructors like Python 2
def test_reads_chumpy_and_sparse_into_plain_arrays(tmp_path, chumpy_module, protocol):
    rng = np.random.default_rng(0)
    data = _mano_like(rng)
    out = read_mano_pkl(_write(tmp_path / "MANO_RIGHT.pkl", data, protocol))
    np.testing.assert_array_equal(out["shapedirs"], data["shapedirs"].x)
    np.testing.assert_array_equal(out["J_regressor"], data["J_regressor"].toarray())
    assert all(isinstance(v, np.ndarray) for v in out.values())


def test_converts_once_and_loads_through_smplx(tmp_path, chumpy_module, monkeypatch):
    monkeypatch.setenv("HANDMOCAP_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    right = _mano_like(rng)
    left = _mano_like(rng)
    left["shapedirs"] = Ch(right["shapedirs"].x.copy())  # the known unmirrored-x defect
    folder = tmp_path / "mano"
    folder.mkdir()
    _write(folder / "MANO_RIGHT.pkl", right, 2)
    _write(folder / "MANO_LEFT.pkl", left, 2)
    files = convert_mano_folder(folder)
    with np.load(files.folder / "MANO_LEFT.npz", allow_pickle=False) as converted:
        np.testing.assert_allclose(converted["shapedirs"][:, 0], -right["shapedirs"].x[:, 0])
        np.testing.assert_allclose(converted["shapedirs"][:, 1:], right["shapedirs"].x[:, 1:])
    model = HandModel(files, "left")  # smplx accepts it
    assert model.faces.shape == (1538, 3)
    assert convert_mano_folder(folder).folder == files.folder  # cached


def test_the_left_fix_leaves_a_correct_file_alone():
    rng = np.random.default_rng(2)
    right = {"shapedirs": rng.normal(size=(778, 3, 10))}
    left = {"shapedirs": right["shapedirs"].copy()}
    left["shapedirs"][:, 0] *= -1
    before = left["shapedirs"].copy()
    assert not fix_left_shapedirs(left, right)
    np.testing.assert_array_equal(left["shapedirs"], before)


def test_never_executes_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = _write(tmp_path / "MANO_RIGHT.pkl", {"v_template": Evil()}, 2)
    with pytest.raises(AssetError, match="refusing to load"):
        read_mano_pkl(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"definitely not a pickle", "corrupt or not a MANO pickle"),
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({"v_template": np.zeros((10, 3))}), "v_template has shape"),
        (pickle.dumps({"f": np.zeros((1538, 3))}), "has no 'v_template'"),
    ],
)
def test_foreign_or_wrong_files(tmp_path, content, message):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(content)
    with pytest.raises(AssetError, match=message):
        read_mano_pkl(path)


def test_folder_without_the_files(tmp_path):
    with pytest.raises(AssetError, match=r"lacks MANO_RIGHT\.pkl, MANO_LEFT\.pkl"):
        convert_mano_folder(tmp_path)
    with pytest.raises(AssetError, match="does not exist"):
        convert_mano_folder(tmp_path / "nowhere")
