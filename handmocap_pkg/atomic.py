"""Write an output file so that it is either complete or absent (never half-written), and
never through a link someone planted.

    with atomic_output(Path("take.npz")) as tmp:
        write_everything_to(tmp)          # tmp: a fresh file in the same folder
    # here take.npz is the complete new file; on any exception it is untouched

The temporary file is created exclusively (``O_CREAT | O_EXCL``: an existing file or
symbolic link at that name makes creation fail instead of being followed) under a unique
name next to the target, so the final ``os.replace`` is an atomic rename on one file system.
Its name carries the writer's process id: a writer killed outright (SIGKILL, power loss)
cannot clean up, so the next write of the same target removes the leftovers of writers
that are no longer alive.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from handmocap.errors import HandmocapError

_PATTERN = "{dot}{name}.{pid}-{token}.part{suffix}"


def temp_name(target: Path, suffix: str, pid: int | None = None) -> Path:
    """A fresh temporary path next to ``target``; ``suffix`` is kept last (writers such as
    OpenCV's pick the container from the extension)."""
    pid = os.getpid() if pid is None else pid
    name = _PATTERN.format(dot=".", name=target.name, pid=pid, token=secrets.token_hex(4),
                           suffix=suffix)  # fmt: skip
    return target.with_name(name)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or no way to tell: leave it
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete the temporary files of ``target`` left by writers that died; returns them."""
    folder = target.parent
    pattern = re.compile(
        r"^\." + re.escape(target.name) + r"\.(\d+)-[0-9a-f]{8}\.part(\.[A-Za-z0-9]+)?$"
    )
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = pattern.match(entry.name)
        if found and not _pid_alive(int(found.group(1))):
            with suppress(OSError):
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _create_exclusive(path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    os.close(os.open(path, flags, 0o644))


@contextmanager
def atomic_output(target: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a new, empty temporary file next to ``target``; replace ``target`` with it when
    the block ends normally, delete it when the block raises (KeyboardInterrupt included).

    Args:
        target: the file to (re)write. Its folder must exist.
        suffix: extension of the temporary file (default: ``target``'s own).

    Raises:
        HandmocapError: the temporary file cannot be created or the rename fails (the
            message names the target and the reason).
    """
    target = Path(target)
    suffix = target.suffix if suffix is None else suffix
    remove_stale_temps(target)
    for _ in range(8):
        tmp = temp_name(target, suffix)
        try:
            _create_exclusive(tmp)
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise HandmocapError(f"cannot write {target}: {err.strerror or err}") from err
    else:  # pragma: no cover - eight random collisions in a row
        raise HandmocapError(f"cannot write {target}: no free temporary name next to it")
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        with suppress(OSError):
            os.unlink(tmp)
        raise HandmocapError(f"cannot write {target}: {err.strerror or err}") from err
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
