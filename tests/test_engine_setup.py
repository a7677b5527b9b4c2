"""Set Up Engine without Blender (blender_addon/engine_setup.py, stdlib only): a venv is made
from a base Python, the engine wheel installed under the pinned lock, verified, its models
built, and swapped in; failures name the problem and leave the previous engine in place.

Most tests use a fake base Python: a shell script that answers the version check, "makes a
venv" by copying itself, and plays pip and the engine as its config file says. One test makes
a real venv with this machine's Python 3.11 and installs a tiny local wheel (no network)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import pytest
from processes import process_gone

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX fakes (shell scripts)")


def _setup_module():
    # plain Python; loaded without the add-on package (whose __init__ needs bpy)
    path = ROOT / "blender_addon" / "engine_setup.py"
    spec = importlib.util.spec_from_file_location("hm_engine_setup", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


es = _setup_module()

FAKE = r"""#!/bin/sh
. "@CONF@"
echo "$*" >> "@CALLS@"
here=$(cd "$(dirname "$0")/.." && pwd)
case "$1 $2" in
  "-c "*) echo "$VERSION"; exit 0 ;;
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0 ;;
  "-m pip")
    case "$PIP" in
      ok) echo "Collecting handmocap"; echo "Collecting numpy==1.26.4";
          echo "Installing collected packages: numpy, handmocap";
          echo "Successfully installed handmocap-0.1.0 numpy-1.26.4";
          echo "$MARK" > "$here/installed"; exit 0 ;;
      network) echo "Collecting numpy==1.26.4";
          echo "  WARNING: Retrying after connection broken by 'NewConnectionError(\
: Failed to establish a new connection: [Errno 101] Network is unreachable')'";
          echo "ERROR: Could not find a version that satisfies the requirement numpy==1.26.4";
          exit 1 ;;
      disk) echo "Collecting torch==2.13.0";
          echo "ERROR: Could not install packages due to an OSError: [Errno 28] \
No space left on device";
          exit 1 ;;
      sleep) sleep 300 & echo $! > "@PIDS@"; echo "Collecting torch==2.13.0"; wait; exit 0 ;;
    esac ;;
  "-m handmocap.inference")
    case "$3" in
      info) [ -f "$here/installed" ] || { echo "No module named handmocap" >&2; exit 1; }
            echo "{\"version\": \"0.1.0\", \"device\": \"$DEVICE\", \
\"provider\": \"P\", \"models_built\": true}"; exit 0 ;;
      models) echo "models ok"; exit 0 ;;
    esac ;;
esac
echo "fake python: unexpected $*" >&2; exit 3
"""


class Fake:
    """A fake base Python and the files a set-up is given."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "fake"
        self.dir.mkdir()
        self.conf, self.calls, self.pids = (self.dir / n for n in ("conf", "calls", "pids"))
        self.python = self.dir / "python3.11"
        script = FAKE.replace("@CONF@", str(self.conf)).replace("@CALLS@", str(self.calls))
        self.python.write_text(script.replace("@PIDS@", str(self.pids)))
        self.python.chmod(0o755)
        self.configure()
        self.wheel = tmp_path / "handmocap-0.1.0-py3-none-any.whl"
        self.wheel.write_bytes(b"a wheel")
        self.lock = tmp_path / "lock.txt"
        self.lock.write_text("# pins\nnumpy==1.26.4\ntorch==2.13.0\n")
        self.target = tmp_path / "user" / "handmocap"

    def configure(self, version="3.11.9", pip="ok", device="cpu", mark="first") -> None:
        self.conf.write_text(f"VERSION={version}\nPIP={pip}\nDEVICE={device}\nMARK={mark}\n")

    def inputs(self, **changes):
        values = dict(base_python=str(self.python), target=self.target, wheel=self.wheel,
                      requirements=self.lock, accelerator="cpu")  # fmt: skip
        values.update(changes)
        return es.SetupInputs(**values)

    def pip_calls(self) -> list[str]:
        text = self.calls.read_text() if self.calls.exists() else ""
        return [line for line in text.splitlines() if line.startswith("-m pip")]


def _run(fake: Fake, **changes):
    runner = es.SetupRunner()
    runner.start(fake.inputs(**changes))
    result = runner.wait(60)
    assert result.finished and not result.running
    return result


@pytest.fixture
def fake(tmp_path) -> Fake:
    return Fake(tmp_path)


