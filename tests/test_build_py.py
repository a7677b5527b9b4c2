"""build.py: the command line (as a subprocess) and its lock/stamp/disk-full logic (imported).

Nothing here runs `setup`: the subprocess cases stop at argument parsing.
"""

from __future__ import annotations

import errno
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_PY = ROOT / "build.py"
SUBCOMMANDS = ("setup", "models", "addon", "render", "demo", "test", "bench", "clean")


def system_python() -> str:
    python3 = shutil.which("python3")
    if python3 is None:
        pytest.skip("no python3 on PATH")
    return python3


def run_build(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_python(), str(BUILD_PY), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("handmocap_build_py", BUILD_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_unknown_subcommand_exits_2_and_names_the_valid_ones(tmp_path: Path) -> None:
    result = run_build("frobnicate", cwd=tmp_path)  # from another folder: build.py finds its root
    assert result.returncode == 2
    assert "unknown subcommand 'frobnicate'" in result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_subcommand(tmp_path: Path) -> None:
    result = run_build("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f"    {name} " in result.stdout


def test_no_subcommand_is_an_error_that_lists_them(tmp_path: Path) -> None:
    result = run_build(cwd=tmp_path)
    assert result.returncode == 2
    assert "name a subcommand: " + ", ".join(SUBCOMMANDS) in result.stderr


def test_parse_args_passes_everything_after_the_subcommand_through(build: ModuleType) -> None:
    assert build.parse_args(["test", "-k", "rotations", "-x"]) == (
        "test",
        ["-k", "rotations", "-x"],
    )
    assert build.parse_args(["render", "--", "--frames", "3"]) == ("render", ["--frames", "3"])
    assert build.parse_args(["clean"]) == ("clean", [])


def test_the_committed_lock_is_fully_pinned_with_torch_exact(build: ModuleType) -> None:
    requirements = build.read_lock()
    build.check_lock(requirements)
    assert "torch==2.13.0" in requirements
    names = {req.split("==")[0].lower() for req in requirements}
    assert "handmocap" not in names
    assert "setuptools" in names  # torch needs it and pip freeze leaves it out
    assert not any(req.startswith("-e") for req in requirements)


@pytest.mark.parametrize("bad", ["torch", "torch>=2.13", "numpy~=1.26"])
def test_check_lock_rejects_loose_requirements(build: ModuleType, bad: str) -> None:
    with pytest.raises(build.UserError, match="not pinned"):
        build.check_lock(["numpy==1.26.4", bad])


def test_check_lock_requires_torch(build: ModuleType) -> None:
    with pytest.raises(build.UserError, match="torch"):
        build.check_lock(["numpy==1.26.4"])


def test_read_lock_drops_comments_and_blank_lines(build: ModuleType, tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\n\nnumpy==1.26.4  # why\ntorch==2.13.0\n", encoding="utf-8")
    assert build.read_lock(lock) == ["numpy==1.26.4", "torch==2.13.0"]


def test_stamp_follows_lock_and_pyproject(build: ModuleType, tmp_path: Path) -> None:
    lock, pyproject, stamp = tmp_path / "lock.txt", tmp_path / "pyproject.toml", tmp_path / "stamp"
    lock.write_text("torch==2.13.0\n", encoding="utf-8")
    pyproject.write_text('[project]\nname = "handmocap"\n', encoding="utf-8")
    first = build.requirements_digest(lock, pyproject)
    assert len(first) == 64 and first == build.requirements_digest(lock, pyproject)
    assert not build.stamp_is_current(stamp, first)  # no stamp yet: pip runs
    stamp.write_text(first + "\n", encoding="utf-8")
    assert build.stamp_is_current(stamp, first)

    lock.write_text("torch==2.13.0\nnumpy==1.26.4\n", encoding="utf-8")
    second = build.requirements_digest(lock, pyproject)
    assert second != first and not build.stamp_is_current(stamp, second)

    pyproject.write_text('[project]\nname = "handmocap"\nversion = "0.2"\n', encoding="utf-8")
    assert build.requirements_digest(lock, pyproject) not in (first, second)


def test_disk_full_classification(build: ModuleType) -> None:
    assert build.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not build.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not build.is_disk_full(ValueError("no"))
    pip_tail = (
        "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"
    )
    assert build.is_disk_full(output=pip_tail)
    assert not build.is_disk_full(output="ERROR: No matching distribution found for torch")


def test_step_failure_reports_step_and_command(
    build: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = build.StepFailed("setup: pip install", ["pip", "install", "x"], 3, "boom")
    assert build.report_failure(failure) == 3
    out = capsys.readouterr().out
    assert "setup: pip install" in out and "pip install x" in out

    full = build.StepFailed("setup: pip install", ["pip"], 1, "OSError: No space left on device")
    assert build.report_failure(full) == 1
    assert "free some space" in capsys.readouterr().out.lower()


def test_run_returns_exit_code_and_output_tail(build: ModuleType) -> None:
    code, output = build.run("t", [sys.executable, "-c", "print('hi')"], echo=False)
    assert (code, output.strip()) == (0, "hi")
    with pytest.raises(build.StepFailed) as info:
        build.run("t", [sys.executable, "-c", "raise SystemExit(4)"], echo=False)
    assert info.value.returncode == 4


def test_missing_apt_packages_reports_an_unknown_package(build: ModuleType) -> None:
    if shutil.which("dpkg") is None:
        pytest.skip("not a Debian system")
    assert build.missing_apt_packages(["handmocap-no-such-package"]) == [
        "handmocap-no-such-package"
    ]
