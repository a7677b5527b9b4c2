"""Random but seeded appearance of a synthetic clip: skin, lights, backdrop (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Skin tones from very light to very dark, sRGB (roughly Fitzpatrick I-VI and between).
SKIN_TONES_SRGB: tuple[tuple[float, float, float], ...] = (
    (0.96, 0.80, 0.69), (0.92, 0.74, 0.62), (0.85, 0.65, 0.52), (0.78, 0.57, 0.43),
    (0.66, 0.46, 0.33), (0.55, 0.37, 0.26), (0.42, 0.28, 0.19), (0.32, 0.21, 0.14),
)  # fmt: skip


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


@dataclass(frozen=True)
class AreaLight:
    position: tuple[float, float, float]  # camera space, metres
    energy_w: float
    size_m: float
    rgb: tuple[float, float, float]


@dataclass(frozen=True)
class SceneLook:
    """Appearance choices for one clip (colours are linear RGB)."""

    skin_rgb: tuple[tuple[float, float, float], ...]  # one per hand
    lights: tuple[AreaLight, ...]
    target: tuple[float, float, float]
    ambient_rgb: tuple[float, float, float]
    ambient_strength: float
    backdrop_depth_m: float
    backdrop_pattern: str  # "noise" | "wave" | "voronoi"
    backdrop_scale: float
    backdrop_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]


def _tint(rng: np.random.Generator) -> tuple[float, float, float]:
    """A light colour between warm (~3000 K) and cool (~6500 K) white."""
    warm = np.array([1.0, 0.78, 0.58])
    cool = np.array([0.92, 0.96, 1.0])
    t = rng.uniform()
    return tuple(float(x) for x in warm + t * (cool - warm))


def random_look(
    rng: np.random.Generator, num_hands: int, target: np.ndarray, skin_index: int | None = None
) -> SceneLook:
    """Draw a look. ``target`` (3,) is the scene centre in camera space (metres)."""
    tone = int(rng.integers(len(SKIN_TONES_SRGB))) if skin_index is None else skin_index
    skin = tuple(float(x) for x in srgb_to_linear(SKIN_TONES_SRGB[tone]))
    lights = []
    for i in range(int(rng.integers(2, 4))):
        # Key light from the camera's side of the hand, fills weaker and wider.
        az = rng.uniform(-1.2, 1.2)
        el = rng.uniform(-0.9, 0.5)
        dist = rng.uniform(0.6, 1.2)
        pos = np.asarray(target) + dist * np.array(
            [np.sin(az) * np.cos(el), np.sin(el), -np.cos(az) * np.cos(el)]
        )
        energy = rng.uniform(25.0, 60.0) * (1.0 if i == 0 else 0.4) * dist**2
        lights.append(AreaLight(tuple(float(x) for x in pos), float(energy),
                                float(rng.uniform(0.3, 0.9)), _tint(rng)))  # fmt: skip
    base = rng.uniform(0.05, 0.6, size=3)
    grey = base.mean()
    base = grey + rng.uniform(0.2, 0.7) * (base - grey)  # mostly desaturated rooms
    second = np.clip(base * rng.uniform(0.4, 1.6), 0.01, 0.9)
    return SceneLook(
        skin_rgb=(skin,) * num_hands,
        lights=tuple(lights),
        target=tuple(float(x) for x in target),
        ambient_rgb=tuple(float(x) for x in rng.uniform(0.6, 1.0, size=3)),
        ambient_strength=float(rng.uniform(0.15, 0.5)),
        backdrop_depth_m=float(rng.uniform(1.0, 2.0)),
        backdrop_pattern=str(rng.choice(["noise", "wave", "voronoi"])),
        backdrop_scale=float(rng.uniform(2.0, 12.0)),
        backdrop_rgb=(tuple(float(x) for x in srgb_to_linear(base)),
                      tuple(float(x) for x in srgb_to_linear(second))),
    )  # fmt: skip