def test_success_swaps_the_engine_in_and_returns_its_interpreter(fake):
    result = _run(fake)
    engine_python = fake.target / "engine" / "bin" / "python"
    assert result.error is None, result.error
    assert result.python == str(engine_python) and engine_python.is_file()
    assert result.fraction == 1.0 and not result.fast
    assert not (fake.target / "engine.staging").exists()
    assert not (fake.target / "engine.previous").exists()
    record = json.loads((fake.target / "engine.json").read_text())
    assert record["wheel_sha256"] == es.file_sha256(fake.wheel)
    assert record["requirements_sha256"] == es.file_sha256(fake.lock)
    assert record["accelerator"] == "cpu"
    assert (
        record["index_args_sha256"]
        == es.make_plan(fake.inputs()).fingerprint()["index_args_sha256"]
    )
    assert es.PYTORCH_CPU_INDEX not in json.dumps(record)
    # pip got the lock as constraints, the choice's index and the wheel
    (pip,) = fake.pip_calls()
    assert f"-c {fake.lock}" in pip and es.PYTORCH_CPU_INDEX in pip and str(fake.wheel) in pip
    calls = fake.calls.read_text()
    assert "handmocap.inference info --json --device auto" in calls
    assert "handmocap.inference models" in calls
    assert result.accelerator == "cpu" and "chosen" in result.accelerator_reason
    assert any("Successfully installed" in line for line in result.log_tail)


def test_second_run_with_the_same_inputs_is_fast_and_runs_no_pip(fake):
    assert _run(fake).error is None
    fake.calls.unlink()
    started = time.monotonic()
    result = _run(fake)
    assert result.error is None and result.fast
    assert result.python == str(fake.target / "engine" / "bin" / "python")
    assert fake.pip_calls() == [] and "-m venv" not in fake.calls.read_text()
    assert time.monotonic() - started < 5.0
    # other pip arguments are a new input, and so is a new wheel: pip runs again
    assert not _run(fake, pip_args=("--index-url", "https://mirror.example/simple")).fast
    fake.wheel.write_bytes(b"another wheel")
    assert not _run(fake).fast and len(fake.pip_calls()) == 2


def test_online_access_off_is_refused_with_the_way_out(fake):
    runner = es.SetupRunner()
    with pytest.raises(es.SetupError) as err:
        runner.start(fake.inputs(online_access=False))
    assert err.value.kind == "offline"
    assert "Allow Online Access" in str(err.value) and "Engine Python" in str(err.value)
    assert not runner.running and not fake.calls.exists()


def _install_previous(fake: Fake) -> Path:
    """A working engine from an earlier set-up (another wheel)."""
    assert _run(fake).error is None
    fake.wheel.write_bytes(b"a newer wheel")
    return fake.target / "engine" / "installed"


def test_unreachable_registry_names_it_and_keeps_the_previous_engine(fake):
    marker = _install_previous(fake)
    record = (fake.target / "engine.json").read_text()
    fake.configure(pip="network", mark="second")
    result = _run(fake)
    assert result.error_kind == "network" and result.python is None
    assert "package registry could not be reached" in result.error
    assert "Extra pip arguments" in result.error
    assert marker.read_text().strip() == "first"  # the old engine, untouched
    assert (fake.target / "engine.json").read_text() == record
    assert not (fake.target / "engine.staging").exists()


def test_disk_full_is_named(fake):
    marker = _install_previous(fake)
    fake.configure(pip="disk")
    result = _run(fake)
    assert result.error_kind == "disk_full"
    assert "No space left on device" in result.error and "free some space" in result.error
    assert marker.read_text().strip() == "first"
    assert not (fake.target / "engine.staging").exists()


