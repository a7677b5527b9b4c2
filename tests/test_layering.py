"""The dependency rule (docs/architecture.md, "Dependency rule"): bpy/mathutils only in
blender_addon/, bench/ and tests/; retarget/ imports numpy and the standard library only
(Blender ships numpy, not scipy)."""

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLENDER_MODULES = {"bpy", "mathutils", "bmesh", "bpy_extras"}
ENGINE_ONLY = {"torch", "onnxruntime", "mediapipe", "cv2", "smplx", "onnx", "tflite"}
# What Blender's Python lacks: no file that retarget/ or blender_addon/ imports, however
# indirectly, may import one of these.
NOT_IN_BLENDER = ENGINE_ONLY | {"scipy"}


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


def _package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Package name -> its folder, from pyproject's [tool.setuptools.package-dir] (how the
    distribution maps the top-level folders into the handmocap namespace)."""
    with (root / "pyproject.toml").open("rb") as f:
        table = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in table.items()}


def _module_file(module: str, dirs: dict[str, Path]) -> Path | None:
    """The file that runs when ``module`` is imported (a package's __init__.py), through the
    deepest mapped package that holds it; None for modules outside the mapping (numpy)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        folder = dirs.get(".".join(parts[:n]))
        if folder is not None:
            base = folder.joinpath(*parts[n:])
            for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
                if candidate.is_file():
                    return candidate
            return None
    return None


def _module_name(path: Path, dirs: dict[str, Path]) -> str | None:
    """The dotted name ``path`` is imported as; None outside the mapping (blender_addon/)."""
    holders = [name for name, folder in dirs.items() if path.is_relative_to(folder)]
    if not holders:
        return None
    package = max(holders, key=lambda name: len(dirs[name].parts))
    parts = path.relative_to(dirs[package]).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def _imported_modules(path: Path, dirs: dict[str, Path]) -> dict[str, bool]:
    """Dotted names ``path`` imports anywhere (function bodies too), relative imports
    resolved -> whether the name must be a module: ``from x import a`` gives x (True) and
    x.a (False: a may be a submodule or a name defined in x)."""
    module = _module_name(path, dirs)
    package = None
    if module is not None:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: dict[str, bool] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= dict.fromkeys((a.name for a in node.names), True)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                if not package:
                    continue  # a sibling outside the mapping: scanned as a root of its own
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            names[base] = True
            for a in node.names:
                names.setdefault(f"{base}.{a.name}", False)
    return names


def _reached(root: Path, dirs: dict[str, Path]) -> tuple[dict[Path, tuple[str, ...]], list[str]]:
    """(each file of the mapped packages that importing ``root`` runs -> the chain of
    modules that gets there, the chains ending in a module of the mapped namespace that
    has no file). Follows imports transitively, without importing anything, and runs every
    package's __init__.py on the way, as Python does (``import a.b.c`` runs a, a.b and
    a.b.c)."""
    found: dict[Path, tuple[str, ...]] = {root: ()}
    missing: list[str] = []
    namespace = {name.split(".")[0] for name in dirs}
    todo = [root]

    def visit(name: str, chain: tuple[str, ...], must_exist: bool) -> None:
        parts = name.split(".")
        for n in range(1, len(parts) + 1):
            module = ".".join(parts[:n])
            path = _module_file(module, dirs)
            if path is None and parts[0] in namespace and (must_exist or n < len(parts)):
                missing.append(" -> ".join((*chain, module)))
                return
            if path is not None and path not in found:
                found[path] = (*chain, module)
                todo.append(path)

    own = _module_name(root, dirs)
    if own is not None:
        visit(own.rpartition(".")[0], (), True)  # its own packages' __init__.py files
    while todo:
        path = todo.pop()
        for name, must_exist in sorted(_imported_modules(path, dirs).items()):
            visit(name, found[path], must_exist)
    del found[root]
    return found, missing


def _reaches(root: Path, forbidden: set[str], dirs: dict[str, Path]) -> list[str]:
    """ "chain -> module" for each ``forbidden`` top-level module that a file reached from
    ``root`` through the mapped packages imports (``root``'s own imports not counted), and
    "chain -> module (no such file)" where the scan cannot follow an import."""
    found, missing = _reached(root, dirs)
    return sorted(
        {" -> ".join((*chain, name))
         for path, chain in found.items()
         for name in _imports(path) & forbidden}
        | {f"{chain} (no such file)" for chain in missing}
    )  # fmt: skip


def test_bpy_stays_in_the_blender_layers():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & BLENDER_MODULES)
        for p in [
            *_product_files("inference", "retarget", "models", "take", "handmocap_pkg"),
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
    # nor through what its handmocap imports import, however indirectly
    dirs = _package_dirs()
    reached = {str(p.relative_to(ROOT)): _reaches(p, NOT_IN_BLENDER, dirs)
               for p in _product_files("retarget")}  # fmt: skip
    offenders = {path: chains for path, chains in reached.items() if chains}
    assert not offenders, f"retarget/ reaches what Blender's Python lacks: {offenders}"


def test_the_addon_reaches_only_what_blender_ships():
    """Everything blender_addon/ imports from handmocap (the wheel it bundles), however
    indirectly, runs in Blender's Python: no torch, onnxruntime, cv2, mediapipe or scipy."""
    dirs = _package_dirs()
    reached = {str(p.relative_to(ROOT)): _reaches(p, NOT_IN_BLENDER, dirs)
               for p in _product_files("blender_addon")}  # fmt: skip
    offenders = {path: chains for path, chains in reached.items() if chains}
    assert not offenders, f"blender_addon/ reaches what Blender's Python lacks: {offenders}"


def test_the_layering_scan_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import bpy\nfrom mathutils import Matrix\n")
    assert _imports(bad) & BLENDER_MODULES == {"bpy", "mathutils"}


def test_the_transitive_scan_sees_a_violation_imports_away(tmp_path):
    """A planted tree: packages mapped to folders as pyproject maps handmocap's; torch
    reached through a relative import, a function-level import and a package's
    __init__.py is found, with the chain that reaches it."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\npkg = "pkg_src"\n"pkg.engine" = "engine"\n'
    )
    files = {
        "addon/ui.py": "import bpy\nfrom pkg.maths import f\n",
        "addon/export.py": "from pkg.engine import clean\n",
        "pkg_src/__init__.py": "",
        "pkg_src/maths.py": "import numpy as np\n\nfrom .helpers import g\n",
        "pkg_src/helpers.py": "def g():\n    from pkg.engine.run import h\n\n    return h\n",
        "engine/__init__.py": "",
        "engine/clean.py": "import numpy\n",
        "engine/run.py": "import torch\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    dirs = _package_dirs(tmp_path)
    assert dirs == {"pkg": tmp_path / "pkg_src", "pkg.engine": tmp_path / "engine"}
    ui, export = tmp_path / "addon" / "ui.py", tmp_path / "addon" / "export.py"
    assert _reaches(ui, NOT_IN_BLENDER, dirs) == [
        "pkg.maths -> pkg.helpers -> pkg.engine.run -> torch"
    ]
    assert _reaches(export, NOT_IN_BLENDER, dirs) == []
    # a package's __init__.py runs for any module in it
    (tmp_path / "engine" / "__init__.py").write_text("import scipy.ndimage\n")
    assert _reaches(export, NOT_IN_BLENDER, dirs) == ["pkg.engine -> scipy"]
    # and the root's own package runs when the root is imported
    assert _reaches(tmp_path / "engine" / "clean.py", NOT_IN_BLENDER, dirs) == [
        "pkg.engine -> scipy"
    ]
    # a module of the namespace that has no file is not passed over: the scan cannot follow it
    (tmp_path / "addon" / "stale.py").write_text("from pkg.moved import thing\n")
    assert _reaches(tmp_path / "addon" / "stale.py", NOT_IN_BLENDER, dirs) == [
        "pkg.moved (no such file)"
    ]
