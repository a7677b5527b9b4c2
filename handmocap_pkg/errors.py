"""The one exception family that user-facing code catches and shows as a message."""


class HandmocapError(Exception):
    """A problem the user can act on. ``str(err)`` names the problem and what to do."""


class AssetError(HandmocapError):
    """A third-party asset (hand mesh, model weights) is missing, corrupt or unobtainable."""