def _wait_for(predicate, timeout_s=20.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_cancel_mid_install_kills_the_group_and_removes_staging(fake):
    fake.configure(pip="sleep")
    runner = es.SetupRunner()
    runner.start(fake.inputs())
    _wait_for(lambda: fake.pids.exists() and fake.pids.read_text().strip())
    _wait_for(lambda: runner.snapshot().step == "installing packages")
    grandchild = int(fake.pids.read_text())
    assert (fake.target / "engine.staging").is_dir()
    started = time.monotonic()
    runner.cancel()
    result = runner.wait(5)
    assert time.monotonic() - started < 2.0
    assert result.finished and result.error_kind == "cancelled" and result.python is None
    time.sleep(0.2)
    assert process_gone(grandchild)
    assert not (fake.target / "engine.staging").exists()
    assert not (fake.target / "engine").exists()


def test_a_second_start_while_one_runs_is_refused(fake):
    fake.configure(pip="sleep")
    runner = es.SetupRunner()
    runner.start(fake.inputs())
    try:
        for other in (runner, es.SetupRunner()):  # same runner, or another one on the folder
            with pytest.raises(es.SetupError, match="already running") as err:
                other.start(fake.inputs())
            assert err.value.kind == "busy"
    finally:
        _wait_for(lambda: fake.pids.exists() and fake.pids.read_text().strip())
        runner.cancel()
        runner.wait(5)
    assert not runner.running


def test_wrong_python_is_refused_with_the_version_found(fake):
    fake.configure(version="3.10.12")
    result = _run(fake)
    assert result.error_kind == "python"
    assert "needs Python 3.11" in result.error and "Python 3.10.12" in result.error
    assert "Blender 4.2" in result.error
    assert not (fake.target / "engine").exists() and "-m venv" not in fake.calls.read_text()


def test_cuda_must_be_what_the_probe_reports(fake):
    result = _run(fake, accelerator="cuda")  # the fake probe says cpu
    assert result.error_kind == "verify" and "cannot run on the GPU" in result.error
    assert not (fake.target / "engine").exists()
    fake.configure(device="cuda")
    result = _run(fake, accelerator="cuda")
    assert result.error is None and result.accelerator == "cuda"
    assert "--device cuda" in fake.calls.read_text()


def test_plan_auto_detects_nvidia_and_user_pip_args_win(fake, tmp_path):
    proc = tmp_path / "nvidia_version"
    assert es.detect_nvidia(lambda name: None, proc) is None
    assert "nvidia-smi" in es.detect_nvidia(lambda name: "/usr/bin/nvidia-smi", proc)
    proc.write_text("NVRM version: 550")
    assert str(proc) in es.detect_nvidia(lambda name: None, proc)

    plan = es.make_plan(fake.inputs(accelerator="auto"), detect=lambda: "driver found")
    assert plan.accelerator == "cuda" and plan.probe_device == "cuda"
    assert plan.index_args == ("--extra-index-url", es.PYTORCH_CUDA_INDEX)
    plan = es.make_plan(fake.inputs(accelerator="auto"), detect=lambda: None)
    assert plan.accelerator == "cpu" and "no NVIDIA driver" in plan.accelerator_reason
    mirror = ("--index-url", "https://mirror.example/simple")
    plan = es.make_plan(fake.inputs(pip_args=mirror))
    assert plan.index_args == mirror and plan.index_reason == "your pip arguments"
    with pytest.raises(es.SetupError, match="unknown accelerator"):
        es.make_plan(fake.inputs(accelerator="rocm"))
    with pytest.raises(es.SetupError, match="engine wheel is missing"):
        es.make_plan(fake.inputs(wheel=tmp_path / "nope.whl"))


def test_venv_python_paths_per_platform(tmp_path):
    assert es.venv_python(tmp_path, windows=True) == tmp_path / "Scripts" / "python.exe"
    assert es.venv_python(tmp_path, windows=False) == tmp_path / "bin" / "python"


def test_bundled_inputs_are_found_in_the_engine_folder(tmp_path):
    assert es.bundled_inputs(tmp_path) == (None, None)
    (tmp_path / "engine").mkdir()
    wheel = tmp_path / "engine" / "handmocap-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"w")
    (tmp_path / "engine" / "lock.txt").write_text("numpy==1.26.4\n")
    assert es.bundled_inputs(tmp_path) == (wheel, tmp_path / "engine" / "lock.txt")


def _tiny_wheel(folder: Path) -> Path:
    """A real wheel named handmocap whose ``python -m handmocap.inference`` answers ``info
    --json`` and ``models`` as the engine does (no dependencies, no network)."""
    main = (
        "import json, sys\n"
        "if sys.argv[1] == 'info':\n"
        "    print(json.dumps({'version': '0.1.0', 'device': 'cpu', 'provider': 'CPU',\n"
        "                      'models_built': True}))\n"
        "else:\n"
        "    print('models built')\n"
    )
    info = "handmocap-0.1.0.dist-info"
    files = {
        "handmocap/__init__.py": "",
        "handmocap/inference/__init__.py": "",
        "handmocap/inference/__main__.py": main,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: handmocap\nVersion: 0.1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    wheel = folder / "handmocap-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return wheel


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the set-up requires Python 3.11")
def test_a_real_venv_installs_a_local_wheel(tmp_path):
    """The venv and pip plumbing for real: Python 3.11 makes the venv, pip installs the
    local wheel offline, the engine's module answers, and the venv works after the rename."""
    lock = tmp_path / "lock.txt"
    lock.write_text("handmocap==0.1.0\n")
    inputs = es.SetupInputs(
        base_python=sys.executable, target=tmp_path / "user", wheel=_tiny_wheel(tmp_path),
        requirements=lock, accelerator="cpu", pip_args=("--no-index",),
    )  # fmt: skip
    runner = es.SetupRunner()
    started = time.monotonic()
    runner.start(inputs)
    result = runner.wait(120)
    assert result.error is None, "\n".join(result.log_tail)
    python = Path(result.python)
    assert python == tmp_path / "user" / "engine" / "bin" / "python" and python.exists()
    assert os.access(python, os.X_OK)
    assert any("Successfully installed handmocap-0.1.0" in ln for ln in result.log_tail)
    print(f"real venv set-up took {time.monotonic() - started:.1f} s")
    again = es.SetupRunner()
    again.start(inputs)
    assert again.wait(60).fast


# Blender's side: the operators in the installed extension (bpy, a throw-away user folder).
# Timers do not fire in background mode, so the script calls the add-on's poll function itself.
BLENDER_SCRIPT = r"""
import json, os, shutil, sys, time
from pathlib import Path
import bpy

zip_path, tiny_wheel = sys.argv[1:3]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                         enable_on_install=True)
from bl_ext.user_default.handmocap import preferences as p

prefs = bpy.context.preferences.addons["bl_ext.user_default.handmocap"].preferences
out = {"ops": dir(bpy.ops.handmocap), "before": prefs.engine_python}
bpy.context.preferences.system.use_online_access = False
try:
    out["offline"] = sorted(bpy.ops.handmocap.setup_engine())
except RuntimeError as err:
    out["offline"] = str(err)
out["offline_outcome"] = p.EngineSetup.outcome
out["after_offline"] = prefs.engine_python

bpy.context.preferences.system.use_online_access = True
for old in (p.ADDON_DIR / "engine").glob("*.whl"):
    old.unlink()
shutil.copy(tiny_wheel, p.ADDON_DIR / "engine")
(p.ADDON_DIR / "engine" / "lock.txt").write_text("handmocap==0.1.0\n")
prefs.engine_accelerator = "CPU"
prefs.engine_pip_args = "--no-index"
out["started"] = sorted(bpy.ops.handmocap.setup_engine())
out["cancel_poll_running"] = bpy.ops.handmocap.cancel_engine_setup.poll()
end = time.monotonic() + 120
while p._poll_setup() is not None and time.monotonic() < end:
    time.sleep(0.1)
out["outcome"] = p.EngineSetup.outcome
out["engine_python"] = prefs.engine_python
out["target"] = bpy.utils.extension_path_user("bl_ext.user_default.handmocap")
p.EngineCheck.wait(60)
out["check"] = p.EngineCheck.message
out["cancel_poll_idle"] = bpy.ops.handmocap.cancel_engine_setup.poll()
print("RESULT " + json.dumps(out), flush=True)
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.blender
def test_blender_operators_refuse_offline_and_store_the_interpreter_on_success(tmp_path):
    if importlib.util.find_spec("bpy") is None:  # (not imported here: bpy stays out of pytest)
        pytest.skip("bpy (Blender as a Python module) is not installed")
    import subprocess

    spec = importlib.util.spec_from_file_location("build_for_setup_tests", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    zip_path = build.build_addon(tmp_path / "dist")
    script = tmp_path / "scenario.py"
    script.write_text(BLENDER_SCRIPT)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender_user")}
    env.pop("HANDMOCAP_ENGINE_PYTHON", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(zip_path), str(_tiny_wheel(wheels))],
        capture_output=True, text=True, timeout=300, env=env, check=False, cwd=tmp_path,
    )  # fmt: skip
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and found, (proc.stdout + proc.stderr)[-4000:]
    out = json.loads(found[-1][len("RESULT ") :])
    assert "setup_engine" in out["ops"] and "cancel_engine_setup" in out["ops"]
    # online access off: refused with the way out, the interpreter setting untouched
    assert "Allow Online Access" in str(out["offline"])
    assert out["offline_outcome"] == es.ONLINE_ACCESS_OFF
    assert out["after_offline"] == out["before"]
    # on: the set-up runs in the extension's user folder and, once verified, is stored
    assert out["started"] == ["FINISHED"] and out["cancel_poll_running"] is True
    assert out["outcome"] == "Engine set up", out["outcome"]
    target = Path(out["target"])
    assert str(target).startswith(str(tmp_path / "blender_user"))
    assert out["engine_python"] == str(target / "engine" / "bin" / "python")
    assert out["check"].startswith("handmocap 0.1.0 on cpu"), out["check"]
    assert out["cancel_poll_idle"] is False
