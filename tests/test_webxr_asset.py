"""Obtaining the hand asset: every failure is a clear message and leaves nothing half-done.

Fake ``npm`` executables stand in for the real one so these tests need no network.
"""

import io
import stat
import tarfile
from pathlib import Path

import pytest

from handmocap.errors import AssetError
from handmocap.models import webxr_asset
from handmocap.models.webxr_asset import ensure_webxr_hand


def _fake_npm(tmp_path: Path, body: str) -> str:
    script = tmp_path / "npm"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _tarball(path: Path, payload: bytes) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name in webxr_asset._MEMBERS.values():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cached_files_are_verified_and_reused(webxr_files):
    assert webxr_asset.sha256_of(webxr_files.right) == webxr_asset.GLB_SHA256["right"]
    assert webxr_files.licence.read_text().startswith("MIT License")
    # A second call with a broken npm must not need npm at all.
    again = ensure_webxr_hand(npm="/nonexistent/npm")
    assert again == webxr_files


def test_npm_missing(tmp_path):
    with pytest.raises(AssetError, match=r"(?s)npm is not installed.*apt-get install npm"):
        ensure_webxr_hand(cache=tmp_path, npm=str(tmp_path / "no-such-npm"))


def test_checksum_mismatch_installs_nothing(tmp_path):
    tampered = tmp_path / "tampered.tgz"
    _tarball(tampered, b"not the hand")
    npm = _fake_npm(
        tmp_path, f'cp {tampered} "$4/pkg.tgz"\n'
    )  # argv: pack SPEC --pack-destination DIR
    with pytest.raises(AssetError, match=r"(?s)checksum mismatch.*nothing was installed"):
        ensure_webxr_hand(cache=tmp_path / "cache", npm=npm)
    assert not list((tmp_path / "cache").rglob("*.glb"))


def test_disk_full_while_downloading(tmp_path):
    npm = _fake_npm(
        tmp_path, 'echo "npm error code ENOSPC" >&2\necho "npm error syscall write" >&2\nexit 1\n'
    )
    with pytest.raises(AssetError, match=r"(?s)disk is full.*HANDMOCAP_CACHE"):
        ensure_webxr_hand(cache=tmp_path / "cache", npm=npm)


def test_registry_failure_is_reported_with_npm_output(tmp_path):
    npm = _fake_npm(tmp_path, 'echo "npm error code E404" >&2\nexit 1\n')
    with pytest.raises(AssetError, match=r"(?s)failed \(exit 1\).*E404"):
        ensure_webxr_hand(cache=tmp_path / "cache", npm=npm)
