#!/usr/bin/env python3
"""The one entry point for handmocap: setup, models, render, demo, test, bench, clean.

Runs with the system ``python3`` and the standard library only. Every subcommand works from the
repository root (the folder of this file) whatever the current directory is.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
LOCK = ROOT / "requirements" / "lock.txt"
PYPROJECT = ROOT / "pyproject.toml"
STAMP = VENV / ".handmocap-stamp"
OUT = ROOT / "out"
DIST = ROOT / "dist"
REQUIRED_PYTHON = (3, 11)
APT_PACKAGES = tuple(
    "libx11-6 libxkbcommon0 libgl1 libsm6 libxi6 libxxf86vm1 libxrender1 libxfixes3 libegl1 "
    "libassimp5".split()
)
# pip check's false report for the bpy wheel's platform tag (known, harmless).
PIP_CHECK_KNOWN = re.compile(r"^bpy \S+ is not supported on this platform$")
PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
DISK_FULL_TEXT = "no space left on device"
TAIL_BYTES = 64 * 1024
PASSTHROUGH = ("render", "test", "bench")


class UserError(Exception):
    """A problem the user can act on; the message says what to do."""


class StepFailed(Exception):
    """A subprocess of a step exited non-zero."""

    def __init__(self, step: str, cmd: Sequence[str], returncode: int, output: str = "") -> None:
        super().__init__(f"{step} failed (exit {returncode})")
        self.step = step
        self.cmd = list(cmd)
        self.returncode = returncode
        self.output = output


def say(message: str) -> None:
    print(f"[handmocap] {message}", flush=True)


def shell_join(cmd: Sequence[str | Path]) -> str:
    return shlex.join(str(part) for part in cmd)


def is_disk_full(exc: BaseException | None = None, output: str = "") -> bool:
    """True when ``exc`` is an ENOSPC error or ``output`` reports a full disk."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return DISK_FULL_TEXT in output.lower()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Give an interrupted child a moment to exit on its own SIGINT, then terminate it."""
    for action in (None, proc.terminate, proc.kill):
        if action is not None:
            action()
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    step: str,
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    echo: bool = True,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Run ``cmd`` in the repo root, streaming its output; return (exit code, output tail)."""
    argv = [str(part) for part in cmd]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except FileNotFoundError as exc:
        raise StepFailed(step, argv, 127, f"command not found: {argv[0]}") from exc
    tail = bytearray()
    try:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            tail += chunk
            del tail[:-TAIL_BYTES]
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        proc.stdout.close()
    code = 128 - code if code < 0 else code  # killed by a signal: shell convention
    output = tail.decode("utf-8", errors="replace")
    if check and code != 0:
        raise StepFailed(step, argv, code, output)
    return code, output


def apt_package_present(name: str) -> bool:
    result = subprocess.run(["dpkg", "-s", name], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "Status: install ok installed" in result.stdout


def missing_apt_packages(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    return [name for name in packages if not apt_package_present(name)]


def ensure_system_packages() -> None:
    if shutil.which("dpkg") is None:
        say("setup: no dpkg (not Debian/Ubuntu): skipping system packages; see README")
        return
    missing = missing_apt_packages()
    if not missing:
        say("setup: system packages ok")
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        say(f"setup: missing system packages: {' '.join(missing)}")
        say(f"setup: install them with: sudo apt-get update && sudo {shell_join(install)}")
        say("setup: continuing without them (Blender rendering and the FBX test reader may fail)")
        return
    say(f"setup: installing system packages: {' '.join(missing)}")
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    run("setup: apt-get update", ["apt-get", "update"], env=apt_env)
    run("setup: apt-get install", install, env=apt_env)


def venv_python_version(venv: Path = VENV) -> str | None:
    """The ``version`` recorded in the venv's pyvenv.cfg, or None when there is none."""
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file():
        return None
    for line in cfg.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip()
    return None


