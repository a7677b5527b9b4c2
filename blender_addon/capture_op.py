# SPDX-License-Identifier: GPL-3.0-or-later
"""The Capture button: a modal operator around a :class:`CaptureSession`.

The engine runs as a child process; a timer polls it, its progress drives Blender's
progress bar and status text, Esc kills it. The scene is only touched once the take is in,
and an :class:`~.apply_take.AnimationSnapshot` puts the armature back on any failure, so a
cancelled or failed capture leaves the scene as it was (and its take file is deleted). Every
failure is one line in Blender's report. Without a window (background mode, scripts) the
same operator runs the session to the end before returning.

Takes go to ``//handmocap_takes`` next to a saved .blend, else to a private folder of the
user (the extension's user folder), never to a shared temporary directory; each capture
creates its own file (timestamp and random token, created exclusively).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import bpy

from handmocap.errors import HandmocapError
from handmocap.retarget.armature import RigError
from handmocap.retarget.rig_profiles import MAPPING_FORMAT, RigMapping, mapping_from_json
from handmocap.take import Take, load_take

from .apply_take import AnimationSnapshot, ApplyResult, apply_take
from .armature_io import detect_armature
from .engine import MOTION_PRIOR, CaptureRequest, EngineInfo, EngineRun, SmoothRequest
from .preferences import EngineCheck, addon_prefs


def resolve_mapping(obj: bpy.types.Object | None, settings) -> RigMapping:
    """The rig's hands: the mapping editor's rows when 'Custom mapping' is on, else the
    detected profile. Raises RigError with what to do."""
    if obj is None or obj.type != "ARMATURE":
        raise RigError("choose the armature to capture onto (Armature field of the panel)")
    if settings.use_custom_mapping:
        rows = [r for r in settings.mapping if r.bone]
        if not rows:
            raise RigError("the custom mapping is empty: fill it from the rig or turn it off")
        hands: dict[str, dict[str, str]] = {}
        for r in rows:
            hands.setdefault(r.side, {})[r.role] = r.bone
        text = json.dumps({"format": MAPPING_FORMAT, "version": 1, "label": "Custom mapping",
                           "hands": hands})  # fmt: skip
        return mapping_from_json(text, [b.name for b in obj.data.bones], "the custom mapping")
    return detect_armature(obj, settings.rig_side())


TAKES_NEXT_TO_BLEND = "//handmocap_takes"


def take_folder() -> Path:
    """Where a capture's take goes: ``//handmocap_takes`` next to the saved .blend, else a
    private folder of this user (see :func:`private_take_folder`). Raises HandmocapError
    when it cannot be created."""
    if not bpy.data.filepath:
        return private_take_folder()
    folder = Path(bpy.path.abspath(TAKES_NEXT_TO_BLEND))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HandmocapError(f"cannot create the take folder {folder}: "
                             f"{err.strerror or err}") from err  # fmt: skip
    return folder


def private_take_folder() -> Path:
    """The takes of unsaved .blend files: the extension's user folder (``takes``), else
    ``handmocap/takes`` in the user's cache folder; created readable by this user only."""
    folder = _extension_user_folder() or _user_cache_folder() / "handmocap" / "takes"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as err:
        raise HandmocapError(f"cannot create the take folder {folder}: "
                             f"{err.strerror or err}") from err  # fmt: skip
    if not stat.S_ISDIR(info.st_mode):
        raise HandmocapError(f"the take folder {folder} is not a folder (a link or a file is "
                             "in its way): remove it and capture again")  # fmt: skip
    if hasattr(os, "getuid"):
        if info.st_uid != os.getuid():
            raise HandmocapError(f"the take folder {folder} belongs to another user: remove "
                                 "it and capture again")  # fmt: skip
        if info.st_mode & 0o077:
            try:
                os.chmod(folder, 0o700)
            except OSError as err:
                raise HandmocapError(f"cannot make the take folder {folder} private: "
                                     f"{err.strerror or err}") from err  # fmt: skip
    return folder


def _extension_user_folder() -> Path | None:
    """``takes`` in Blender's user folder for this extension (4.2+), None when the add-on
    is not installed as an extension."""
    find = getattr(bpy.utils, "extension_path_user", None)
    if find is None or not __package__:
        return None
    try:
        path = find(__package__, path="takes")
    except (ValueError, TypeError, RuntimeError, KeyError):
        return None
    return Path(path) if path else None


def _user_cache_folder() -> Path:
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    if sys.platform == "darwin":
        return home / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache"


