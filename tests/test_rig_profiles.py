"""Bone-name parsing on real naming schemes, rig detection, partial rigs and mapping files."""

import pytest

from handmocap.retarget.armature import RigError
from handmocap.retarget.bone_names import ROLES, parse_bone_name
from handmocap.retarget.rig_profiles import (
    BUILTIN_PROFILES,
    PROFILES_BY_ID,
    detect_rig,
    mapping_from_json,
    mapping_to_json,
)
from handmocap.sides import BOTH


@pytest.mark.parametrize(
    ("name", "side", "role"),
    [
        ("f_index.01.R", "right", "index.proximal"),  # Rigify control
        ("DEF-thumb.02.L", "left", "thumb.proximal"),  # Rigify deform
        ("ORG-f_pinky.03.R", "right", "pinky.distal"),
        ("palm.03.L", "left", "ring.metacarpal"),  # Rigify metacarpals: palm.01..04
        ("hand_fk.R", "right", "hand"),
        ("DEF-forearm.R.001", "right", "forearm"),
        ("mixamorig:RightHandIndex1", "right", "index.proximal"),  # Mixamo
        ("mixamorig1:LeftHandThumb1", "left", "thumb.metacarpal"),
        ("LeftHandMiddle3", "left", "middle.distal"),  # Mixamo without its namespace
        ("RightForeArm", "right", "forearm"),
        ("index_metacarpal_l", "left", "index.metacarpal"),  # Unreal 5
        ("thumb_01_r", "right", "thumb.metacarpal"),  # Unreal: thumb_01 is the metacarpal
        ("lowerarm_l", "left", "forearm"),
        ("CC_Base_R_Pinky3", "right", "pinky.distal"),  # Character Creator
        ("rIndex2", "right", "index.intermediate"),  # Daz
        ("J_Bip_L_Ring1", "left", "ring.proximal"),  # VRoid
        ("rightThumbProximal", "right", "thumb.proximal"),  # VRM
        ("pinky-finger-phalanx-distal", None, "pinky.distal"),  # WebXR (no side)
        ("Index_Middle_R", "right", "index.intermediate"),  # 'middle' as a segment
    ],
)
def test_names_from_real_rigs(name, side, role):
    parsed = parse_bone_name(name)
    assert (parsed.side, parsed.role) == (side, role)


@pytest.mark.parametrize(
    "name",
    ["f_index.01_master.R", "MCH-hand_fk.R", "hand_ik.R", "lowerarm_twist_01_l", "RightHandIndex4",
     "thumb-tip", "hand_tweak.R", "lCarpal1", "Hips"],
)  # fmt: skip
def test_helpers_tips_and_others_have_no_role(name):
    assert parse_bone_name(name).role is None


def _names(profile_id, sides=BOTH, drop=()):
    p = PROFILES_BY_ID[profile_id]
    return ["root"] + [
        p.bone_name(r, s) for s in sides for r in p.bones if r not in drop
    ]  # fmt: skip


@pytest.mark.parametrize("profile", [p.id for p in BUILTIN_PROFILES if not p.single_hand])
def test_every_profile_is_detected_from_its_own_names(profile):
    m = detect_rig(_names(profile))
    assert m.profile_id == profile and set(m.hands) == set(BOTH)
    assert all(len(h.driven_roles) == 15 and not h.missing for h in m.hands.values())


def test_an_unknown_scheme_is_mapped_from_its_names():
    names = ["Spine"] + [
        f"{f}_{seg}_{s}" for s in ("L", "R") for f in ("Thumb", "Index", "Middle", "Ring", "Pinky")
        for seg in ("Prox", "Inter", "Dist")
    ] + ["Hand_L", "Hand_R"]  # fmt: skip
    m = detect_rig(names)
    assert m.profile_id == "names"
    right = m.hands["right"]
    assert right.bones["hand"] == "Hand_R" and right.bones["index.intermediate"] == "Index_Inter_R"
    # a thumb named proximal/intermediate/distal calls its metacarpal 'proximal'
    assert right.bones["thumb.metacarpal"] == "Thumb_Prox_R"
    assert right.bones["thumb.proximal"] == "Thumb_Inter_R"
    assert not right.missing


def test_one_hand_rig_needs_a_side():
    names = _names("webxr", sides=("right",))
    assert detect_rig(names, side="left").hands.keys() == {"left"}
    with pytest.raises(RigError, match=r"holds one hand .* choose Left or Right"):
        detect_rig(names, "hand_rig")


def test_no_hand_bones_says_what_was_looked_for():
    with pytest.raises(RigError) as err:
        detect_rig(["Hips", "Spine", "Head", "LeftArm"], "Robot")
    text = str(err.value)
    assert "no hand bones found in armature 'Robot' (4 bones)" in text
    assert "mixamorig" not in text  # names are shown without namespaces
    for example in ("f_index.01.R", "RightHandIndex1", "index_01_r", "mapping editor"):
        assert example in text


def test_partial_rig_maps_what_exists():
    m = detect_rig(_names("unreal", drop=("ring.distal", "pinky.proximal", "hand")))
    right = m.hands["right"]
    assert {"ring.distal", "pinky.proximal", "hand"} <= set(right.missing)
    assert len(right.driven_roles) == 13
    assert "no wrist bone" in m.report()


def test_mapping_round_trips_through_json():
    names = _names("mixamo")
    m = detect_rig(names)
    back = mapping_from_json(mapping_to_json(m), names)
    assert back.profile_id == "custom"
    assert {s: dict(h.bones) for s, h in back.hands.items()} == {
        s: dict(h.bones) for s, h in m.hands.items()
    }


def test_a_mapping_with_unknown_bones_or_roles_is_refused():
    names = _names("mixamo")
    text = mapping_to_json(detect_rig(names))
    with pytest.raises(RigError, match="names bones that are not in the armature: Nope"):
        mapping_from_json(text.replace('"RightHandIndex2"', '"Nope"'), names, "my.json")
    with pytest.raises(RigError, match=r"unknown role\(s\) \['index.knuckle'\]"):
        mapping_from_json(text.replace('"index.intermediate"', '"index.knuckle"', 1), names)
    with pytest.raises(RigError, match="not valid JSON"):
        mapping_from_json("{", names)
    with pytest.raises(RigError, match="not a handmocap rig mapping"):
        mapping_from_json('{"hands": {}}', names)


def test_roles_are_the_closed_vocabulary():
    assert len(ROLES) == 2 + 3 + 4 * 4
