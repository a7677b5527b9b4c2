"""The open hand model in MANO's layout: loads through smplx unchanged, and posing it with
the renderer's ground-truth MANO parameters reproduces the rendered keypoints."""

import numpy as np
import pytest
import torch

from bench.synth.clip_spec import PRESETS
from bench.synth.render_clip import plan_motion
from handmocap.models.hand_model import HandModel, ensure_open_hand_model
from handmocap.models.open_hand_model import MANO_TIP_VERTEX_IDS, SHAPE_MODES
from handmocap.retarget.rotations import MIRROR_X


@pytest.fixture(scope="module")
def files():
    return ensure_open_hand_model()


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def test_layout_matches_mano(files):
    with np.load(files.folder / "MANO_RIGHT.npz", allow_pickle=False) as m:  # no pickled objects
        v = m["v_template"].shape[0]
        assert m["f"].shape[1] == 3 and m["f"].max() < v
        assert m["J_regressor"].shape == (16, v) and m["weights"].shape == (v, 16)
        assert m["shapedirs"].shape == (v, 3, 10) and m["posedirs"].shape == (v, 3, 135)
        assert m["kintree_table"].shape == (2, 16) and m["hands_components"].shape == (45, 45)
        np.testing.assert_allclose(m["weights"].sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(m["J_regressor"].sum(axis=1), 1.0, atol=1e-9)
        assert (m["J_regressor"] >= 0).all()
        assert tuple(m["tip_vertex_ids"]) == MANO_TIP_VERTEX_IDS
    assert len(SHAPE_MODES) == 10


@pytest.mark.parametrize("preset", ["demo", "two_crossing"])
def test_truth_parameters_reproduce_the_rendered_keypoints(files, hands, preset):
    """Kinematics agree to a micrometre: the renderer's mano_pose is this model's pose."""
    spec = PRESETS[preset]
    _, motions = plan_motion(spec, {s: hands[s] for s in spec.handedness})
    for m in motions:
        if m.hand.side == "left":
            continue  # the left model mirrors the right; the left asset differs by 2-7 mm
        model = HandModel(files, m.hand.side)
        pose = m.mano_pose()
        betas = torch.zeros(len(pose), 10)
        transl = _t(m.root_position) - model.rest_wrist(betas)
        kp = model.keypoints(_t(pose[:, 0]), _t(pose[:, 1:].reshape(-1, 45)), betas, transl)
        err_mm = 1000 * np.abs(kp.detach().numpy() - m.keypoints_cam).max()
        assert err_mm < 0.05, f"{preset}: {err_mm:.3f} mm"


def test_left_model_is_the_mirror_image(files):
    right, left = HandModel(files, "right"), HandModel(files, "left")
    rng = np.random.default_rng(0)
    pose = _t(rng.normal(scale=0.3, size=(4, 45)))
    orient = _t(rng.normal(scale=0.5, size=(4, 3)))
    betas = _t(rng.normal(size=(4, 10)))
    zero = torch.zeros(4, 3)
    kp_r = right.keypoints(orient, pose, betas, zero).detach().numpy()
    # Mirroring x flips the y and z components of every axis-angle vector.
    flip = torch.tensor([1.0, -1.0, -1.0])
    kp_l = left.keypoints(
        orient * flip, (pose.reshape(4, 15, 3) * flip).reshape(4, 45), betas, zero
    )
    np.testing.assert_allclose(kp_l.detach().numpy(), kp_r @ MIRROR_X, atol=1e-6)


def test_shape_modes_change_what_they_name(files):
    model = HandModel(files, "right")
    zero3, zero45 = torch.zeros(1, 3), torch.zeros(1, 45)

    def lengths(betas):
        kp = model.keypoints(zero3, zero45, betas, zero3)[0].detach().numpy()
        return {
            "hand": np.linalg.norm(kp[12] - kp[0]),  # wrist -> middle tip
            "index": np.linalg.norm(kp[8] - kp[5]),
            "thumb": np.linalg.norm(kp[4] - kp[1]),
        }

    base = lengths(torch.zeros(1, 10))
    for mode, key, grows in ((0, "hand", 0.055), (3, "index", 0.06), (7, "thumb", 0.06)):
        b = torch.zeros(1, 10)
        b[0, mode] = 1.0
        ratio = lengths(b)[key] / base[key] - 1.0
        assert ratio == pytest.approx(grows, rel=0.15), (mode, key, ratio)
    b = torch.zeros(1, 10)
    b[0, 3] = 1.0  # index length leaves the thumb alone
    assert lengths(b)["thumb"] == pytest.approx(base["thumb"], abs=1e-6)
