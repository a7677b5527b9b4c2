"""Obtain the WebXR generic hand (MIT) from the npm registry over HTTPS, pinned and verified.

The published tarball of ``@webxr-input-profiles/assets`` is downloaded with the standard
library (``urllib``, which honours ``https_proxy``/``no_proxy``); no Node.js or npm is
involved. The tarball must match its pinned sha256 before anything is unpacked; only the two
hand glb files and the licence are extracted, checked against their own pinned sha256, and
cached in the user cache folder (never in the repository). See docs/architecture.md,
"Models and assets".

The registry is ``$HANDMOCAP_NPM_REGISTRY``, else npm's own ``$npm_config_registry``, else
https://registry.npmjs.org, so a studio mirror serves it. Everything is written under a
temporary folder beside the final one and renamed into place at the end: an interrupted or
failed download leaves no half-built folder, and a rerun with the verified files present
makes no request at all.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from handmocap.atomic import temp_name
from handmocap.errors import BUILD_MODELS, AssetError
from handmocap.sides import BOTH, Side

PACKAGE = "@webxr-input-profiles/assets"
VERSION = "1.0.20"
TARBALL_SHA256 = "30df2a2268220fc0d0e034bed1550aabdd7a2500573c5216f64fc70d59c3d91e"
TARBALL_BYTES = 93_577_565  # the published tarball's size (the registry's dist.tarball)
MAX_TARBALL_BYTES = 4 * TARBALL_BYTES  # a response past this is not the pinned file
GLB_SHA256 = {
    "left": "bc67783144944ea1cda54d9247885825ea5fb9d4651469fe7d00be517a5c2b87",
    "right": "291790c14f7f88a7f9bd35330c47392ed8e8d395ae6728f4bb7089f1bc1f2b96",
}
_MEMBERS = {
    "left": "package/dist/profiles/generic-hand/left.glb",
    "right": "package/dist/profiles/generic-hand/right.glb",
    "licence": "package/LICENSE.md",
}

REGISTRY_ENV = "HANDMOCAP_NPM_REGISTRY"
NPM_REGISTRY_ENV = ("npm_config_registry", "NPM_CONFIG_REGISTRY")  # npm's own setting
DEFAULT_REGISTRY = "https://registry.npmjs.org"
READ_TIMEOUT_S = 60.0  # connecting, and each read of the response
DOWNLOAD_DEADLINE_S = 1800.0  # the whole download (94 MB at about 50 kB/s)
_BLOCK = 1 << 20
_MB = 1e6


@dataclass(frozen=True)
class WebXRHandFiles:
    """Paths of the verified, cached asset files."""

    left: Path
    right: Path
    licence: Path

    def glb(self, side: Side) -> Path:
        if side not in BOTH:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        return self.left if side == Side.LEFT else self.right


def cache_root() -> Path:
    """``$HANDMOCAP_CACHE``, else ``$XDG_CACHE_HOME/handmocap``, else ``~/.cache/handmocap``."""
    if os.environ.get("HANDMOCAP_CACHE"):
        return Path(os.environ["HANDMOCAP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "handmocap"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def registry() -> tuple[str, str]:
    """The npm registry's base URL (no trailing slash) and where it came from (an
    environment variable's name, or ``"default"``).

    Raises:
        AssetError: the configured value is not an http(s) URL.
    """
    for name in (REGISTRY_ENV, *NPM_REGISTRY_ENV):
        value = os.environ.get(name, "").strip()
        if value:
            if not re.match(r"^https?://[^/\s]+", value):
                raise AssetError(
                    f"{name} must be the http(s) URL of an npm registry, got {value!r}: "
                    f"set it to a mirror's URL (or unset it for {DEFAULT_REGISTRY})."
                )
            return value.rstrip("/"), name
    return DEFAULT_REGISTRY, "default"


def tarball_url(base: str) -> str:
    """The registry's URL of the pinned tarball (the ``dist.tarball`` of its metadata):
    ``<base>/@scope/name/-/name-<VERSION>.tgz``."""
    return f"{base}/{PACKAGE}/-/{PACKAGE.rsplit('/', 1)[-1]}-{VERSION}.tgz"


def _verified(files: WebXRHandFiles) -> bool:
    return (
        all(files.glb(s).is_file() and sha256_of(files.glb(s)) == GLB_SHA256[s] for s in BOTH)
        and files.licence.is_file()
    )


def _files_in(folder: Path) -> WebXRHandFiles:
    return WebXRHandFiles(folder / "left.glb", folder / "right.glb", folder / "LICENSE.md")


def _folder(cache: Path | None) -> Path:
    return (cache or cache_root()) / "assets" / f"webxr-generic-hand-{VERSION}"


def built_webxr_hand(cache: Path | None = None) -> WebXRHandFiles:
    """The cached, verified hand files, never downloading them (the policy at capture time):
    missing or damaged files raise :class:`AssetError` naming them and the build command."""
    files = _files_in(_folder(cache))
    if not _verified(files):
        raise AssetError(
            f"the open WebXR hand ({PACKAGE}@{VERSION}) is not in {files.right.parent} (or its "
            f"files are damaged): {BUILD_MODELS}"
        )
    return files


def ensure_webxr_hand(cache: Path | None = None) -> WebXRHandFiles:
    """Return the cached, verified hand files, downloading the pinned tarball if needed.

    With the verified files already in ``cache`` (default :func:`cache_root`) nothing touches
    the network. Otherwise the tarball is streamed to a temporary folder beside the final
    one, checked against ``TARBALL_SHA256``, unpacked there, checked again, and the folder is
    renamed into place; on any failure the temporary folder is removed.

    Raises:
        AssetError: the registry is unreachable, answers an HTTP error, sends more than
            ``MAX_TARBALL_BYTES`` or a file with the wrong checksum, or the disk is full; the
            message names the problem and what to do, and nothing was installed.
    """
    folder = _folder(cache)
    files = _files_in(folder)
    if _verified(files):
        return files
    base, source = registry()
    url = tarball_url(base)
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(folder)
        tmp = temp_name(folder, "")
        tmp.mkdir()
        try:
            tarball = tmp / "package.tgz"
            got = _download(url, tarball, source)
            if got != TARBALL_SHA256:
                raise AssetError(
                    f"checksum mismatch for {PACKAGE}@{VERSION} from {url}: expected sha256 "
                    f"{TARBALL_SHA256}, got {got}; nothing was installed. The registry (or a "
                    f"proxy) served another file than the published one: check {REGISTRY_ENV} "
                    "and the proxy settings, then retry."
                )
            staged = tmp / folder.name
            staged.mkdir()
            _extract(tarball, staged)
            if not _verified(_files_in(staged)):
                raise AssetError(
                    f"the hand files inside {PACKAGE}@{VERSION} do not match their pinned "
                    "checksums although the tarball does; nothing was installed. The pins in "
                    "models/webxr_asset.py disagree with each other: report this."
                )
            _install(staged, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        raise _write_error(err, parent) from err
    if not _verified(files):  # another process changed the folder meanwhile
        raise AssetError(
            f"the hand files in {folder} do not match their pinned checksums; "
            "delete that folder and run again."
        )
    return files


def _write_error(err: OSError, parent: Path) -> AssetError:
    if err.errno == errno.ENOSPC:
        need = (TARBALL_BYTES + 1_000_000) / _MB
        return AssetError(
            f"the disk is full while writing the hand asset under {parent}: about {need:.0f} MB "
            f"of free space is needed there ({TARBALL_BYTES / _MB:.0f} MB tarball, then the "
            "unpacked files); nothing was installed. Free some space or point HANDMOCAP_CACHE "
            "at a bigger disk, then retry."
        )
    return AssetError(f"could not write the hand asset under {parent}: {err}")


def _install(staged: Path, folder: Path) -> None:
    """Rename the verified ``staged`` folder to ``folder`` (one atomic rename), replacing a
    damaged ``folder``; a concurrent writer's verified folder is kept."""
    if folder.exists():
        if _verified(_files_in(folder)):
            return
        shutil.rmtree(folder)
    try:
        os.rename(staged, folder)
    except OSError:
        if not _verified(_files_in(folder)):
            raise


