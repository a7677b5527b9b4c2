"""The rendered hand's surface in numpy: the forearm's geometry, the skinned hand mesh, and
dense samples of both, so hands can be planned to touch without passing through each other.

Blender renders the hand mesh deformed by its armature (linear blend skinning of the
asset's weights, ``blender_scene.pose_hand``), then smoothed by a subdivision surface that
shrinks it by 0.4 mm (median; at most ~1 mm) at convex parts, and a rigid forearm parented
to the armature. :func:`posed_surface` reproduces the deformed cage exactly: the same
linear blend skinning of the same vertices, then the armature's object transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from handmocap.models.webxr_hand import WebXRHand

FOREARM_LENGTH_M = 0.32
FOREARM_RINGS = 8
FOREARM_SEGMENTS = 24
# Surface samples lie on a grid this fine over each triangle and quad, about the size of
# the contact cells (interaction.CONTACT_CELL_M).
SAMPLE_SPACING_M = 0.002


def forearm_mesh(hand: WebXRHand) -> tuple[list[tuple[float, float, float]], list[tuple[int, ...]]]:
    """The tapered forearm from the wrist, in hand space: vertices and outward-wound quads.

    Its cross-section is fitted to the hand mesh's rim near the wrist (width across the
    knuckle line, thickness along the palm normal), and it widens by a quarter towards
    the elbow. It moves rigidly with the armature (the wrist bone never moves inside it).
    """
    axis = -hand.finger_direction()
    normal = hand.palm_normal() - (hand.palm_normal() @ axis) * axis
    normal /= np.linalg.norm(normal)
    side = np.cross(axis, normal)
    wrist = hand.rest_positions[0]
    rel = hand.vertices - wrist
    near = np.abs(rel @ axis) < 0.01
    half_width = float(np.percentile(np.abs(rel[near] @ side), 95))
    half_thick = float(np.percentile(np.abs(rel[near] @ normal), 95))
    rings, segs = FOREARM_RINGS, FOREARM_SEGMENTS
    verts = []
    for r in range(rings + 1):
        t = r / rings
        grow = 1.0 + 0.25 * t  # forearms widen towards the elbow
        centre = wrist + axis * (FOREARM_LENGTH_M * t - 0.004)
        for s in range(segs):
            a = 2.0 * np.pi * s / segs
            p = (
                centre
                + side * np.cos(a) * half_width * grow
                + normal * np.sin(a) * half_thick * grow
            )
            verts.append(tuple(p))
    faces: list[tuple[int, ...]] = [
        (
            r * segs + s,
            r * segs + (s + 1) % segs,
            (r + 1) * segs + (s + 1) % segs,
            (r + 1) * segs + s,
        )
        for r in range(rings)
        for s in range(segs)
    ]
    # Wind the quads so their normals point outwards (visibility tests rely on it).
    v = np.asarray(verts)
    a, b, c = v[faces[0][0]], v[faces[0][1]], v[faces[0][2]]
    if np.cross(b - a, c - a) @ (a - (wrist + axis * (a - wrist) @ axis)) < 0:
        faces = [tuple(reversed(f)) for f in faces]
    return verts, faces


@dataclass(frozen=True)
class SurfaceSamples:
    """Points spread over one hand's mesh and forearm, at most ``SAMPLE_SPACING_M`` apart.

    Attributes:
        mesh_matrix: (N, V) sparse barycentric weights: mesh sample n is
            ``mesh_matrix[n] @ vertices``, so it follows its skinned triangle.
        mesh_faces: (N,) the hand-mesh triangle each mesh sample lies on.
        forearm_points: (M, 3) forearm samples in hand space (rigid), and
            forearm_normals (M, 3) their outward unit normals.
    """

    mesh_matrix: sparse.csr_matrix
    mesh_faces: np.ndarray
    forearm_points: np.ndarray
    forearm_normals: np.ndarray


def _barycentric_grid(k: int) -> np.ndarray:
    """(n, 3) barycentric weights of a triangle's grid with ``k`` steps per edge."""
    i, j = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
    keep = i + j <= k
    a, b = i[keep] / k, j[keep] / k
    return np.stack([1.0 - a - b, a, b], axis=1)


