"""The Blender half of the synthetic renderer: scene, hands, posing, masks, visibility.

World space here **is** the OpenCV camera space: the camera sits at the origin with the
world rotation diag(1, -1, -1), so a world point (x, y, z) is the camera-space point
(x right, y down, z forward). No conversion is ever needed between the two.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

from bench.synth.look import SceneLook
from handmocap.models.webxr_hand import WebXRHand
from handmocap.retarget.hand_skeleton import WEBXR_25, WEBXR_25_PARENTS
from handmocap.retarget.rotations import OPENCV_TO_BLENDER_CAMERA

from .ground_truth import Visibility
from .hand_surface import forearm_mesh

# Marching from a keypoint towards the camera, a hit closer than this to the previous one
# is the same surface again (numerical re-hit), not a new one.
_RAY_EPSILON_M = 1e-5
_MAX_SURFACES = 64


@dataclass
class BlenderHand:
    """Handles to one imported hand. ``rest`` is (25, 4, 4): each bone's rest matrix in
    armature (= hand) space, in WEBXR_25 order, after the chain was rebuilt."""

    side: str
    armature: bpy.types.Object
    mesh: bpy.types.Object
    forearm: bpy.types.Object
    rest: np.ndarray
    pass_index: int


def reset_blender() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def setup_render(
    width: int, height: int, samples: int, denoise: bool, noise_seed: int = 0
) -> bpy.types.Scene:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = denoise
    if denoise:
        # Measured at 512x512 on 2 cores: the FAST prefilter saves 2.2 s of 7.6 s a frame,
        # the light tree (pointless with 2-3 area lights) another 1 s.
        scene.cycles.denoiser = "OPENIMAGEDENOISE"
        scene.cycles.denoising_prefilter = "FAST"
        scene.cycles.denoising_input_passes = "RGB_ALBEDO"
    scene.cycles.use_light_tree = False
    scene.cycles.seed = noise_seed
    scene.cycles.max_bounces = 4
    scene.render.use_persistent_data = True
    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "AgX"
    scene.view_layers[0].use_pass_object_index = True
    return scene


def add_camera(scene: bpy.types.Scene, intrinsics: np.ndarray, width: int, height: int) -> None:
    """A Blender camera at the origin that images exactly like the OpenCV pinhole K."""
    cam_data = bpy.data.cameras.new("camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = float(intrinsics[0, 0]) * 36.0 / width
    # Principal point offsets, in units of the larger image side.
    cam_data.shift_x = (width / 2.0 - float(intrinsics[0, 2])) / max(width, height)
    cam_data.shift_y = (float(intrinsics[1, 2]) - height / 2.0) / max(width, height)
    cam_data.clip_start = 0.01
    cam_data.clip_end = 20.0
    cam = bpy.data.objects.new("camera", cam_data)
    m = np.eye(4)
    m[:3, :3] = OPENCV_TO_BLENDER_CAMERA
    cam.matrix_world = Matrix(m.tolist())
    scene.collection.objects.link(cam)
    scene.camera = cam


def add_environment(scene: bpy.types.Scene, look: SceneLook) -> None:
    """World light, area lights and a textured backdrop, as the look says."""
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (*look.ambient_rgb, 1.0)
    bg.inputs["Strength"].default_value = look.ambient_strength
    scene.world = world

    for i, light in enumerate(look.lights):
        data = bpy.data.lights.new(f"light{i}", type="AREA")
        data.energy = light.energy_w
        data.size = light.size_m
        data.color = light.rgb
        obj = bpy.data.objects.new(f"light{i}", data)
        pos = np.asarray(light.position)
        # Area lights shine along their local -Z: aim it at the scene centre.
        forward = np.asarray(look.target) - pos
        forward /= np.linalg.norm(forward)
        obj.matrix_world = (
            Matrix.Translation(Vector(pos.tolist()))
            @ Vector((-forward).tolist()).to_track_quat("Z", "Y").to_matrix().to_4x4()
        )
        scene.collection.objects.link(obj)

    _add_backdrop(scene, look)


def _add_backdrop(scene: bpy.types.Scene, look: SceneLook) -> None:
    depth = look.backdrop_depth_m
    size = depth * 3.0
    mesh = bpy.data.meshes.new("backdrop")
    verts = [(-size, -size, depth), (size, -size, depth), (size, size, depth), (-size, size, depth)]
    mesh.from_pydata(verts, [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new()
    for loop, co in zip(uv.data, [(0, 0), (1, 0), (1, 1), (0, 1)], strict=True):
        loop.uv = co
    obj = bpy.data.objects.new("backdrop", mesh)
    mat = bpy.data.materials.new("backdrop")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.8
    coord = nodes.new("ShaderNodeTexCoord")
    if look.backdrop_pattern == "noise":
        tex = nodes.new("ShaderNodeTexNoise")
        tex.inputs["Scale"].default_value = look.backdrop_scale
        tex.inputs["Detail"].default_value = 2.0
        fac = tex.outputs["Fac"]
    elif look.backdrop_pattern == "wave":
        tex = nodes.new("ShaderNodeTexWave")
        tex.inputs["Scale"].default_value = look.backdrop_scale
        tex.inputs["Distortion"].default_value = 4.0
        fac = tex.outputs["Fac"]
    else:
        tex = nodes.new("ShaderNodeTexVoronoi")
        tex.inputs["Scale"].default_value = look.backdrop_scale
        fac = tex.outputs["Distance"]
    links.new(coord.outputs["UV"], tex.inputs["Vector"])
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*look.backdrop_rgb[0], 1.0)
    ramp.color_ramp.elements[1].color = (*look.backdrop_rgb[1], 1.0)
    links.new(fac, ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    mesh.materials.append(mat)
    scene.collection.objects.link(obj)


def _skin_material(name: str, rgb: tuple[float, float, float]) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.5
    bsdf.inputs["Subsurface Weight"].default_value = 0.12
    bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.35, 0.2)
    bsdf.inputs["Subsurface Scale"].default_value = 0.004
    bsdf.inputs["Specular IOR Level"].default_value = 0.35
    # Blotchy variation in the base colour and a fine bump: flat colour reads as plastic.
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 150.0
    noise.inputs["Detail"].default_value = 4.0
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.inputs["Factor"].default_value = 0.12
    mix.inputs["A"].default_value = (*rgb, 1.0)
    mix.inputs["B"].default_value = (rgb[0] * 0.75, rgb[1] * 0.6, rgb[2] * 0.6, 1.0)
    links.new(noise.outputs["Fac"], mix.inputs["Factor"])
    links.new(mix.outputs["Result"], bsdf.inputs["Base Color"])
    bump = nodes.new("ShaderNodeBump")
    bump.inputs["Strength"].default_value = 0.08
    bump.inputs["Distance"].default_value = 0.0005
    links.new(noise.outputs["Fac"], bump.inputs["Height"])
    links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    return mat


def import_hand(
    scene: bpy.types.Scene,
    glb: Path,
    hand: WebXRHand,
    skin_rgb: tuple[float, float, float],
    pass_index: int,
) -> BlenderHand:
    """Import one WebXR hand, rebuild its bone chain, and dress it in skin."""
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    new = [o for o in bpy.data.objects if o not in before]
    arm = next(o for o in new if o.type == "ARMATURE")
    mesh = next(o for o in new if o.type == "MESH" and o.parent is arm)
    for o in new:  # the asset also carries helper nodes (an icosphere, trigger empties)
        if o not in (arm, mesh):
            bpy.data.objects.remove(o, do_unlink=True)
    suffix = "L" if hand.side == "left" else "R"
    arm.name = arm.data.name = f"hand.{suffix}"
    mesh.name = f"hand_mesh.{suffix}"

    rebuild_webxr_chain(arm, hand)
    rest = np.array([np.array(arm.data.bones[n].matrix_local) for n in WEBXR_25])
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"

    skin = _skin_material(f"skin.{suffix}", skin_rgb)
    mesh.data.materials.clear()
    mesh.data.materials.append(skin)
    for poly in mesh.data.polygons:
        poly.use_smooth = True
    subsurf = mesh.modifiers.new("subdivision", "SUBSURF")
    subsurf.levels = 1
    subsurf.render_levels = 2
    mesh.pass_index = pass_index

    forearm = _add_forearm(scene, arm, hand, skin, suffix)
    forearm.pass_index = pass_index
    return BlenderHand(hand.side, arm, mesh, forearm, rest, pass_index)


def rebuild_webxr_chain(arm: bpy.types.Object, hand: WebXRHand) -> None:
    """Parent the 25 imported bones as wrist -> metacarpal -> ... -> tip, each bone's tail on
    its child's head and its roll set so bone Z points out of the back of the hand (fingers
    curl about bone X, as in Rigify)."""
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    bones = arm.data.edit_bones
    children = {j: [c for c, p in enumerate(WEBXR_25_PARENTS) if p == j] for j in range(25)}
    for j, name in enumerate(WEBXR_25):
        eb = bones[name]
        eb.head = Vector(hand.rest_positions[j].tolist())
        if name == "wrist":
            tail = hand.rest_positions[WEBXR_25.index("middle-finger-metacarpal")]
        elif children[j]:
            tail = hand.rest_positions[children[j][0]]
        else:
            d = hand.rest_positions[j] - hand.rest_positions[WEBXR_25_PARENTS[j]]
            tail = hand.rest_positions[j] + 0.01 * d / np.linalg.norm(d)
        eb.tail = Vector(tail.tolist())
        eb.align_roll(Vector(hand.rest_frames[j][:, 1].tolist()))
    for j, name in enumerate(WEBXR_25):
        parent = WEBXR_25_PARENTS[j]
        bones[name].use_connect = False
        bones[name].parent = bones[WEBXR_25[parent]] if parent >= 0 else None
    bpy.ops.object.mode_set(mode="OBJECT")


def _add_forearm(
    scene: bpy.types.Scene,
    arm: bpy.types.Object,
    hand: WebXRHand,
    skin: bpy.types.Material,
    suffix: str,
) -> bpy.types.Object:
    """A tapered forearm from the wrist (``hand_surface.forearm_mesh``), so the hand does
    not end in a cut-off stump. It is parented to the armature, which carries the whole
    hand's motion; the wrist bone never moves inside the armature."""
    verts, faces = forearm_mesh(hand)
    mesh = bpy.data.meshes.new(f"forearm.{suffix}")
    mesh.from_pydata(verts, [], faces)
    for poly in mesh.polygons:
        poly.use_smooth = True
    mesh.materials.append(skin)
    obj = bpy.data.objects.new(f"forearm.{suffix}", mesh)
    obj.parent = arm
    scene.collection.objects.link(obj)
    return obj