def ensure_venv() -> None:
    wanted = ".".join(map(str, REQUIRED_PYTHON))
    version = venv_python_version()
    if VENV_PY.exists() and version is not None:
        if not version.startswith(wanted + "."):
            raise UserError(
                f".venv uses Python {version}, handmocap needs {wanted}. "
                f"Run `python3 build.py clean` with a Python {wanted} interpreter, then setup."
            )
        say(f"setup: venv ok (.venv, Python {version})")
        return
    if sys.version_info[:2] != REQUIRED_PYTHON:
        raise UserError(
            f"handmocap needs Python {wanted} to create .venv, but this is Python "
            f"{sys.version.split()[0]} ({sys.executable}). Run build.py with python{wanted}, "
            f"e.g. `python{wanted} build.py setup`."
        )
    say(f"setup: creating .venv with {sys.executable}")
    run("setup: create venv", [sys.executable, "-m", "venv", "--clear", VENV])


def read_lock(path: Path = LOCK) -> list[str]:
    """The requirement lines of the lock file (comments and blank lines dropped)."""
    lines = (
        line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
    )
    return [line for line in lines if line]


def check_lock(requirements: Sequence[str]) -> None:
    """Every requirement must be pinned with ``==``; torch must be there (never unpinned)."""
    loose = [req for req in requirements if not PIN_RE.match(req)]
    if loose:
        raise UserError(f"{LOCK.relative_to(ROOT)}: not pinned with ==: {', '.join(loose)}")
    if not any(req.lower().startswith("torch==") for req in requirements):
        raise UserError(f"{LOCK.relative_to(ROOT)}: torch must be pinned (torch==X.Y.Z)")


def requirements_digest(lock: Path = LOCK, pyproject: Path = PYPROJECT) -> str:
    """sha256 over lock.txt and pyproject.toml: the stamp that lets setup skip pip."""
    digest = hashlib.sha256()
    for path in (lock, pyproject):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stamp_is_current(stamp: Path, digest: str) -> bool:
    try:
        return stamp.read_text(encoding="utf-8").strip() == digest
    except FileNotFoundError:
        return False


def pip_check() -> None:
    code, output = run("setup: pip check", [VENV_PY, "-m", "pip", "check"], check=False, echo=False)
    problems = [
        line
        for line in output.splitlines()
        if line.strip()
        and not PIP_CHECK_KNOWN.match(line.strip())
        and not line.startswith("No broken requirements")
    ]
    if code != 0 and problems:
        print(output, end="")
        raise StepFailed("setup: pip check", [VENV_PY, "-m", "pip", "check"], code, output)


