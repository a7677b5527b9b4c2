"""Rendered clips, cached by what determines them (numpy only; renders in a subprocess).

A clip is fully determined by its spec and the code that renders it, so the cache key is
the sha256 of both: the renderer's sources, the skeleton/limits/kinematics it uses, the
pinned asset version and the spec. Tests and benchmarks ask for clips through here, so
CI renders each one once per change of the renderer, not once per run.

Rendering runs in a child process: bpy keeps global state, and a crash in Blender must
not take the caller down.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from handmocap.errors import HandmocapError
from handmocap.models.webxr_asset import VERSION as ASSET_VERSION
from handmocap.models.webxr_asset import cache_root

from .clip_spec import PRESETS, ClipSpec

ROOT = Path(__file__).resolve().parents[2]
_KEY_SOURCES = (
    "bench/synth",
    "retarget/hand_skeleton.py",
    "retarget/joint_limits.py",
    "retarget/kinematics.py",
    "retarget/rotations.py",
    "models/webxr_hand.py",
)


def clip_key(spec: ClipSpec) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(asdict(spec), sort_keys=True).encode())
    h.update(ASSET_VERSION.encode())
    for entry in _KEY_SOURCES:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# Set only by the render-robustness check (docs/testing.md): every clip is rendered with
# this Cycles seed instead of 0, i.e. slightly different pixels, as on another CPU.
NOISE_SEED_ENV = "HANDMOCAP_RENDER_NOISE_SEED"


def noise_seed_from_env() -> int:
    text = os.environ.get(NOISE_SEED_ENV, "").strip()
    try:
        return int(text) if text else 0
    except ValueError:
        raise HandmocapError(f"{NOISE_SEED_ENV} must be an integer, got {text!r}") from None


def cached_clip(preset: str, **overrides: object) -> tuple[Path, Path]:
    """(mp4, npz) of a preset clip with overrides, rendering it first if needed."""
    if preset not in PRESETS:
        raise HandmocapError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    overrides.setdefault("noise_seed", noise_seed_from_env())
    spec = PRESETS[preset].with_overrides(**overrides)
    folder = cache_root() / "clips" / f"{spec.name}-{clip_key(spec)}"
    mp4, npz = folder / f"{spec.name}.mp4", folder / f"{spec.name}.npz"
    if mp4.is_file() and npz.is_file():
        return mp4, npz
    cmd = [sys.executable, "-m", "bench.synth.render_clip", "--spec-json", json.dumps(asdict(spec)),
           "--out", str(folder), "--quiet"]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (mp4.is_file() and npz.is_file()):
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise HandmocapError(
            f"rendering the {spec.name!r} clip failed (exit {proc.returncode}):\n{tail}"
        )
    return mp4, npz