def add_occluder(
    scene: bpy.types.Scene,
    size: np.ndarray,
    rgb: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> bpy.types.Object:
    """The occluding board: a closed box of ``size`` (3,) metres with outward normals (the
    visibility rays rely on them), matte, with a faint noise between the two linear-RGB
    shades. Pass index 0: it is background in the hand masks."""
    import bmesh

    mesh = bpy.data.meshes.new("occluder")
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=1.0)
    bmesh.ops.scale(bm, vec=Vector(np.asarray(size, dtype=float).tolist()), verts=bm.verts)
    bm.to_mesh(mesh)
    bm.free()
    mat = bpy.data.materials.new("occluder")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.9
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 20.0
    noise.inputs["Detail"].default_value = 3.0
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*rgb[1], 1.0)
    ramp.color_ramp.elements[1].color = (*rgb[0], 1.0)
    links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    mesh.materials.append(mat)
    obj = bpy.data.objects.new("occluder", mesh)
    obj.pass_index = 0
    scene.collection.objects.link(obj)
    return obj


def place_occluder(obj: bpy.types.Object, centre: np.ndarray) -> None:
    """Move the board's centre to ``centre`` (3,) in camera space, metres."""
    obj.location = Vector(np.asarray(centre, dtype=float).tolist())


def pose_hand(
    bh: BlenderHand,
    global_rotations_hand: np.ndarray,
    positions_hand: np.ndarray,
    root_rotation: np.ndarray,
    root_position: np.ndarray,
    rest_wrist: np.ndarray,
) -> None:
    """Pose one hand for one frame.

    Args:
        global_rotations_hand: (25, 3, 3) joint rotations in hand space (FK with identity root).
        positions_hand: (25, 3) joint positions in hand space.
        root_rotation: (3, 3) camera-from-hand rotation; root_position: (3,) wrist in camera.
        rest_wrist: (3,) wrist joint at rest in hand space.
    """
    obj = np.eye(4)
    obj[:3, :3] = root_rotation
    obj[:3, 3] = root_position - root_rotation @ rest_wrist
    bh.armature.matrix_world = Matrix(obj.tolist())

    pose = np.zeros((25, 4, 4))
    pose[:, :3, :3] = global_rotations_hand @ bh.rest[:, :3, :3]
    pose[:, :3, 3] = positions_hand
    pose[:, 3, 3] = 1.0
    for j, name in enumerate(WEBXR_25):
        parent = WEBXR_25_PARENTS[j]
        if parent < 0:
            basis = np.linalg.inv(bh.rest[j]) @ pose[j]
        else:
            rest_rel = np.linalg.inv(bh.rest[parent]) @ bh.rest[j]
            basis = np.linalg.inv(rest_rel) @ np.linalg.inv(pose[parent]) @ pose[j]
        bh.armature.pose.bones[name].matrix_basis = Matrix(basis.tolist())


