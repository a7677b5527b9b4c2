"""Obtaining the hand asset: every failure is a clear message and leaves nothing half-done.

A local HTTP server on 127.0.0.1 stands in for the npm registry (``HANDMOCAP_NPM_REGISTRY``
points at it), serving a small fake tarball whose checksums the tests pin in place of the
real ones. One test downloads the real pinned tarball, and skips when the registry cannot be
reached.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from handmocap.errors import AssetError
from handmocap.models import webxr_asset
from handmocap.models.webxr_asset import ensure_webxr_hand

GLB = {"left": b"fake left glb", "right": b"fake right glb!"}
TARBALL_PATH = f"/{webxr_asset.PACKAGE}/-/assets-{webxr_asset.VERSION}.tgz"


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


GOOD = _tarball(
    {
        webxr_asset._MEMBERS["left"]: GLB["left"],
        webxr_asset._MEMBERS["right"]: GLB["right"],
        webxr_asset._MEMBERS["licence"]: b"MIT License (fake)\n",
    }
)


@dataclass
class Registry:
    """What the fake registry serves at the pinned tarball's path, and what it was asked."""

    url: str
    body: bytes = GOOD
    status: int = 200
    send_length: bool = True
    cut_after: int | None = None  # close the connection after this many bytes
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def registry(monkeypatch) -> Iterator[Registry]:
    state = Registry(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path != TARBALL_PATH or state.status != 200:
                self.send_error(404 if state.status == 200 else state.status)
                return
            body = state.body if state.cut_after is None else state.body[: state.cut_after]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if state.send_length:
                self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HANDMOCAP_NPM_REGISTRY", state.url + "/")
    monkeypatch.setenv("no_proxy", "*")  # never through a proxy to 127.0.0.1
    monkeypatch.setattr(webxr_asset, "TARBALL_SHA256", hashlib.sha256(GOOD).hexdigest())
    monkeypatch.setattr(webxr_asset, "TARBALL_BYTES", len(GOOD))
    glb_sha = {side: hashlib.sha256(data).hexdigest() for side, data in GLB.items()}
    monkeypatch.setattr(webxr_asset, "GLB_SHA256", glb_sha)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _nothing_installed(cache: Path) -> bool:
    """No hand folder, and no temporary folder left beside it."""
    assets = cache / "assets"
    return not assets.exists() or not any(assets.iterdir())


def test_cached_files_are_verified_and_reused(webxr_files, monkeypatch):
    assert webxr_asset.sha256_of(webxr_files.right) == webxr_asset.GLB_SHA256["right"]
    assert webxr_files.licence.read_text().startswith("MIT License")

    def no_network(*args, **kwargs):
        raise AssertionError("the verified cache was downloaded again")

    monkeypatch.setattr(webxr_asset.urllib.request, "urlopen", no_network)
    assert ensure_webxr_hand() == webxr_files


def test_tarball_url_matches_the_registry_metadata():
    # dist.tarball of https://registry.npmjs.org/@webxr-input-profiles/assets/1.0.20
    assert webxr_asset.tarball_url(webxr_asset.DEFAULT_REGISTRY) == (
        "https://registry.npmjs.org/@webxr-input-profiles/assets/-/assets-1.0.20.tgz"
    )


def test_registry_comes_from_handmocap_then_npm_then_default(monkeypatch):
    for name in ("HANDMOCAP_NPM_REGISTRY", "npm_config_registry", "NPM_CONFIG_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    assert webxr_asset.registry() == ("https://registry.npmjs.org", "default")
    monkeypatch.setenv("npm_config_registry", "https://npm.studio.example/")
    assert webxr_asset.registry() == ("https://npm.studio.example", "npm_config_registry")
    monkeypatch.setenv("HANDMOCAP_NPM_REGISTRY", "http://mirror:4873")
    assert webxr_asset.registry() == ("http://mirror:4873", "HANDMOCAP_NPM_REGISTRY")
    monkeypatch.setenv("HANDMOCAP_NPM_REGISTRY", "file:///etc")
    with pytest.raises(AssetError, match=r"HANDMOCAP_NPM_REGISTRY must be the http\(s\) URL"):
        webxr_asset.registry()


def test_download_installs_verified_files_and_a_rerun_makes_no_request(registry, tmp_path):
    files = ensure_webxr_hand(cache=tmp_path)
    assert registry.requests == [TARBALL_PATH]
    assert files.left.read_bytes() == GLB["left"]
    assert files.right.read_bytes() == GLB["right"]
    assert files.licence.read_text().startswith("MIT License")
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == [files.left.parent.name]
    assert sorted(p.name for p in files.left.parent.iterdir()) == [
        "LICENSE.md",
        "left.glb",
        "right.glb",
    ]
    assert ensure_webxr_hand(cache=tmp_path) == files
    assert webxr_asset.built_webxr_hand(cache=tmp_path) == files
    assert registry.requests == [TARBALL_PATH]  # the second call asked nothing


def test_a_damaged_folder_is_replaced(registry, tmp_path):
    files = ensure_webxr_hand(cache=tmp_path)
    files.right.write_bytes(b"damaged")
    assert ensure_webxr_hand(cache=tmp_path).right.read_bytes() == GLB["right"]
    assert len(registry.requests) == 2


def test_checksum_mismatch_installs_nothing(registry, tmp_path):
    registry.body = _tarball({name: b"not the hand" for name in webxr_asset._MEMBERS.values()})
    got = hashlib.sha256(registry.body).hexdigest()
    with pytest.raises(
        AssetError, match=r"(?s)checksum mismatch.*expected sha256 [0-9a-f]{64}, "
    ) as e:
        ensure_webxr_hand(cache=tmp_path)
    assert f"got {got}" in str(e.value) and "nothing was installed" in str(e.value)
    assert _nothing_installed(tmp_path)


def test_http_error_names_the_status(registry, tmp_path):
    registry.status = 404
    with pytest.raises(
        AssetError, match=r"HTTP 404 .*assets-1\.0\.20\.tgz.*HANDMOCAP_NPM_REGISTRY"
    ):
        ensure_webxr_hand(cache=tmp_path)
    assert _nothing_installed(tmp_path)


def test_unreachable_registry_names_the_url_and_the_mirror_variable(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HANDMOCAP_NPM_REGISTRY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("no_proxy", "*")
    with pytest.raises(AssetError) as e:
        ensure_webxr_hand(cache=tmp_path)
    message = str(e.value)
    assert f"could not reach the npm registry at http://127.0.0.1:{port}/" in message
    assert "point HANDMOCAP_NPM_REGISTRY at a mirror" in message
    assert "now comes from HANDMOCAP_NPM_REGISTRY" in message
    assert _nothing_installed(tmp_path)


def test_a_silent_registry_times_out(monkeypatch, tmp_path):
    listener = socket.socket()  # accepts connections (the kernel's backlog), never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        monkeypatch.setenv(
            "HANDMOCAP_NPM_REGISTRY", f"http://127.0.0.1:{listener.getsockname()[1]}"
        )
        monkeypatch.setenv("no_proxy", "*")
        monkeypatch.setattr(webxr_asset, "READ_TIMEOUT_S", 0.3)
        with pytest.raises(AssetError, match=r"could not reach the npm registry.*timed out"):
            ensure_webxr_hand(cache=tmp_path)
    finally:
        listener.close()
    assert _nothing_installed(tmp_path)


def test_disk_full_installs_nothing(registry, tmp_path, monkeypatch):
    class FullDisk(io.FileIO):
        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_open(path, mode="r", *args, **kwargs):
        return FullDisk(path, "w") if "w" in mode else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(webxr_asset, "open", full_open, raising=False)
    with pytest.raises(AssetError) as e:
        ensure_webxr_hand(cache=tmp_path)
    message = str(e.value)
    assert f"disk is full while writing the hand asset under {tmp_path / 'assets'}" in message
    assert "MB of free space is needed there" in message and "HANDMOCAP_CACHE" in message
    assert _nothing_installed(tmp_path)


@pytest.mark.parametrize("send_length", [True, False])
def test_a_response_past_the_size_cap_is_refused(registry, tmp_path, monkeypatch, send_length):
    registry.send_length = send_length
    monkeypatch.setattr(webxr_asset, "MAX_TARBALL_BYTES", len(GOOD) - 1)
    with pytest.raises(AssetError, match=r"sent more than .*MB.*nothing was installed"):
        ensure_webxr_hand(cache=tmp_path)
    assert _nothing_installed(tmp_path)


def test_a_download_that_breaks_off_installs_nothing(registry, tmp_path):
    registry.cut_after = len(GOOD) // 2
    with pytest.raises(AssetError, match=r"broke off after .*nothing was installed"):
        ensure_webxr_hand(cache=tmp_path)
    assert _nothing_installed(tmp_path)


def test_temporary_folders_of_killed_downloads_are_removed(registry, tmp_path):
    assets = tmp_path / "assets"
    name = f"webxr-generic-hand-{webxr_asset.VERSION}"
    dead = assets / f".{name}.{_exited_pid()}-0123abcd.part"
    (dead / "package.tgz").parent.mkdir(parents=True)
    (dead / "package.tgz").write_bytes(b"half a download")
    mine = assets / f".{name}.{os.getpid()}-0123abcd.part"  # a live writer's: kept
    mine.mkdir()
    ensure_webxr_hand(cache=tmp_path)
    assert not dead.exists() and mine.is_dir()


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_real_pinned_tarball_matches_its_sha256(tmp_path, monkeypatch):
    """Downloads the published tarball (94 MB) from the configured registry; skipped when the
    registry cannot be reached."""
    digests = []
    real_download = webxr_asset._download

    def recording(url, dest, source):
        digests.append(real_download(url, dest, source))
        return digests[-1]

    monkeypatch.setattr(webxr_asset, "_download", recording)
    start = time.monotonic()
    try:
        files = ensure_webxr_hand(cache=tmp_path)
    except AssetError as err:
        cause = err.__cause__
        if isinstance(cause, urllib.error.URLError | TimeoutError | ConnectionError) and not (
            isinstance(cause, urllib.error.HTTPError)
        ):
            pytest.skip(f"npm registry unreachable: {err}")
        raise
    assert digests == [webxr_asset.TARBALL_SHA256]
    assert (tmp_path / "assets" / f"webxr-generic-hand-{webxr_asset.VERSION}").is_dir()
    assert webxr_asset.sha256_of(files.left) == webxr_asset.GLB_SHA256["left"]
    print(f"downloaded and installed in {time.monotonic() - start:.2f} s")
