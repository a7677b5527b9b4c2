"""Shared fixtures. The WebXR hand comes from the cache that ``build.py models`` fills
(``ensure_webxr_hand`` downloads it from the npm registry over HTTPS if it is missing)."""

from __future__ import annotations

import importlib.util

import pytest
from fake_chumpy import chumpy_module  # noqa: F401 (a fixture the MANO file tests use)

from handmocap.models.webxr_asset import WebXRHandFiles, ensure_webxr_hand
from handmocap.models.webxr_hand import WebXRHand, load_webxr_hand

HAS_BPY = importlib.util.find_spec("bpy") is not None


@pytest.fixture(scope="session")
def webxr_files() -> WebXRHandFiles:
    return ensure_webxr_hand()


@pytest.fixture(scope="session")
def hands(webxr_files: WebXRHandFiles) -> dict[str, WebXRHand]:
    return {side: load_webxr_hand(webxr_files.glb(side), side) for side in ("left", "right")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_BPY:
        return
    skip = pytest.mark.skip(reason="bpy (Blender as a Python module) is not installed")
    for item in items:
        if "blender" in item.keywords:
            item.add_marker(skip)


_EXIT_STATUS = {"code": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """bpy 4.5.15 can hang at interpreter exit (after Rigify generation, or with Rigify
    enabled once torch is loaded; docs/architecture.md, "Environment facts"). The tests avoid
    both, and this is the safety net: with bpy loaded, leave at once with pytest's own exit
    code, after every report has been written."""
    import os
    import sys

    if "bpy" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["code"])
