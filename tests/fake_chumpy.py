"""A stand-in for chumpy, enough to pickle files the way the official MANO pkls are pickled.

chumpy does not install on Python 3.11, so the MANO reader never imports it; these tests
make pickles whose chumpy objects are this class under chumpy's module path.
"""

from __future__ import annotations

import sys
import types

import pytest


class Ch:
    """Pickles like ``chumpy.ch.Ch``: an object whose state holds the array under ``x``
    (and, as real ones do, the names of its differentiable terms)."""

    def __init__(self, x):
        self.x = x
        self.dterms = ("a", "b")


@pytest.fixture
def chumpy_module(monkeypatch) -> types.ModuleType:
    """Make ``chumpy.ch.Ch`` importable (as :class:`Ch`) for the test's duration."""
    ch = types.ModuleType("chumpy.ch")
    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    return ch
