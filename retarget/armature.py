"""An armature as plain data: what the solver needs to know about a rig (no bpy).

The Blender bridge fills it from ``armature.data.bones``; tests build it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handmocap.errors import HandmocapError


class RigError(HandmocapError):
    """The rig cannot be used as asked: no hand bones, unknown bone names, bad mapping."""


@dataclass(frozen=True)
class ArmatureSpec:
    """Bones of one armature in its rest pose, in armature space (Blender's conventions).

    Attributes:
        name: the armature's name (for messages).
        bone_names: (N,) bone names.
        parents: (N,) index of each bone's parent, -1 for a root.
        rest: (N, 4, 4) rest matrices (Blender's ``bone.matrix_local``): columns are the
            bone's X, Y (head to tail), Z axes and its head, in armature units.
        lengths: (N,) bone lengths, armature units.
    """

    name: str
    bone_names: tuple[str, ...]
    parents: np.ndarray
    rest: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.bone_names)
        if len(set(self.bone_names)) != n:
            raise RigError(f"armature {self.name!r} has duplicate bone names")
        for field_name, shape in (("parents", (n,)), ("rest", (n, 4, 4)), ("lengths", (n,))):
            if np.shape(getattr(self, field_name)) != shape:
                raise RigError(
                    f"armature {self.name!r}: {field_name} has shape "
                    f"{np.shape(getattr(self, field_name))}, expected {shape}"
                )
        parents = np.asarray(self.parents)
        if np.any((parents < -1) | (parents >= n)) or np.any(parents == np.arange(n)):
            raise RigError(f"armature {self.name!r}: a parent index is out of range")

    def index(self, name: str) -> int:
        try:
            return self.bone_names.index(name)
        except ValueError:
            raise RigError(f"armature {self.name!r} has no bone {name!r}") from None

    @property
    def rotations(self) -> np.ndarray:
        """(N, 3, 3) rest orientation of each bone."""
        return np.asarray(self.rest)[:, :3, :3]

    @property
    def heads(self) -> np.ndarray:
        """(N, 3) rest head positions."""
        return np.asarray(self.rest)[:, :3, 3]

    @property
    def tails(self) -> np.ndarray:
        """(N, 3) rest tail positions (head + length along bone Y)."""
        return self.heads + self.rotations[:, :, 1] * np.asarray(self.lengths)[:, None]

    def ancestors(self, i: int) -> list[int]:
        """Indices from ``i``'s parent up to its root."""
        out = []
        p = int(self.parents[i])
        while p >= 0:
            out.append(p)
            p = int(self.parents[p])
        return out

    def topological_order(self) -> list[int]:
        """Every bone after its parent."""
        depth = [len(self.ancestors(i)) for i in range(len(self.bone_names))]
        return sorted(range(len(self.bone_names)), key=lambda i: depth[i])