def evaluated_joint_heads(bh: BlenderHand) -> np.ndarray:
    """(25, 3) world positions of the posed bone heads, as Blender evaluates them."""
    mw = np.array(bh.armature.matrix_world)
    heads = np.array([bh.armature.pose.bones[n].head for n in WEBXR_25])
    return heads @ mw[:3, :3].T + mw[:3, 3]


def keypoint_visibility(
    scene: bpy.types.Scene,
    points: np.ndarray,
    hand_objects: list[set[str]],
    width: int,
    height: int,
    pixels: np.ndarray,
) -> np.ndarray:
    """Visibility codes (H, P) of camera-space keypoints (H, P, 3), exact, no depth margin.

    Keypoints lie inside the flesh (joint centres, fingertip sites). March along the ray
    from the keypoint to the camera: surfaces the ray *leaves* (normal along the ray) are
    the keypoint's own flesh; the first surface it *enters* is an occluder, of this hand
    (self-occlusion) or of the other one. A scene object that is no hand (the occluding
    board) entered anywhere on the way wins: the keypoint is hidden by the object even if
    a finger hides it too. ``hand_objects[h]`` names hand h's objects.
    """
    depsgraph = bpy.context.evaluated_depsgraph_get()
    all_hands = set().union(*hand_objects)
    out = np.full(points.shape[:2], int(Visibility.VISIBLE), dtype=np.int8)
    for h in range(points.shape[0]):
        for k in range(points.shape[1]):
            u, v = pixels[h, k]
            if not (0.0 <= u < width and 0.0 <= v < height) or points[h, k, 2] <= 0:
                out[h, k] = Visibility.OUTSIDE_IMAGE
                continue
            entered = _entered_surfaces(scene, depsgraph, points[h, k], all_hands)
            if not entered:
                continue
            if entered[-1] not in all_hands:
                out[h, k] = Visibility.OCCLUDED_BY_OBJECT
            elif entered[0] in hand_objects[h]:
                out[h, k] = Visibility.SELF_OCCLUDED
            else:
                out[h, k] = Visibility.OCCLUDED_BY_OTHER_HAND
    return out


