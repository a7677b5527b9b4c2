"""The dependency rule (ARCHITECTURE section 2): bpy/mathutils only in blender_addon/,
bench/ and tests/; retarget/ imports numpy and the standard library only (Blender ships
numpy, not scipy)."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLENDER_MODULES = {"bpy", "mathutils", "bmesh", "bpy_extras"}
ENGINE_ONLY = {"torch", "onnxruntime", "mediapipe", "cv2", "smplx", "onnx", "tflite"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _product_files(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py")]


def test_bpy_stays_in_the_blender_layers():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & BLENDER_MODULES)
        for p in [
            *_product_files("inference", "retarget", "models", "handmocap_pkg"),
            ROOT / "build.py",
        ]
        if _imports(p) & BLENDER_MODULES
    }
    assert not offenders, f"bpy imported outside blender_addon/, bench/, tests/: {offenders}"


def test_retarget_is_plain_numpy():
    allowed = {"numpy", "handmocap", "__future__"} | set(sys.stdlib_module_names)
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) - allowed)
        for p in _product_files("retarget")
        if _imports(p) - allowed
    }
    assert not offenders, f"retarget/ must run inside Blender's Python: {offenders}"
    heavy = {
        str(p.relative_to(ROOT)) for p in _product_files("retarget") if _imports(p) & ENGINE_ONLY
    }
    assert not heavy


def test_the_layering_scan_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import bpy\nfrom mathutils import Matrix\n")
    assert _imports(bad) & BLENDER_MODULES == {"bpy", "mathutils"}