def ensure_requirements() -> None:
    check_lock(read_lock())
    digest = requirements_digest()
    if stamp_is_current(STAMP, digest):
        say("setup: python packages ok (cached)")
        return
    say(f"setup: installing python packages from {LOCK.relative_to(ROOT)} (minutes the first time)")
    pip = [VENV_PY, "-m", "pip"]
    run("setup: pip install", [*pip, "install", "-q", "-r", LOCK])
    say("setup: installing handmocap itself (editable)")
    editable = [*pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", "."]
    run("setup: pip install -e .", editable)
    pip_check()
    STAMP.write_text(digest + "\n", encoding="utf-8")
    say("setup: python packages ok")


def cmd_setup(extra: Sequence[str] = ()) -> int:
    """Install system packages, create .venv, install the pinned Python packages."""
    ensure_system_packages()
    ensure_venv()
    ensure_requirements()
    return 0


def cmd_models(extra: Sequence[str] = ()) -> int:
    """Setup, then build the model assets (hand mesh, weights) into the user cache."""
    cmd_setup()
    say("models: building assets")
    run("models", [VENV_PY, "-m", "handmocap.models.build_assets"])
    return 0


def passthrough(step: str, module: str, extra: Sequence[str]) -> int:
    cmd_models()
    say(f"{step}: python -m {module} {shell_join(extra)}".rstrip())
    run(step, [VENV_PY, "-m", module, *extra])
    return 0


def cmd_render(extra: Sequence[str] = ()) -> int:
    """Setup + models, then render synthetic clips (args go to bench.synth.render_clip)."""
    return passthrough("render", "bench.synth.render_clip", extra)


def cmd_bench(extra: Sequence[str] = ()) -> int:
    """Setup + models, then the benchmarks (args go to python -m bench)."""
    return passthrough("bench", "bench", extra)


def cmd_demo(extra: Sequence[str] = ()) -> int:
    """Setup + models, then the demo end to end into out/demo: render the demo clip (with
    its ground truth), capture it with the engine (a take and an overlay video), key the take
    onto a rigged hand in Blender, and save that as a .blend and FBX."""
    cmd_models()
    say("demo: render, capture and key the demo clip into out/demo")
    run("demo", [VENV_PY, "-m", "bench.demo", "--out", "out/demo"])
    say(f"demo: done; outputs are under {OUT / 'demo'}")
    return 0


ADDON_SOURCES = ("*.py", "blender_manifest.toml")


def build_addon(dest: Path = DIST) -> Path:
    """The Blender extension zip: the add-on's files, the handmocap wheel it bundles, the
    ``engine/`` folder Set Up Engine installs from (the wheel again and requirements/lock.txt),
    and the engine interpreter to default to. Built with the extension builder that ships in the bpy
    wheel.

    The wheel is the whole handmocap distribution, inference/ and models/ included. Blender's
    Python imports only its numpy parts (handmocap, handmocap.take, handmocap.retarget); the
    engine runs as a child process of its own interpreter, where handmocap is installed with
    its dependencies (by default the one recorded in ``engine_defaults.json``)."""
    staging = ROOT / "build" / "addon"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "wheels").mkdir(parents=True)
    for pattern in ADDON_SOURCES:
        for path in sorted((ROOT / "blender_addon").glob(pattern)):
            shutil.copy2(path, staging / path.name)
    run("addon: wheel", [VENV_PY, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                         "-q", "-w", staging / "wheels"], echo=False)  # fmt: skip
    manifest = (staging / "blender_manifest.toml").read_text()
    wheels = sorted(p.name for p in (staging / "wheels").glob("*.whl"))
    # What Set Up Engine installs into the engine's own venv (blender_addon/engine_setup.py,
    # bundled_inputs): the same wheel and the pinned lock, used as pip constraints.
    (staging / "engine").mkdir()
    for name in wheels:
        shutil.copy2(staging / "wheels" / name, staging / "engine" / name)
    shutil.copy2(LOCK, staging / "engine" / LOCK.name)
    for name in wheels:
        if f"./wheels/{name}" not in manifest:
            raise StepFailed("addon: manifest", [f"wheels/{name} is not listed in "
                             "blender_addon/blender_manifest.toml"], 1, "")  # fmt: skip
    (staging / "engine_defaults.json").write_text(
        json.dumps({"engine_python": str(VENV_PY)}, indent=2) + "\n"
    )
    builders = sorted(VENV.glob("lib/python3*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/"
                                "blender_ext.py"))  # fmt: skip
    if not builders:
        raise StepFailed("addon: builder", ["blender_ext.py not found in the bpy wheel"], 1, "")
    dest.mkdir(parents=True, exist_ok=True)
    run("addon: build", [VENV_PY, builders[-1], "build", "--source-dir", staging,
                         "--output-dir", dest], echo=False)  # fmt: skip
    version = re.search(r'^version = "([^"]+)"', manifest, re.M).group(1)
    return dest / f"handmocap-{version}.zip"


def cmd_addon(extra: Sequence[str] = ()) -> int:
    """Setup, then build the Blender extension zip into dist/."""
    cmd_setup()
    zip_path = build_addon()
    say(f"addon: {zip_path.relative_to(ROOT)} (Blender: Edit > Preferences > Get Extensions > "
        "Install from Disk)")  # fmt: skip
    return 0


