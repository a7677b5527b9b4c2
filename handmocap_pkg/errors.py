"""The one exception family that user-facing code catches and shows as a message."""

# What to do when a built asset is missing: the engine's own command, and where this is a
# source checkout, the build script that also sets up the environment.
BUILD_MODELS = "run 'handmocap models' (in a source checkout: 'python3 build.py models')"


class HandmocapError(Exception):
    """A problem the user can act on. ``str(err)`` names the problem and what to do."""


class AssetError(HandmocapError):
    """A third-party asset (hand mesh, model weights) is missing, corrupt or unobtainable."""


class CurveError(HandmocapError, ValueError):
    """Keys or rotations the curve maths cannot work on (a NaN, a zero quaternion, frames
    out of order, a wrong shape). ``str(err)`` names the array and the problem; the caller
    that knows where the data came from adds what to do. A ValueError too, as a bad
    argument to numpy-style code is."""