def new_take_path(folder: Path, stem: str) -> Path:
    """A new, empty file ``<stem>_<YYYYmmdd-HHMMSS>_<8 hex>.npz`` in ``folder``, created
    exclusively (an existing file or link of that name is never reused); the engine writes
    the take over it. ``stem`` is cut to 32 characters so Action names stay whole."""
    safe = re.sub(r"[^\w.-]+", "_", stem)[:32] or "take"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(16):
        path = folder / f"{safe}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(4)}.npz"
        try:
            os.close(os.open(path, flags, 0o600))
        except FileExistsError:
            continue
        except OSError as err:
            raise HandmocapError(f"cannot create a take file in {folder}: "
                                 f"{err.strerror or err}") from err  # fmt: skip
        return path
    raise HandmocapError(f"cannot create a take file in {folder}: no free name")


def read_take(path: Path) -> Take:
    """The engine's take, loaded and checked. Whatever is wrong with the file (empty,
    truncated, not a take) is a HandmocapError naming it."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise HandmocapError(f"the engine's take {path} cannot be read: {err.strerror or err}; "
                             "capture again") from err  # fmt: skip
    if size == 0:
        raise HandmocapError(f"the engine's take {path} is empty (0 bytes): the engine "
                             "stopped before writing it; capture again")  # fmt: skip
    try:
        return load_take(path)
    except HandmocapError:
        raise
    except Exception as err:  # damage the reader does not name itself
        raise HandmocapError(f"the engine's take {path} cannot be read ({type(err).__name__}: "
                             f"{err}): the file is damaged; capture again") from err  # fmt: skip


def engine_python(context: bpy.types.Context) -> str:
    """The engine interpreter the preferences name (a ``//`` path made absolute)."""
    return bpy.path.abspath(addon_prefs(context).engine_python)


def checked_engine(context: bpy.types.Context) -> EngineInfo | None:
    """What Check Engine reported, when it was about the interpreter the preferences name
    now (None before a check, or after the preferences changed to another one)."""
    info = EngineCheck.info
    python = engine_python(context)
    if info is None or not python:
        return None
    same = os.path.abspath(info.python) == os.path.abspath(os.path.expanduser(python))
    return info if same else None


def capture_hands(context: bpy.types.Context, hands: str) -> dict[str, object]:
    """The request's ``max_hands`` and ``hands`` for the panel's Hands choice (BOTH, LEFT,
    RIGHT). One side is sent as ``--hands``, with both hands followed, so the other hand
    cannot take the chosen one's place; only a checked engine older than that flag gets
    ``--max-hands 1`` instead (an unchecked one is taken to be the engine this add-on
    ships with)."""
    if hands == "BOTH":
        return {"max_hands": 2}
    info = checked_engine(context)
    if info is not None and hands.lower() not in info.hands:
        return {"max_hands": 1}
    return {"max_hands": 2, "hands": hands.lower()}


def capture_smoothing(context: bpy.types.Context) -> float | None:
    """The capture's ``--smoothing``: the panel's slider, clamped to the engine's range,
    when the checked engine has the motion prior (the slider is shown only then); None
    (the flag left out, the engine's default) otherwise."""
    info = checked_engine(context)
    if info is None or info.smoothing is None:
        return None
    return info.smoothing.clamp(context.scene.handmocap.prior_smoothing)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` as one line for Blender's report (whitespace runs collapsed, cut)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def report_failure(operator: bpy.types.Operator, err: Exception) -> None:
    """``err`` as one error line in Blender's report. A HandmocapError is for the user to
    act on; anything else is a bug: its traceback goes to the console for a bug report and
    the line says so."""
    if isinstance(err, HandmocapError):
        text = str(err)
    else:
        traceback.print_exception(type(err), err, err.__traceback__)
        text = (f"{operator.bl_label} failed ({type(err).__name__}: {err}); nothing was "
                "changed. This is a bug: please report it with the details printed in the "
                "system console")  # fmt: skip
    operator.report({"ERROR"}, one_line(text))


def rollback(snapshot: AnimationSnapshot | None) -> None:
    """Put the armature back; a failure to do so is printed, never raised over the error
    being reported."""
    if snapshot is None:
        return
    try:
        snapshot.rollback()
    except Exception:
        traceback.print_exc()


class CaptureSession:
    """Validate the panel's inputs, start the engine, and apply the take when it is in.

    ``video_range`` overrides the panel's frame range (video frames, end exclusive);
    ``scene_start`` overrides where the take lands (re-capturing a range).
    """

    sides: tuple[str, ...] | None = None  # the hands to key; None: the panel's Hands

    def __init__(self, context: bpy.types.Context, video_range: tuple[int, int] | None = None,
                 scene_start: int | None = None):  # fmt: skip
        scene = context.scene
        self.settings = settings = scene.handmocap
        prefs = addon_prefs(context)
        self.target = settings.target
        self.mapping = resolve_mapping(self.target, settings)
        video = settings.video()
        if video is None:
            raise HandmocapError("choose a video file (or a movie clip) to capture")
        if not video.exists():
            raise HandmocapError(f"video not found: {video}")
        if video_range is None:
            start = settings.frame_start
            end = settings.frame_end + 1 if settings.frame_end else None
        else:
            start, end = video_range
        if end is not None and end <= start:
            raise HandmocapError(f"the frame range {start}..{end - 1} is empty")
        self.scene_start = settings.scene_start if scene_start is None else scene_start
        device = prefs.default_device if settings.device == "PREFERENCES" else settings.device
        self.take_path = new_take_path(take_folder(), video.stem)
        self.take_name = self.take_path.stem
        try:
            request = CaptureRequest(
                python=bpy.path.abspath(prefs.engine_python), video=video,
                take_path=self.take_path, device=device.lower(),
                start=start, end=end, stride=settings.stride,
                **capture_hands(context, settings.hands),
                mano_dir=Path(bpy.path.abspath(prefs.mano_dir)) if prefs.mano_dir else None,
                fps=settings.video_fps or None, smoothing=capture_smoothing(context),
            )  # fmt: skip
            self.run = EngineRun(request)
        except BaseException:
            self.discard_take()
            raise

    def poll(self) -> bool:
        return self.run.poll()

    def wait(self, timeout_s: float = 3600.0) -> None:
        end = time.monotonic() + timeout_s
        while not self.poll():
            if time.monotonic() > end:
                self.run.cancel()
                raise HandmocapError(f"the capture took longer than {timeout_s:.0f} s")
            time.sleep(0.05)

    def discard_take(self) -> None:
        """Delete this capture's take file (a failed or cancelled capture leaves none)."""
        with contextlib.suppress(OSError):
            self.take_path.unlink(missing_ok=True)

    def live_target(self) -> bpy.types.Object:
        """The armature, still there (it may be deleted while the engine runs)."""
        try:
            self.target.name  # noqa: B018 - raises ReferenceError once it is gone
        except ReferenceError:
            raise HandmocapError("the armature was deleted during the capture; nothing was "
                                 "keyed") from None  # fmt: skip
        return self.target

    def finish(self, context: bpy.types.Context) -> ApplyResult:
        """Put the finished take on the armature (raises HandmocapError on failure)."""
        if self.run.error:
            raise HandmocapError(self.run.error)
        take_path = self.run.take_path
        take = read_take(take_path)
        if not take.tracks:
            raise HandmocapError(f"no hands were found in {self.run.request.source}; nothing "
                                 "was keyed")  # fmt: skip
        settings = replace(self.settings.apply_settings(self.take_name, str(take_path)),
                           scene_start=self.scene_start)  # fmt: skip
        if self.sides is not None:
            settings = replace(settings, sides=self.sides)
        result = apply_take(self.live_target(), take, self.mapping, settings, context.scene)
        if not result.actions:
            raise HandmocapError("; ".join(result.messages) or "nothing was keyed")
        return result


# A take's name ends in the capture's time and token (new_take_path); a re-solved take
# gets its own.
_TAKE_STAMP = re.compile(r"_\d{8}-\d{6}_[0-9a-f]{8}$")


class PriorSession(CaptureSession):
    """Re-solve the motion prior of a take already keyed (``handmocap smooth``, no video)
    into a new take next to it, and key that like a capture: at ``scene_start`` (where the
    old take landed), the hands ``sides`` only."""

    def __init__(self, context: bpy.types.Context, take: Path, smoothing: float,
                 scene_start: int, sides: tuple[str, ...]):  # fmt: skip
        self.settings = settings = context.scene.handmocap
        self.target = settings.target
        self.mapping = resolve_mapping(self.target, settings)
        info = checked_engine(context)
        if info is not None and not info.has_stage(MOTION_PRIOR):
            raise HandmocapError(f"the engine at {info.python} (handmocap {info.version}) has "
                                 "no motion prior: update handmocap in the engine's "
                                 "environment, then Check Engine again in the add-on's "
                                 "preferences")  # fmt: skip
        span = info.smoothing if info is not None else None
        self.smoothing = span.clamp(smoothing) if span is not None else float(smoothing)
        self.scene_start, self.sides = scene_start, sides
        stem = _TAKE_STAMP.sub("", take.stem).removesuffix("_prior") + "_prior"
        self.take_path = new_take_path(take.parent, stem)
        self.take_name = self.take_path.stem
        try:
            request = SmoothRequest(python=engine_python(context), take=take,
                                    take_path=self.take_path, smoothing=self.smoothing)  # fmt: skip
            self.run = EngineRun(request)
        except BaseException:
            self.discard_take()
            raise


def summary(result: ApplyResult) -> str:
    hands = ", ".join(f"{side} {n} bones" for side, n in sorted(result.keyed_bones.items()))
    lo, hi = result.frame_range or (0, 0)
    text = f"captured {hands}, frames {lo}-{hi}"
    return text + ("" if not result.messages else " (" + "; ".join(result.messages) + ")")


class CaptureOperatorBase:
    """The modal logic shared by Capture and Re-capture Range (Blender does not allow one
    registered operator class to subclass another, hence a plain mixin).

    Any failure, expected (HandmocapError) or not, ends as one error line and CANCELLED,
    with the armature put back and the take file deleted."""

    bl_options = {"REGISTER", "UNDO"}
    # True where after_apply edits keys that were there before (the snapshot then saves them)
    edits_existing_keys = False
    activity = "Hand capture"  # names the run in the status bar

    _session: CaptureSession | None = None
    _timer = None

    def _start(self, context) -> bool:
        try:
            self._session = self.make_session(context)
        except Exception as err:
            report_failure(self, err)
            return False
        return True

    def make_session(self, context) -> CaptureSession:
        return CaptureSession(context)

    def after_apply(self, context) -> None:
        """Runs once the take is keyed, inside the same rollback (re-capture merges here)."""

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        try:
            self._session.wait()
        except Exception as err:
            self._abort()
            report_failure(self, err)
            return {"CANCELLED"}
        return self._finish(context)

    def invoke(self, context, event):
        if context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 1000)
        wm.modal_handler_add(self)
        context.workspace.status_text_set(f"{self.activity}: starting the engine (Esc cancels)")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        try:
            return self._modal(context, event)
        except Exception as err:
            self._abort()
            self._end_ui(context)
            report_failure(self, err)
            return {"CANCELLED"}

    def _modal(self, context, event):
        if event.type == "ESC":
            self._abort()
            self._end_ui(context)
            label = self._session.run.request.label
            self.report({"WARNING"}, f"{label} cancelled; the scene is unchanged")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        done = self._session.poll()
        run = self._session.run
        context.window_manager.progress_update(int(1000 * run.fraction))
        context.workspace.status_text_set(f"{self.activity}: {run.status} (Esc cancels)")
        if not done:
            return {"RUNNING_MODAL"}
        self._end_ui(context)
        return self._finish(context)

    def _finish(self, context):
        session = self._session
        snapshot = None
        try:
            snapshot = AnimationSnapshot(session.live_target(), keys=self.edits_existing_keys)
            result = session.finish(context)
            self.after_apply(context)
        except Exception as err:
            rollback(snapshot)
            session.discard_take()
            report_failure(self, err)
            return {"CANCELLED"}
        session.settings.last_take = str(session.take_path)
        self.report({"WARNING"} if result.messages else {"INFO"}, one_line(self.done_text(result)))
        return {"FINISHED"}

    def done_text(self, result: ApplyResult) -> str:
        """The report line of a run that keyed its take."""
        return summary(result)

    def _abort(self) -> None:
        """Stop the engine and delete the take (a cancelled or failed capture keeps none)."""
        if self._session is None:
            return
        try:
            self._session.run.cancel()
        finally:
            self._session.discard_take()

    def _end_ui(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.workspace.status_text_set(None)

    def cancel(self, context):  # Blender closing the window while we run
        self._abort()
        self._end_ui(context)


class HM_OT_capture(CaptureOperatorBase, bpy.types.Operator):
    """Run the engine on the video and key the captured hands onto the armature (Esc
    cancels)"""

    bl_idname = "handmocap.capture"
    bl_label = "Capture Hands"


CLASSES = (HM_OT_capture,)
