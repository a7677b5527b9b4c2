"""The Rig subpanel's memory of rig detection (blender_addon/rig_status.py, no bpy needed):
Blender redraws a panel many times a second, so detection runs once per armature and again
only when what it reads changes."""

import importlib.util
import sys
from pathlib import Path

import pytest

from handmocap.retarget.armature import RigError

ROOT = Path(__file__).resolve().parents[1]


def _rig_status_module():
    # rig_status.py is plain Python; load it without the add-on package (whose __init__
    # needs bpy)
    spec = importlib.util.spec_from_file_location(
        "hm_rig_status", ROOT / "blender_addon" / "rig_status.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rs = _rig_status_module()
BONES = ["hand.L", "f_index.01.L", "f_index.02.L", "thumb.01.L"]


class Detector:
    """A stand-in for the panel's detection: counts its calls, returns ``report`` or raises."""

    def __init__(self, report: str | None = "Rigify: left hand\n  16 of 16 bones\n"):
        self.calls = 0
        self.report = report

    def __call__(self) -> str:
        self.calls += 1
        if self.report is None:
            raise RigError("no hand bones found. Name them like hand.L or map them by hand")
        return self.report


@pytest.fixture
def detect():
    rs._CACHE.clear()
    return Detector()


def test_a_second_draw_does_not_detect_again(detect):
    first = rs.rig_status(rs.rig_fingerprint("Rig", "RigData", BONES, "detected AUTO"), detect)
    # a later redraw builds the key afresh from equal inputs
    again = rs.rig_status(rs.rig_fingerprint("Rig", "RigData", list(BONES), "detected AUTO"),
                          detect)  # fmt: skip
    assert detect.calls == 1
    assert first == again == rs.RigStatus(("Rigify: left hand", "16 of 16 bones"), error=False)


@pytest.mark.parametrize(
    "changed",
    [
        {"bones": [*BONES[:-1], "thumb.01.R"]},  # a bone renamed
        {"bones": BONES[:-1]},  # a bone deleted
        {"bones": [BONES[1], BONES[0], *BONES[2:]]},  # same names, another order
        {"data": "RigData.L"},  # the side is guessed from the data's name too
        {"mapping": "detected LEFT"},  # the hand chosen for a one-hand rig
        {"mapping": 'custom [["left", "wrist", "hand.L"]]'},  # the custom mapping
    ],
)
def test_what_detection_reads_changing_detects_again(detect, changed):
    inputs = {"bones": BONES, "data": "RigData", "mapping": "detected AUTO"}
    rs.rig_status(rs.rig_fingerprint("Rig", inputs["data"], inputs["bones"], inputs["mapping"]),
                  detect)  # fmt: skip
    inputs |= changed
    key = rs.rig_fingerprint("Rig", inputs["data"], inputs["bones"], inputs["mapping"])
    rs.rig_status(key, detect)
    rs.rig_status(key, detect)
    assert detect.calls == 2


def test_each_armature_keeps_its_own_status(detect):
    rig = rs.rig_fingerprint("Rig", "RigData", BONES, "detected AUTO")
    other = rs.rig_fingerprint("Other", "OtherData", ["Hand_R"], "detected AUTO")
    for key in (rig, other, rig, other):
        rs.rig_status(key, detect)
    assert detect.calls == 2


def test_a_failed_detection_is_remembered_as_alert_lines(detect):
    detect.report = None
    key = rs.rig_fingerprint("Plain", "PlainData", ["Bone", "Bone.001"], "detected AUTO")
    status = rs.rig_status(key, detect)
    assert rs.rig_status(key, detect) == status and detect.calls == 1
    assert status == rs.RigStatus(
        ("no hand bones found", "Name them like hand.L or map them by hand"), error=True
    )
