"""``handmocap models`` (and ``build.py models``): obtain and build every asset the engine
needs, into the cache.

The open WebXR hand (mesh + skeleton) and MediaPipe's palm detector and hand landmark
networks ported to ONNX, and the open hand model in MANO's layout.
"""

from __future__ import annotations

import sys

from handmocap.errors import HandmocapError
from handmocap.models.hand_model import ensure_open_hand_model
from handmocap.models.iknet_build import ensure_iknet
from handmocap.models.mediapipe_port import ensure_mediapipe_models
from handmocap.models.webxr_asset import ensure_webxr_hand


def main() -> int:
    try:
        files = ensure_webxr_hand()
        print(f"[handmocap] models: WebXR hand ok ({files.right.parent})")
        nets = ensure_mediapipe_models()
        print(f"[handmocap] models: hand detection networks ok ({nets.folder})")
        hand = ensure_open_hand_model()
        print(f"[handmocap] models: open hand model in MANO's layout ok ({hand.folder})")
        ik = ensure_iknet()
        took = ik.manifest["seconds"]
        print(f"[handmocap] models: IK network ok ({ik.onnx.parent}, trained in {took} s)")
    except HandmocapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
