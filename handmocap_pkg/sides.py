"""Which hand: the one vocabulary for sides across the engine, the take and the add-on.

Handedness always means the *physical* hand (a right hand is a right hand in a mirrored
selfie video too). :class:`Side` is a ``str`` enum, so ``Side.LEFT == "left"`` and it
writes to JSON as ``"left"``: take files and rig mappings keep their plain-text form.
"""

from __future__ import annotations

from enum import StrEnum

from handmocap.errors import HandmocapError


class Side(StrEnum):
    """A physical hand: ``Side.LEFT`` or ``Side.RIGHT`` (values ``"left"``/``"right"``)."""

    LEFT = "left"
    RIGHT = "right"

    @property
    def other(self) -> Side:
        """The opposite hand."""
        return Side.RIGHT if self is Side.LEFT else Side.LEFT

    @property
    def letter(self) -> str:
        """``"L"`` or ``"R"``, as in Blender's ``.L``/``.R`` bone suffixes."""
        return self.value[0].upper()

    @property
    def display(self) -> str:
        """``"Left"`` or ``"Right"``, for names and messages."""
        return self.value.capitalize()

    @classmethod
    def parse(cls, value: object, what: str = "side") -> Side:
        """``value`` as a Side; a :class:`HandmocapError` naming ``what`` if it is none."""
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise HandmocapError(f"{what} must be 'left' or 'right', not {value!r}")


BOTH: tuple[Side, Side] = (Side.LEFT, Side.RIGHT)