def cmd_test(extra: Sequence[str] = ()) -> int:
    """Setup + models, then ruff check and pytest (args go to pytest)."""
    cmd_models()
    say("test: ruff check .")
    ruff_cmd = [VENV_PY, "-m", "ruff", "check", "."]
    ruff_code, _ = run("test: ruff", ruff_cmd, check=False)
    say("test: pytest")
    pytest_cmd = [VENV_PY, "-m", "pytest", "-q", *extra]
    code, output = run("test: pytest", pytest_cmd, check=False)
    if code == 5:
        say(f"test: FAILED: pytest collected no tests (exit 5); command: {shell_join(pytest_cmd)}")
        return 5
    if code != 0:
        raise StepFailed("test: pytest", pytest_cmd, code, output)
    if ruff_code != 0:
        say(f"test: FAILED: ruff found problems; command: {shell_join(ruff_cmd)}")
        return ruff_code
    say("test: all passed (ruff and pytest)")
    return 0


def cmd_clean(extra: Sequence[str] = ()) -> int:
    """Remove .venv, out/, build/ and dist/."""
    removed = [
        path for path in (VENV, OUT, ROOT / "build", DIST) if path.exists() or path.is_symlink()
    ]
    for path in removed:
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path)
        say(f"clean: removed {path.relative_to(ROOT)}/")
    if not removed:
        say("clean: nothing to remove")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    func.__name__.removeprefix("cmd_"): func
    for func in (
        cmd_setup,
        cmd_models,
        cmd_addon,
        cmd_render,
        cmd_demo,
        cmd_test,
        cmd_bench,
        cmd_clean,
    )
}


class FriendlyParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        valid = ", ".join(COMMANDS)
        if "invalid choice" in message:
            found = re.search(r"invalid choice: '([^']*)'", message)
            name = found.group(1) if found else "?"
            message = f"unknown subcommand '{name}'"
        self.print_usage(sys.stderr)
        hint = "run `python3 build.py --help` for what each one does"
        self.exit(2, f"build.py: {message}\nvalid subcommands: {valid}\n{hint}\n")


def build_parser() -> FriendlyParser:
    parser = FriendlyParser(
        prog="python3 build.py", description="handmocap build, test and demo entry point."
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", title="subcommands")
    for name, func in COMMANDS.items():
        help_text = (func.__doc__ or "").rstrip(".")
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name in PASSTHROUGH:
            command.add_argument("args", nargs=argparse.REMAINDER, help="passed through")
    return parser


def parse_args(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(subcommand, pass-through args). Everything after render/test/bench is passed on verbatim."""
    parser = build_parser()
    if argv and argv[0] in PASSTHROUGH:
        parser.parse_args(argv[:1])
        extra = list(argv[1:])
        return argv[0], extra[1:] if extra[:1] == ["--"] else extra
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        parser.exit(2, f"\nbuild.py: name a subcommand: {', '.join(COMMANDS)}\n")
    return args.command, []


def report_failure(exc: StepFailed) -> int:
    if is_disk_full(output=exc.output):
        report_disk_full(exc.step)
    else:
        say(f"FAILED at step '{exc.step}' (exit {exc.returncode})")
        say(f"command: {shell_join(exc.cmd)}")
    return exc.returncode or 1


def report_disk_full(step: str) -> None:
    say(f"FAILED: the disk is full (No space left on device) during '{step}'.")
    say("Free some space and run again: e.g. `pip cache purge`, ~/.cache/handmocap, or")
    say("`python3 build.py clean` (removes .venv and out/).")


def main(argv: Sequence[str] | None = None) -> int:
    os.chdir(ROOT)
    try:
        command, extra = parse_args(sys.argv[1:] if argv is None else argv)
        return COMMANDS[command](extra)
    except KeyboardInterrupt:
        print("\n[handmocap] interrupted", file=sys.stderr, flush=True)
        return 130
    except StepFailed as exc:
        return report_failure(exc)
    except UserError as exc:
        say(f"error: {exc}")
        return 1
    except OSError as exc:
        if is_disk_full(exc):
            report_disk_full("build.py")
        else:
            say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