def _entered_surfaces(
    scene: bpy.types.Scene, depsgraph, point: np.ndarray, hands: set[str]
) -> list[str]:
    """Names of the objects whose surfaces the ray point -> camera enters, in order, up to
    and including the first object not in ``hands``."""
    remaining = float(np.linalg.norm(point))
    direction = -point / remaining
    origin = point.astype(np.float64)
    entered: list[str] = []
    for _ in range(_MAX_SURFACES):
        hit, loc, normal, _i, obj, _m = scene.ray_cast(
            depsgraph, Vector(origin.tolist()), Vector(direction.tolist()), distance=remaining
        )
        if not hit:
            break
        if float(np.dot(np.array(normal), direction)) < 0.0:
            entered.append(obj.name)
            if obj.name not in hands:
                break
        step = float(np.linalg.norm(np.array(loc) - origin)) + _RAY_EPSILON_M
        origin = origin + direction * step
        remaining -= step
        if remaining <= 0.0:
            break
    return entered


def setup_mask_output(scene: bpy.types.Scene, folder: Path, pass_indices: list[int]) -> None:
    """Compositor: beauty to the render result, and one exact 0/1 mask PNG per hand from
    the object-index pass (no antialiasing, no view transform) per rendered frame."""
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    layers = tree.nodes.new("CompositorNodeRLayers")
    composite = tree.nodes.new("CompositorNodeComposite")
    tree.links.new(layers.outputs["Image"], composite.inputs["Image"])
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.base_path = str(folder)
    out.format.file_format = "PNG"
    out.format.color_mode = "BW"
    out.format.color_depth = "8"
    out.format.color_management = "OVERRIDE"
    out.format.view_settings.view_transform = "Standard"
    out.file_slots.clear()
    for idx in pass_indices:
        out.file_slots.new(f"mask{idx}_")
        id_mask = tree.nodes.new("CompositorNodeIDMask")
        id_mask.index = idx
        id_mask.use_antialiasing = False
        tree.links.new(layers.outputs["IndexOB"], id_mask.inputs["ID value"])
        tree.links.new(id_mask.outputs["Alpha"], out.inputs[f"mask{idx}_"])


@contextmanager
def hidden_from_render(hands: list[BlenderHand]):
    """Hide ``hands`` (mesh and forearm) from rendering inside the block, restoring each
    object's own setting afterwards, even when the block fails."""
    objects = [o for bh in hands for o in (bh.mesh, bh.forearm)]
    saved = [o.hide_render for o in objects]
    try:
        for o in objects:
            o.hide_render = True
        yield
    finally:
        for o, hide in zip(objects, saved, strict=True):
            o.hide_render = hide


def render_frame(scene: bpy.types.Scene, frame: int, image_path: Path) -> None:
    scene.frame_current = frame
    scene.render.filepath = str(image_path)
    with _quiet_stdout():
        bpy.ops.render.render(write_still=True)


@contextmanager
def _quiet_stdout():
    """Silence Blender's per-sample render log, which it writes to the C-level stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