def surface_samples(hand: WebXRHand, spacing_m: float = SAMPLE_SPACING_M) -> SurfaceSamples:
    """Dense samples of ``hand``'s mesh (each triangle gridded by its longest edge) and of
    its forearm (each quad gridded along and across)."""
    v, faces = hand.vertices, hand.faces
    corners = v[faces]  # (F, 3, 3)
    longest = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(axis=1)
    steps = np.maximum(1, np.ceil(longest / spacing_m).astype(int))
    face_ids, wts = [], []
    for k in np.unique(steps):
        grid = _barycentric_grid(int(k))  # (n, 3)
        ids = np.flatnonzero(steps == k)
        face_ids.append(np.repeat(ids, len(grid)))
        wts.append(np.tile(grid, (len(ids), 1)))
    mesh_faces, weights = np.concatenate(face_ids), np.concatenate(wts)
    rows = np.repeat(np.arange(len(mesh_faces)), 3)
    matrix = sparse.csr_matrix(
        (weights.ravel(), (rows, faces[mesh_faces].ravel())), shape=(len(mesh_faces), len(v))
    )
    fv, ff = forearm_mesh(hand)
    fv = np.asarray(fv)
    points, normals = [], []
    for quad in ff:
        a, b, c, d = fv[list(quad)]
        n_u = int(np.ceil(max(np.linalg.norm(b - a), np.linalg.norm(c - d)) / spacing_m))
        n_v = int(np.ceil(max(np.linalg.norm(d - a), np.linalg.norm(c - b)) / spacing_m))
        s, t = np.meshgrid(np.linspace(0, 1, n_u + 1), np.linspace(0, 1, n_v + 1))
        s, t = s.reshape(-1, 1), t.reshape(-1, 1)
        points.append((1 - s) * (1 - t) * a + s * (1 - t) * b + s * t * c + (1 - s) * t * d)
        n = np.cross(b - a, d - a)
        normals.append(np.broadcast_to(n / np.linalg.norm(n), (len(s), 3)))
    return SurfaceSamples(
        mesh_matrix=matrix,
        mesh_faces=mesh_faces,
        forearm_points=np.concatenate(points),
        forearm_normals=np.concatenate(normals),
    )


def skinned_vertices(
    hand: WebXRHand, global_rotations: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """(T, V, 3) the hand mesh's vertices in hand space, posed by linear blend skinning.

    Args:
        global_rotations: (T, 25, 3, 3) joint rotations in hand space (FK, identity root).
        positions: (T, 25, 3) joint positions in hand space.
    """
    rel = hand.vertices[:, None, :] - hand.rest_positions[hand.skin_joints]  # (V, 4, 3)
    g = global_rotations[:, hand.skin_joints]  # (T, V, 4, 3, 3)
    moved = np.einsum("tvkij,vkj->tvki", g, rel) + positions[:, hand.skin_joints]
    return np.einsum("tvki,vk->tvi", moved, hand.skin_weights)


@dataclass(frozen=True)
class PosedSurface:
    """One hand's surface samples on one frame, in camera space.

    Attributes:
        points: (N, 3) metres; the first ``num_mesh`` lie on the hand mesh, the rest on
            the forearm.
        normals: (N, 3) outward unit normals, or None when not asked for.
    """

    points: np.ndarray
    normals: np.ndarray | None
    num_mesh: int


def posed_surface(
    hand: WebXRHand,
    samples: SurfaceSamples,
    global_rotations: np.ndarray,
    positions: np.ndarray,
    root_rotation: np.ndarray,
    root_position: np.ndarray,
    with_normals: bool = False,
) -> PosedSurface:
    """The samples of ``hand`` posed on one frame, as Blender places the cage.

    Args:
        global_rotations, positions: (25, 3, 3), (25, 3) hand-space FK of the frame.
        root_rotation: (3, 3) camera-from-hand; root_position: (3,) wrist in camera.
    """
    verts = skinned_vertices(hand, global_rotations[None], positions[None])[0]  # (V, 3)
    pts = np.concatenate([samples.mesh_matrix @ verts, samples.forearm_points])
    origin = root_position - root_rotation @ hand.rest_positions[0]
    normals = None
    if with_normals:
        tri = verts[hand.faces]  # (F, 3, 3)
        face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        face_n /= np.maximum(np.linalg.norm(face_n, axis=-1, keepdims=True), 1e-12)
        normals = np.concatenate([face_n[samples.mesh_faces], samples.forearm_normals])
        normals = normals @ root_rotation.T
    return PosedSurface(pts @ root_rotation.T + origin, normals, samples.mesh_matrix.shape[0])