def _remove_dead_temps(folder: Path) -> None:
    """Delete temporary folders of ``folder`` left by downloads that were killed outright
    (their names carry the process id, as :func:`handmocap.atomic.temp_name` makes them)."""
    pattern = re.compile(r"^\." + re.escape(folder.name) + r"\.(\d+)-[0-9a-f]{8}\.part$")
    for entry in folder.parent.iterdir():
        found = pattern.match(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() and not _alive(int(found[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or no way to tell: leave its folder
    return True


def _download(url: str, dest: Path, source: str) -> str:
    """Stream ``url`` into ``dest``; return the sha256 (hex) of what arrived.

    Network failures become :class:`AssetError`; a failed write (disk full) propagates as
    the ``OSError`` it is.
    """
    hint = f"point {REGISTRY_ENV} at a mirror that serves {PACKAGE}@{VERSION}"
    if source != "default":
        hint += f" (the registry now comes from {source})"
    request = urllib.request.Request(url, headers={"User-Agent": "handmocap-asset-fetch"})
    try:
        response = urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise AssetError(
            f"the npm registry answered HTTP {err.code} ({err.reason}) for {url}; nothing was "
            f"installed. Check the registry, or {hint}, then retry."
        ) from err
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise AssetError(
            f"could not reach the npm registry at {url} ({reason}). Check the network and "
            f"the proxy (https_proxy), or {hint}, then retry."
        ) from err
    with response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_TARBALL_BYTES:
            raise _too_large(url, int(declared))
        digest = hashlib.sha256()
        received = 0
        deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
        with open(dest, "wb") as out:
            while True:
                try:
                    block = response.read(_BLOCK)
                except (OSError, http.client.HTTPException) as err:
                    raise AssetError(
                        f"the download of {url} broke off after {received / _MB:.1f} MB ({err}); "
                        "nothing was installed. Check the network and retry."
                    ) from err
                if not block:
                    break
                received += len(block)
                if received > MAX_TARBALL_BYTES:
                    raise _too_large(url, received)
                if time.monotonic() > deadline:
                    raise AssetError(
                        f"the download of {url} took over {DOWNLOAD_DEADLINE_S / 60:.0f} minutes "
                        f"({received / _MB:.1f} MB arrived); nothing was installed. Retry on a "
                        f"faster connection, or {hint}."
                    )
                digest.update(block)
                out.write(block)
    if declared and declared.isdigit() and received != int(declared):
        # http.client ends a short body quietly when read in blocks: compare the length.
        raise AssetError(
            f"the download of {url} broke off after {received / _MB:.1f} MB of "
            f"{int(declared) / _MB:.1f} MB; nothing was installed. Check the network and retry."
        )
    return digest.hexdigest()


def _too_large(url: str, size: int) -> AssetError:
    return AssetError(
        f"{url} sent more than {MAX_TARBALL_BYTES / _MB:.0f} MB (at least {size / _MB:.0f} MB; "
        f"the pinned tarball is {TARBALL_BYTES / _MB:.1f} MB), so it is not the published "
        f"{PACKAGE}@{VERSION}; nothing was installed. Check {REGISTRY_ENV} and the proxy "
        "settings, then retry."
    )


def _extract(tarball: Path, folder: Path) -> None:
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for key, member in _MEMBERS.items():
                src = tar.extractfile(member)
                if src is None:
                    raise AssetError(f"{tarball.name} has no {member}")
                out = folder / ("LICENSE.md" if key == "licence" else f"{key}.glb")
                with open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (tarfile.TarError, KeyError, EOFError) as err:
        raise AssetError(
            f"the downloaded {PACKAGE}@{VERSION} tarball is not readable ({err}); nothing was "
            "installed. Retry."
        ) from err
