"""handmocap.sides: one vocabulary for which hand, equal to the plain text files hold."""

import json

import pytest

from handmocap.errors import HandmocapError
from handmocap.sides import BOTH, Side


def test_a_side_is_its_text():
    assert Side.LEFT == "left" and Side.RIGHT == "right"
    assert str(Side.LEFT) == "left" and f"the {Side.RIGHT} hand" == "the right hand"
    assert json.dumps({Side.LEFT: [Side.RIGHT]}) == '{"left": ["right"]}'
    # Text keys find Side keys and the other way round.
    assert {"left": 1}[Side.LEFT] == 1 and {Side.RIGHT: 2}["right"] == 2
    assert BOTH == (Side.LEFT, Side.RIGHT) and set(BOTH) == {"left", "right"}


def test_names_of_a_side():
    assert (Side.LEFT.other, Side.RIGHT.other) == (Side.RIGHT, Side.LEFT)
    assert (Side.LEFT.letter, Side.RIGHT.letter) == ("L", "R")
    assert (Side.LEFT.display, Side.RIGHT.display) == ("Left", "Right")
    assert Side["LEFT"] is Side.LEFT  # the add-on's enum items are the members' names


@pytest.mark.parametrize("text", ["left", "Left", "LEFT", Side.LEFT])
def test_parse_takes_any_case(text):
    assert Side.parse(text) is Side.LEFT


@pytest.mark.parametrize("value", ["", "l", "both", None, 0])
def test_parse_names_what_was_wrong(value):
    with pytest.raises(HandmocapError, match=r"a hand to apply must be 'left' or 'right'"):
        Side.parse(value, "a hand to apply")
