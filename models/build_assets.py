"""``build.py models``: obtain and build every asset the project needs, into the cache.

At this stage that is the open WebXR hand (mesh + skeleton). Later stages add the
MediaPipe networks and the open hand model in MANO's layout.
"""

from __future__ import annotations

import sys

from handmocap.errors import HandmocapError
from handmocap.models.webxr_asset import ensure_webxr_hand


def main() -> int:
    try:
        files = ensure_webxr_hand()
    except HandmocapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[handmocap] models: WebXR hand ok ({files.right.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
