"""Obtain the WebXR generic hand (MIT) with the ordinary npm client, pinned and verified.

``npm pack`` downloads the published tarball of ``@webxr-input-profiles/assets``; we check
its sha256 against the pinned value, extract only the two hand glb files and the licence,
check those too, and cache them in the user cache folder (never in the repository).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from handmocap.errors import AssetError
from handmocap.sides import BOTH, Side

PACKAGE = "@webxr-input-profiles/assets"
VERSION = "1.0.20"
TARBALL_SHA256 = "30df2a2268220fc0d0e034bed1550aabdd7a2500573c5216f64fc70d59c3d91e"
GLB_SHA256 = {
    "left": "bc67783144944ea1cda54d9247885825ea5fb9d4651469fe7d00be517a5c2b87",
    "right": "291790c14f7f88a7f9bd35330c47392ed8e8d395ae6728f4bb7089f1bc1f2b96",
}
_MEMBERS = {
    "left": "package/dist/profiles/generic-hand/left.glb",
    "right": "package/dist/profiles/generic-hand/right.glb",
    "licence": "package/LICENSE.md",
}


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
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(files: WebXRHandFiles) -> bool:
    return (
        all(
            files.glb(s).is_file() and sha256_of(files.glb(s)) == GLB_SHA256[s]
            for s in BOTH
        )
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
            "files are damaged): run 'python3 build.py models'"
        )
    return files


def ensure_webxr_hand(cache: Path | None = None, npm: str | None = None) -> WebXRHandFiles:
    """Return the cached, verified hand files, downloading them with ``npm pack`` if needed.

    Raises :class:`AssetError` with a message saying what to do when npm is missing, the
    download fails, a checksum does not match or the disk is full.
    """
    folder = _folder(cache)
    files = _files_in(folder)
    if _verified(files):
        return files

    npm_exe = npm or shutil.which("npm")
    if not npm_exe or (not Path(npm_exe).exists() and not shutil.which(npm_exe)):
        raise AssetError(
            "npm is not installed, and it is needed once to download the open WebXR hand "
            f"({PACKAGE}@{VERSION}). Install Node.js and npm (Debian/Ubuntu: "
            "'apt-get install npm') and run the command again."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            tarball = _npm_pack(npm_exe, Path(tmp))
            got = sha256_of(tarball)
            if got != TARBALL_SHA256:
                raise AssetError(
                    f"checksum mismatch for {PACKAGE}@{VERSION}: expected sha256 {TARBALL_SHA256}, "
                    f"got {got}. The registry served a different file than the pinned one; "
                    "nothing was installed. Check your npm registry/proxy settings and retry."
                )
            _extract(tarball, folder)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise AssetError(
                f"the disk is full while writing the hand asset to {folder}: free some space "
                "(about 200 MB is needed) or point HANDMOCAP_CACHE at a bigger disk, then retry."
            ) from err
        raise AssetError(f"could not write the hand asset to {folder}: {err}") from err
    if not _verified(files):
        raise AssetError(
            f"the extracted hand files in {folder} do not match their pinned checksums; "
            "delete that folder and run again."
        )
    return files


def _npm_pack(npm_exe: str, dest: Path) -> Path:
    cmd = [npm_exe, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(dest), "--silent"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError as err:
        raise AssetError(f"npm could not be started ({npm_exe}): install Node.js and npm.") from err
    except subprocess.TimeoutExpired as err:
        raise AssetError("npm pack took over 10 minutes; check the network and retry.") from err
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        if any("ENOSPC" in line for line in tail):
            raise OSError(errno.ENOSPC, "no space left on device")
        raise AssetError(
            f"'npm pack {PACKAGE}@{VERSION}' failed (exit {proc.returncode}):\n  "
            + "\n  ".join(tail)
            + "\nCheck that the npm registry is reachable, then retry."
        )
    tarballs = sorted(dest.glob("*.tgz"))
    if not tarballs:
        raise AssetError(f"'npm pack {PACKAGE}@{VERSION}' wrote no tarball.")
    return tarballs[0]


def _extract(tarball: Path, folder: Path) -> None:
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for key, member in _MEMBERS.items():
                src = tar.extractfile(member)
                if src is None:
                    raise AssetError(f"{tarball.name} has no {member}")
                out = folder / ("LICENSE.md" if key == "licence" else f"{key}.glb")
                part = out.with_suffix(out.suffix + ".part")
                with open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                part.replace(out)
    except (tarfile.TarError, KeyError) as err:
        raise AssetError(f"the downloaded tarball {tarball.name} is not readable: {err}") from err
