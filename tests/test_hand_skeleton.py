import numpy as np

from handmocap.retarget.hand_skeleton import (
    MANO21_FOR_MEDIAPIPE,
    MANO_16,
    MANO_16_PARENTS,
    MANO_21,
    MEDIAPIPE_21,
    MEDIAPIPE_21_PARENTS,
    WEBXR_25,
    WEBXR_25_PARENTS,
    WEBXR_FOR_MANO,
    WEBXR_FOR_MEDIAPIPE,
    parents_are_topological,
    webxr_finger_and_segment,
)

# What each MediaPipe keypoint is called on the other skeletons, spelled out by hand.
_WEBXR_SEGMENT = {"cmc": "metacarpal", "mcp": "proximal", "ip": "distal", "tip": "tip"}
_FINGER_SEGMENT = {"mcp": "proximal", "pip": "intermediate", "dip": "distal", "tip": "tip"}


def test_orders_have_the_documented_sizes():
    assert len(MEDIAPIPE_21) == 21 and len(MEDIAPIPE_21_PARENTS) == 21
    assert len(MANO_16) == 16 and len(MANO_16_PARENTS) == 16 and len(MANO_21) == 21
    assert len(WEBXR_25) == 25 and len(WEBXR_25_PARENTS) == 25
    for parents in (MEDIAPIPE_21_PARENTS, MANO_16_PARENTS, WEBXR_25_PARENTS):
        assert parents_are_topological(parents)


def test_mediapipe_to_webxr_map_names_the_same_anatomy():
    for mp_index, webxr_index in enumerate(WEBXR_FOR_MEDIAPIPE):
        mp_name = MEDIAPIPE_21[mp_index]
        finger, segment = webxr_finger_and_segment(WEBXR_25[webxr_index])
        if mp_name == "wrist":
            assert finger == "wrist"
            continue
        mp_finger, mp_segment = mp_name.split("_")
        assert finger == mp_finger
        table = _WEBXR_SEGMENT if mp_finger == "thumb" else _FINGER_SEGMENT
        assert segment == table[mp_segment], (mp_name, WEBXR_25[webxr_index])


def test_mano_maps_are_consistent():
    # MANO joint k rotates the WebXR joint whose MediaPipe keypoint is MANO keypoint k.
    for k in range(16):
        mp_index = int(np.where(MANO21_FOR_MEDIAPIPE == k)[0][0])
        assert WEBXR_FOR_MEDIAPIPE[mp_index] == WEBXR_FOR_MANO[k], MANO_16[k]
    assert sorted(MANO21_FOR_MEDIAPIPE.tolist()) == list(range(21))
    for mp_index, mano_index in enumerate(MANO21_FOR_MEDIAPIPE):
        mano_name = MANO_21[mano_index]
        assert mano_name.split("_")[0].rstrip("123") == MEDIAPIPE_21[mp_index].split("_")[0]


def test_mediapipe_parents_follow_the_webxr_chain():
    # The keypoint skeleton is the WebXR tree with the finger metacarpals folded away.
    inverse = {int(w): m for m, w in enumerate(WEBXR_FOR_MEDIAPIPE)}
    for m, parent in enumerate(MEDIAPIPE_21_PARENTS):
        if parent < 0:
            continue
        w = WEBXR_25_PARENTS[int(WEBXR_FOR_MEDIAPIPE[m])]
        while w not in inverse:
            w = WEBXR_25_PARENTS[w]
        assert inverse[w] == parent, MEDIAPIPE_21[m]
