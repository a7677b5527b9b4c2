# SPDX-License-Identifier: GPL-3.0-or-later
"""Export a hand armature (and the meshes it deforms) as FBX with baked animation.

Thin layer over Blender's own FBX exporter (``bpy.ops.export_scene.fbx``) with presets
for game engines. Every preset bakes one take over the scene frame range that
:func:`export_fbx` sets, with a key on every frame (no simplification), so the file holds
exactly the solved motion. Works headless (``bpy`` module, background mode).

Units: frames are scene frames (integers); ``global_scale`` is a plain factor; the FBX
file's time is ``frame / fps`` seconds (Blender writes absolute scene time).

What the file holds per bone (Blender's exporter, ``fbx_utils.fbx_object_matrix``): the
bone's pose relative to its parent bone, ``parent.matrix^-1 @ bone.matrix`` (pose bones,
armature space), turned by the bone-axis correction C (identity for the default primary Y /
secondary X): ``C^-1 @ local @ C``; a root bone is relative to the armature node
(``bone.matrix @ C``). The global axis conversion and unit scale apply to the armature node
only, never to bone-local rotations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import bpy

from handmocap.errors import HandmocapError

AXES = ("X", "Y", "Z", "-X", "-Y", "-Z")
SCALE_OPTIONS = ("FBX_SCALE_NONE", "FBX_SCALE_UNITS", "FBX_SCALE_CUSTOM", "FBX_SCALE_ALL")
SMOOTH_TYPES = ("OFF", "FACE", "EDGE", "SMOOTH_GROUP")
NODE_TYPES = ("NULL", "ROOT", "LIMBNODE")

# FbxPreset fields that describe the preset rather than an exporter parameter.
_DESCRIPTIVE = frozenset({"name", "label", "description"})


class FbxExportError(HandmocapError):
    """The FBX file cannot be written as asked (no armature, bad folder, empty range...)."""


@dataclass(frozen=True)
class FbxPreset:
    """Settings for Blender's FBX exporter; every field but ``name``, ``label`` and
    ``description`` is the exporter parameter of the same name (Blender 4.2-4.5).

    Attributes:
        name: identifier ("unity", "unreal", "generic").
        label: shown to the user.
        description: why these settings, one line.
        axis_forward, axis_up: the file axes that Blender's +Y and +Z become (the
            conversion lands on the armature node only; bone-local rotations never change).
        apply_unit_scale: take the scene's unit scale into account (metres -> FBX cm).
        apply_scale_options: where the unit (and ``global_scale``) factor goes:
            "FBX_SCALE_NONE" on each root object's transform (file unit stays 1 cm),
            "FBX_SCALE_ALL" into the file's UnitScaleFactor (objects keep scale 1), or the
            mixed "FBX_SCALE_UNITS" / "FBX_SCALE_CUSTOM".
        global_scale: extra uniform scale factor (1 = none).
        use_space_transform: apply the axis conversion to root objects (else only the
            header's axes are written).
        bake_space_transform: bake the conversion into object data ("Apply Transform");
            Blender marks it experimental and broken with armatures, so presets keep False.
        add_leaf_bones: append an ``_end`` bone to every chain.
        use_armature_deform_only: write deforming bones only (plus the non-deforming
            ancestors of deforming bones).
        primary_bone_axis, secondary_bone_axis: the bone axes in the file for Blender's
            bone Y and X (Y/X = no correction).
        armature_nodetype: FBX node type of the armature object ("NULL" imports back
            cleanly into Blender).
        mesh_smooth_type: "OFF" (normals only), "FACE", "EDGE" or "SMOOTH_GROUP".
        use_mesh_modifiers: apply mesh modifiers (armature modifiers excepted).
        use_tspace: write tangents and binormals.
        bake_anim: write baked animation.
        bake_anim_use_all_bones: key every bone, even still ones.
        bake_anim_use_nla_strips: one take per NLA strip (over the strip's own range).
        bake_anim_use_all_actions: one take per action (over the action's own range).
            With both False the file has one take over the scene range, which is what
            :func:`export_fbx` sets.
        bake_anim_force_startend_keying: key the first and last frame of every curve.
        bake_anim_step: sampling step, frames.
        bake_anim_simplify_factor: curve simplification (0 = keep every frame's key).
    """

    name: str
    label: str
    description: str
    axis_forward: str = "-Z"
    axis_up: str = "Y"
    apply_unit_scale: bool = True
    apply_scale_options: str = "FBX_SCALE_NONE"
    global_scale: float = 1.0
    use_space_transform: bool = True
    bake_space_transform: bool = False
    add_leaf_bones: bool = False
    use_armature_deform_only: bool = False
    primary_bone_axis: str = "Y"
    secondary_bone_axis: str = "X"
    armature_nodetype: str = "NULL"
    mesh_smooth_type: str = "OFF"
    use_mesh_modifiers: bool = True
    use_tspace: bool = False
    bake_anim: bool = True
    bake_anim_use_all_bones: bool = True
    bake_anim_use_nla_strips: bool = False
    bake_anim_use_all_actions: bool = False
    bake_anim_force_startend_keying: bool = True
    bake_anim_step: float = 1.0
    bake_anim_simplify_factor: float = 0.0

    def __post_init__(self) -> None:
        choices = {
            "axis_forward": AXES, "axis_up": AXES, "primary_bone_axis": AXES,
            "secondary_bone_axis": AXES, "apply_scale_options": SCALE_OPTIONS,
            "mesh_smooth_type": SMOOTH_TYPES, "armature_nodetype": NODE_TYPES,
        }  # fmt: skip
        for field, allowed in choices.items():
            value = getattr(self, field)
            if value not in allowed:
                raise FbxExportError(
                    f"FBX preset {self.name!r}: {field} is {value!r}, expected one of "
                    f"{', '.join(allowed)}"
                )
        for a, b in (("axis_forward", "axis_up"), ("primary_bone_axis", "secondary_bone_axis")):
            if getattr(self, a)[-1] == getattr(self, b)[-1]:
                raise FbxExportError(
                    f"FBX preset {self.name!r}: {a} ({getattr(self, a)}) and {b} "
                    f"({getattr(self, b)}) lie on the same axis"
                )
        if not 0.001 <= self.global_scale <= 1000.0:
            raise FbxExportError(
                f"FBX preset {self.name!r}: global_scale {self.global_scale} is outside 0.001..1000"
            )
        if not 0.01 <= self.bake_anim_step <= 100.0:
            raise FbxExportError(
                f"FBX preset {self.name!r}: bake_anim_step {self.bake_anim_step} frames is "
                "outside 0.01..100"
            )
        if not 0.0 <= self.bake_anim_simplify_factor <= 100.0:
            raise FbxExportError(
                f"FBX preset {self.name!r}: bake_anim_simplify_factor "
                f"{self.bake_anim_simplify_factor} is outside 0..100"
            )

    def operator_arguments(self) -> dict[str, object]:
        """The keyword arguments for ``bpy.ops.export_scene.fbx`` (exporter parameters)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _DESCRIPTIVE}


UNITY = FbxPreset(
    name="unity",
    label="Unity",
    description="Y up, metres as the file unit, no leaf bones, deform bones, every frame keyed",
    # Unity is Y up: Blender's default -Z forward / Y up writes a Y-up file; the conversion
    # sits on the armature node (-90 deg about X), bones keep their own rotations.
    # "Apply Transform" would bake it away but Blender marks it broken with armatures.
    axis_forward="-Z",
    axis_up="Y",
    # "FBX All": the unit goes into UnitScaleFactor (100 = 1 m), objects keep scale 1; with
    # Unity's default "Convert Units" one Blender metre is one Unity unit.
    apply_scale_options="FBX_SCALE_ALL",
    # Leaf bones would become extra empty GameObjects in the hierarchy.
    add_leaf_bones=False,
    # Only bones that move the skin belong in the game rig (no IK / control bones).
    use_armature_deform_only=True,
    # Unity's default "Normals: Import" reads the split normals themselves.
    mesh_smooth_type="OFF",
)

UNREAL = FbxPreset(
    name="unreal",
    label="Unreal Engine",
    description="Z up, centimetres, no leaf bones, deform bones, every bone keyed every frame",
    # Unreal is Z up like Blender: no axis conversion (Epic's "Send to Unreal" default,
    # forward Y / up Z); Unreal's importer handles the handedness.
    axis_forward="Y",
    axis_up="Z",
    # Unreal works in centimetres and ignores the file unit unless "Convert Scene Unit" is
    # ticked: "All Local" writes cm values (Send to Unreal's default).
    apply_scale_options="FBX_SCALE_NONE",
    # Leaf bones would be imported as real bones of the Skeleton asset.
    add_leaf_bones=False,
    # The Skeleton asset should hold deforming bones only.
    use_armature_deform_only=True,
    # Unreal's importer warns "No smoothing group information" without face smoothing.
    mesh_smooth_type="FACE",
    # "needed with some target applications, like UE4" (Blender's own description).
    bake_anim_use_all_bones=True,
)

GENERIC = FbxPreset(
    name="generic",
    label="Generic FBX",
    description="Blender's FBX defaults, but no leaf bones and every frame keyed",
)

PRESETS: dict[str, FbxPreset] = {p.name: p for p in (UNITY, UNREAL, GENERIC)}


def _require_armature(obj: bpy.types.Object | None) -> bpy.types.Object:
    if obj is None:
        raise FbxExportError("nothing to export: select the hand armature first")
    try:
        kind = obj.type
    except ReferenceError as err:  # the object was deleted
        raise FbxExportError("the armature to export no longer exists") from err
    if kind != "ARMATURE":
        raise FbxExportError(f"{obj.name!r} is a {kind.lower()}, not an armature; select the "
                             "hand armature to export")  # fmt: skip
    return obj


def _writable_target(path: str | os.PathLike[str]) -> Path:
    target = Path(path).expanduser()
    if target.suffix.lower() != ".fbx":
        target = target.with_name(target.name + ".fbx")
    target = target.absolute()
    folder = target.parent
    if not folder.is_dir():
        raise FbxExportError(f"cannot write {target}: the folder {folder} does not exist")
    if target.is_dir():
        raise FbxExportError(f"cannot write {target}: it is a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise FbxExportError(f"cannot write {target}: no permission to write there")
    return target


def deformed_meshes(armature: bpy.types.Object) -> list[bpy.types.Object]:
    """Meshes that go with ``armature``: its child meshes (at any depth) and meshes whose
    Armature modifier uses it."""
    meshes = [o for o in armature.children_recursive if o.type == "MESH"]
    for obj in bpy.data.objects:
        if (
            obj.type == "MESH"
            and obj not in meshes
            and any(m.type == "ARMATURE" and m.object == armature for m in obj.modifiers)
        ):
            meshes.append(obj)
    return meshes


def export_fbx(path: str | os.PathLike[str], armature: bpy.types.Object | None,
               preset: FbxPreset, frame_start: int, frame_end: int,
               include_meshes: bool = True) -> Path:  # fmt: skip
    """Write ``armature`` (and, when ``include_meshes``, the meshes it deforms) to an FBX
    file with its animation baked on every frame from ``frame_start`` to ``frame_end``
    (scene frames, both included) into one take.

    The scene's frame range and current frame, the selection and the active object are
    restored afterwards, whatever happens. ``.fbx`` is appended to ``path`` when missing.

    Returns the file written. Raises FbxExportError when there is no armature, it is not in
    the current view layer, the frame range is empty, the folder is missing or not
    writable, or Blender's exporter fails.
    """
    armature = _require_armature(armature)
    if int(frame_end) < int(frame_start):
        raise FbxExportError(
            f"the frame range {frame_start}..{frame_end} is empty: the end frame must not be "
            "before the start frame"
        )
    target = _writable_target(path)
    context = bpy.context
    scene = context.scene
    view_layer = context.view_layer
    if view_layer.objects.get(armature.name) != armature:
        raise FbxExportError(
            f"the armature {armature.name!r} is not in the view layer {view_layer.name!r} of "
            f"the scene {scene.name!r}; link it to the scene (and enable its collection)"
        )
    objects = [armature]
    if include_meshes:
        objects += [m for m in deformed_meshes(armature) if view_layer.objects.get(m.name) == m]
    object_types = {"ARMATURE", "MESH"} if include_meshes else {"ARMATURE"}

    saved_range = (scene.frame_start, scene.frame_end)
    saved_frame = (scene.frame_current, scene.frame_subframe)
    saved_selection = [o for o in view_layer.objects if o.select_get(view_layer=view_layer)]
    saved_active = view_layer.objects.active
    try:
        for obj in saved_selection:
            obj.select_set(False, view_layer=view_layer)
        for obj in objects:
            obj.select_set(True, view_layer=view_layer)
        view_layer.objects.active = armature
        # frame_end first when moving the range up, so start <= end holds throughout
        if int(frame_start) > scene.frame_end:
            scene.frame_end = int(frame_end)
            scene.frame_start = int(frame_start)
        else:
            scene.frame_start = int(frame_start)
            scene.frame_end = int(frame_end)
        with context.temp_override(scene=scene, view_layer=view_layer, active_object=armature,
                                   object=armature, selected_objects=objects):  # fmt: skip
            try:
                result = bpy.ops.export_scene.fbx(
                    filepath=str(target), check_existing=False, use_selection=True,
                    use_visible=False, use_active_collection=False, collection="",
                    object_types=object_types, batch_mode="OFF", path_mode="AUTO",
                    embed_textures=False, **preset.operator_arguments(),
                )  # fmt: skip
            except RuntimeError as err:
                raise FbxExportError(f"Blender's FBX exporter failed on {target}: {err}") from err
        if result != {"FINISHED"} or not target.is_file():
            raise FbxExportError(f"Blender's FBX exporter did not write {target} ({result})")
    finally:
        for obj in view_layer.objects:
            obj.select_set(obj in saved_selection, view_layer=view_layer)
        view_layer.objects.active = saved_active
        if saved_range[0] > scene.frame_end:
            scene.frame_end, scene.frame_start = saved_range[1], saved_range[0]
        else:
            scene.frame_start, scene.frame_end = saved_range
        scene.frame_set(saved_frame[0], subframe=saved_frame[1])
    return target
