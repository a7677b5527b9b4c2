"""The Take: the engine's result file and its typed contract, shared by the engine and the
Blender add-on (numpy and the standard library only: no torch, no bpy).

:mod:`.format` holds the file format, its bounds and the types; :mod:`.checks` the value
checks; :mod:`.reader` the defensive reader. The names below are the public API.
"""

from .format import (
    FORMAT,
    FPS_RANGE,
    FRAME_FIT_FIELDS,
    MAX_FRAME_INDEX,
    MAX_TAKE_BYTES,
    MAX_TRACK_FRAMES,
    OBSERVATION_FIELDS,
    READABLE_VERSIONS,
    ROW_FIELDS,
    TRACK_SHAPES,
    VERSION,
    EngineFacts,
    FrameFlag,
    FrameRange,
    Take,
    TakeHeader,
    Track,
    make_header,
)
from .reader import load_take

__all__ = [
    "FORMAT",
    "FPS_RANGE",
    "FRAME_FIT_FIELDS",
    "MAX_FRAME_INDEX",
    "MAX_TAKE_BYTES",
    "MAX_TRACK_FRAMES",
    "OBSERVATION_FIELDS",
    "READABLE_VERSIONS",
    "ROW_FIELDS",
    "TRACK_SHAPES",
    "VERSION",
    "EngineFacts",
    "FrameFlag",
    "FrameRange",
    "Take",
    "TakeHeader",
    "Track",
    "load_take",
    "make_header",
]
