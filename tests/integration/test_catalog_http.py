"""The catalog plugin's drivers against a real HTTP server on 127.0.0.1.

Bundles are written by the core's writer (good ones) or crafted member by
member (hostile ones), listed in a catalog.json written by
``scripts/publish_catalog.py`` or by hand, and served by ``http.server`` with
Range support and scripted misbehaviour (dropped connections, no Range, a
server that never answers). The DNS failure test runs inside a network
namespace whose resolver points at a loopback that is down, so no query ever
leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import zstandard

from banger_catalog.drivers import CatalogImageSource, CatalogKernelProvider
from banger_catalog.errors import BundleError
from banger_core.common.bundles import write_bundle
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import PluginContext, SourceUnavailable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


# --------------------------------------------------------------------------
# A catalog server on 127.0.0.1
# --------------------------------------------------------------------------


@dataclass
class CatalogServer:
    """Files served by path, with per-path misbehaviour, and a log of (path, Range header)."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    #: path -> "no-range" | "wrong-range" | "hang" | ("drop", n): drop the first response after n body bytes
    behaviour: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def bundle_requests(self) -> list[str | None]:
        return [rng for path, rng in self.requests if path.endswith(".tar.zst")]


def _handler(server: CatalogServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            range_header = self.headers.get("Range")
            server.requests.append((path, range_header))
            behaviour = server.behaviour.get(path)
            if behaviour == "hang":
                server.release.wait(30)  # bounded: the client gives up long before
                return
            body = server.files.get(path)
            if body is None:
                self._send(404, b"not found")
                return
            status, start = 200, 0
            match = re.match(r"^bytes=(\d+)-$", range_header or "")
            if match and behaviour != "no-range":
                start = 0 if behaviour == "wrong-range" else int(match.group(1))
                if start >= len(body):
                    self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    return
                status = 206
            part = body[start:]
            headers = {"Content-Length": str(len(part))}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            if isinstance(behaviour, tuple) and behaviour[0] == "drop":
                del server.behaviour[path]  # only the first response breaks off
                self._send(status, part[: behaviour[1]], headers)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(status, part, headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            headers = {"Content-Length": str(len(body)), **(headers or {})}
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

    return Handler


@pytest.fixture
def catalog_server() -> Iterator[CatalogServer]:
    state = CatalogServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------
# Bundles and catalogs
# --------------------------------------------------------------------------


def _image_dir(root: Path) -> Path:
    directory = root / "src-image"
    directory.mkdir()
    with open(directory / "rootfs.ext4", "wb") as fh:
        fh.truncate(32 * MIB)
        fh.write(os.urandom(3 * MIB))  # incompressible, so the download spans several chunks
        fh.seek(20 * MIB)
        fh.write(b"ext4" * 1000)
    (directory / "manifest.json").write_text(
        json.dumps({"name": "test-image", "version": "7", "kernel_ref": "generic-6.1"})
    )
    return directory


def _kernel_dir(root: Path) -> Path:
    directory = root / "src-kernel"
    directory.mkdir()
    (directory / "vmlinux").write_bytes(b"\x7fELF" + os.urandom(400_000))
    (directory / "initrd").write_bytes(b"070701" + os.urandom(90_000))
    (directory / "manifest.json").write_text(
        json.dumps({"ref": "generic-6.1", "version": "6.1.0-37-cloud-amd64", "boot_protocol": 1})
    )
    return directory


def _entry(name: str, kind: str, bundle: bytes, url: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "description": f"test {kind}",
        "url": url,
        "sha256": hashlib.sha256(bundle).hexdigest(),
        "size": len(bundle),
    }
    if kind == "image":
        entry["kernel_ref"] = "generic-6.1"
    entry.update(overrides)
    return entry


def _serve_catalog(server: CatalogServer, *entries: dict[str, Any]) -> str:
    server.files["/catalog.json"] = json.dumps({"format": 1, "entries": list(entries)}).encode()
    return server.url("catalog.json")


def _craft(members: list[tuple[str, bytes | None, bytes, str]]) -> bytes:
    """tar+zstd of (name, data, tar type, linkname) members exactly as given (hostile on purpose)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind, linkname in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


ROOTFS = b"\x00" * 100_000 + b"rootfs" + b"\x00" * 100_000
MANIFEST = json.dumps(
    {
        "format": 1,
        "kind": "image",
        "name": "test-image",
        "version": "1",
        "kernel_ref": "generic-6.1",
        "files": {"rootfs.ext4": {"sha256": hashlib.sha256(ROOTFS).hexdigest(), "size": len(ROOTFS)}},
    }
).encode()
REG = tarfile.REGTYPE

HOSTILE: dict[str, tuple[list[tuple[str, bytes | None, bytes, str]], str]] = {
    "dotdot member": ([("manifest.json", MANIFEST, REG, ""), ("../rootfs.ext4", ROOTFS, REG, "")], r"'\.\.'"),
    "absolute path": ([("manifest.json", MANIFEST, REG, ""), ("/tmp/rootfs.ext4", ROOTFS, REG, "")], "absolute path"),
    "symlink": (
        [("manifest.json", MANIFEST, REG, ""), ("rootfs.ext4", None, tarfile.SYMTYPE, "/etc/shadow")],
        "symbolic link",
    ),
    "hardlink": (
        [("manifest.json", MANIFEST, REG, ""), ("rootfs.ext4", None, tarfile.LNKTYPE, "manifest.json")],
        "hard link",
    ),
    "device node": (
        [("manifest.json", MANIFEST, REG, ""), ("rootfs.ext4", None, tarfile.CHRTYPE, "")],
        "device node",
    ),
    "oversized manifest": (
        [("manifest.json", b" " * (64 * 1024 + 1), REG, ""), ("rootfs.ext4", ROOTFS, REG, "")],
        "over the 65536 byte limit",
    ),
    "extra member": (
        [
            ("manifest.json", MANIFEST, REG, ""),
            ("rootfs.ext4", ROOTFS, REG, ""),
            ("root/.ssh/authorized_keys", b"ssh-ed25519 AAAA attacker", REG, ""),
        ],
        "unexpected member",
    ),
}


def _context(banger_env: dict[str, str], catalog_url: str) -> PluginContext:
    return make_plugin_context(banger_env, {"catalog_url": catalog_url})


def _downloads(ctx: PluginContext) -> Path:
    return ctx.cache_dir / "plugins" / "catalog" / "downloads"


def _empty_dest(tmp_path: Path) -> Path:
    dest = tmp_path / "dest"
    dest.mkdir()
    return dest


# --------------------------------------------------------------------------
# Good bundles
# --------------------------------------------------------------------------


def test_image_published_with_the_script_lands(
    catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    source_dir = _image_dir(tmp_path)
    bundle = write_bundle("image", source_dir, tmp_path / "test-image.tar.zst", RecordingProgress()).path
    catalog = tmp_path / "catalog.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "publish_catalog.py"),
            "--catalog",
            str(catalog),
            "--base-url",
            catalog_server.url("releases/v1"),
            "--description",
            "test-image=an image for tests",
            str(bundle),
        ],
        check=True,
        capture_output=True,
    )
    catalog_server.files["/catalog.json"] = catalog.read_bytes()
    catalog_server.files["/releases/v1/test-image.tar.zst"] = bundle.read_bytes()
    ctx = _context(banger_env, catalog_server.url("catalog.json"))

    source = CatalogImageSource(ctx)
    assert [listing.name for listing in source.available()] == ["test-image"]
    assert source.claims("test-image")
    dest = _empty_dest(tmp_path)
    progress = RecordingProgress()
    artifact = source.pull("test-image", dest, progress)

    rootfs = (source_dir / "rootfs.ext4").read_bytes()
    assert artifact.rootfs.read_bytes() == rootfs
    assert (artifact.sha256, artifact.size) == (hashlib.sha256(rootfs).hexdigest(), len(rootfs))
    assert (artifact.name, artifact.version, artifact.kernel_ref) == ("test-image", "7", "generic-6.1")
    assert artifact.metadata["origin"] == catalog_server.url("releases/v1/test-image.tar.zst")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "rootfs.ext4"]
    assert artifact.rootfs.stat().st_blocks * 512 < 8 * MIB, "extracted sparsely"
    assert progress.steps[0].startswith("downloading catalog image test-image")
    assert progress.steps[1] == "unpacking catalog image test-image"
    size = len(bundle.read_bytes())
    assert (size, size, "B") in progress.advances
    assert list(_downloads(ctx).iterdir()) == [], "the bundle is not kept once unpacked"
    assert catalog_server.bundle_requests() == [None]


def test_kernel_lands(catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path) -> None:
    source_dir = _kernel_dir(tmp_path)
    bundle = write_bundle("kernel", source_dir, tmp_path / "k.tar.zst", RecordingProgress()).path.read_bytes()
    catalog_server.files["/k/generic-6.1.tar.zst"] = bundle
    url = _serve_catalog(catalog_server, _entry("generic-6.1", "kernel", bundle, "k/generic-6.1.tar.zst"))
    ctx = _context(banger_env, url)
    provider = CatalogKernelProvider(ctx)
    assert provider.claims("generic-6.1")
    dest = _empty_dest(tmp_path)
    artifact = provider.pull("generic-6.1", dest, RecordingProgress())
    for name in ("vmlinux", "initrd"):
        data = (source_dir / name).read_bytes()
        assert (dest / name).read_bytes() == data
        assert artifact.sha256[name] == hashlib.sha256(data).hexdigest()
    assert (artifact.vmlinux, artifact.initrd) == (dest / "vmlinux", dest / "initrd")
    assert (artifact.ref, artifact.version, artifact.boot_protocol) == ("generic-6.1", "6.1.0-37-cloud-amd64", 1)
    assert list(_downloads(ctx).iterdir()) == []


# --------------------------------------------------------------------------
# Hostile or corrupt downloads
# --------------------------------------------------------------------------


def _assert_rejected(ctx: PluginContext, dest: Path, match: str) -> None:
    with pytest.raises(BundleError, match=match) as info:
        CatalogImageSource(ctx).pull("test-image", dest, RecordingProgress())
    assert not isinstance(info.value, SourceUnavailable)
    assert "\n" not in str(info.value)
    assert list(dest.iterdir()) == [], "nothing may be left in dest"
    assert list(_downloads(ctx).iterdir()) == [], "neither a .partial nor a bundle may be kept"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bundle_is_rejected(
    case: str, catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    members, match = HOSTILE[case]
    bundle = _craft(members)
    catalog_server.files["/b.tar.zst"] = bundle
    # The catalog vouches for exactly these bytes: only the content checks stand in the way.
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", bundle, "b.tar.zst")))
    _assert_rejected(ctx, _empty_dest(tmp_path), match)


def test_wrong_sha256_is_rejected(catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path) -> None:
    good = _craft([("manifest.json", MANIFEST, REG, ""), ("rootfs.ext4", ROOTFS, REG, "")])
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    catalog_server.files["/b.tar.zst"] = tampered
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", good, "b.tar.zst")))
    _assert_rejected(ctx, _empty_dest(tmp_path), "does not match the catalog")


def test_truncated_download_is_rejected(
    catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    good = _craft([("manifest.json", MANIFEST, REG, ""), ("rootfs.ext4", ROOTFS, REG, "")])
    catalog_server.files["/b.tar.zst"] = good[: len(good) // 2]  # a complete response, of half the bundle
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", good, "b.tar.zst")))
    _assert_rejected(ctx, _empty_dest(tmp_path), "truncated")


def test_oversized_download_is_cut_off(
    catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    good = _craft([("manifest.json", MANIFEST, REG, ""), ("rootfs.ext4", ROOTFS, REG, "")])
    catalog_server.files["/b.tar.zst"] = good + os.urandom(2 * MIB)
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", good, "b.tar.zst")))
    _assert_rejected(ctx, _empty_dest(tmp_path), "sends more than")


# --------------------------------------------------------------------------
# Unreachable: SourceUnavailable, so the core falls back
# --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(ctx: PluginContext, tmp_path: Path, match: str, **driver: Any) -> None:
    dest = _empty_dest(tmp_path)
    with pytest.raises(SourceUnavailable, match=match) as info:
        CatalogImageSource(ctx, **driver).pull("test-image", dest, RecordingProgress())
    assert "\n" not in str(info.value)
    assert list(dest.iterdir()) == []


def test_connection_refused(catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/b.tar.zst"
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", b"x", url)))
    _unavailable(ctx, tmp_path, "cannot download .*Connection refused")


def test_404(catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path) -> None:
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", b"x", "missing.tar.zst")))
    _unavailable(ctx, tmp_path, "answered HTTP 404")


def test_timeout(catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path) -> None:
    catalog_server.behaviour["/slow.tar.zst"] = "hang"
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", b"x", "slow.tar.zst")))
    _unavailable(ctx, tmp_path, "cannot download .*timed out", timeout=1.0)


def test_unreachable_catalog(banger_env: dict[str, str], tmp_path: Path) -> None:
    ctx = _context(banger_env, f"http://127.0.0.1:{_closed_port()}/catalog.json")
    source = CatalogImageSource(ctx)
    assert source.claims("test-image"), "an unreachable catalog still claims plain names, pull says why"
    assert source.available() == []
    _unavailable(ctx, tmp_path, "catalog http://127.0.0.1:.* is unreachable")


def test_catalog_404(catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path) -> None:
    _unavailable(_context(banger_env, catalog_server.url("nope.json")), tmp_path, "answered HTTP 404")


@pytest.fixture
def dead_resolver_netns() -> Iterator[str]:
    """A network namespace whose only interface (lo) is down and whose resolv.conf points at it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns) for a network namespace")
    name = f"banger-test-{uuid.uuid4().hex[:8]}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)
        try:
            etc.parent.rmdir()  # only if no other test's namespace still uses it
        except OSError:
            pass


DNS_PROBE = """
import json, sys
from pathlib import Path
from banger_catalog.drivers import CatalogImageSource
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_hookspecs import SourceUnavailable
ctx = make_plugin_context(json.loads(sys.argv[1]), {"catalog_url": sys.argv[2]})
try:
    CatalogImageSource(ctx, timeout=5.0).pull("test-image", Path(sys.argv[3]), RecordingProgress())
except SourceUnavailable as exc:
    print(exc)
    sys.exit(3)
"""


def test_dns_failure(dead_resolver_netns: str, banger_env: dict[str, str], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    url = "http://bundles.banger-test.invalid/b.tar.zst"
    catalog.write_text(json.dumps({"format": 1, "entries": [_entry("test-image", "image", b"x", url)]}))
    dest = _empty_dest(tmp_path)
    argv = [sys.executable, "-c", DNS_PROBE, json.dumps(banger_env), str(catalog), str(dest)]
    probe = subprocess.run(
        ["ip", "netns", "exec", dead_resolver_netns, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 3, probe.stderr
    assert "cannot download http://bundles.banger-test.invalid/b.tar.zst" in probe.stdout
    assert "name resolution" in probe.stdout, probe.stdout
    assert list(dest.iterdir()) == []


# --------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------


@pytest.fixture
def big_image(tmp_path: Path) -> tuple[bytes, bytes]:
    """(bundle, rootfs) with ~3 MiB of incompressible rootfs, so a download takes several chunks."""
    source_dir = _image_dir(tmp_path)
    bundle = write_bundle("image", source_dir, tmp_path / "big.tar.zst", RecordingProgress()).path.read_bytes()
    return bundle, (source_dir / "rootfs.ext4").read_bytes()


def test_dropped_connection_resumes_with_range(
    big_image: tuple[bytes, bytes], catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    bundle, rootfs = big_image
    catalog_server.files["/big.tar.zst"] = bundle
    catalog_server.behaviour["/big.tar.zst"] = ("drop", MIB + 1000)
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", bundle, "big.tar.zst")))
    progress = RecordingProgress()
    artifact = CatalogImageSource(ctx).pull("test-image", _empty_dest(tmp_path), progress)
    assert artifact.rootfs.read_bytes() == rootfs
    first, resumed = catalog_server.bundle_requests()
    assert first is None and resumed is not None
    assert 0 < int(resumed.removeprefix("bytes=").rstrip("-")) <= MIB + 1000, "resumed, not restarted"
    assert any("resuming" in line for line in progress.lines)


def test_partial_from_an_earlier_pull_resumes(
    big_image: tuple[bytes, bytes], catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    bundle, rootfs = big_image
    catalog_server.files["/big.tar.zst"] = bundle
    entry = _entry("test-image", "image", bundle, "big.tar.zst")
    ctx = _context(banger_env, _serve_catalog(catalog_server, entry))
    downloads = _downloads(ctx)
    downloads.mkdir(parents=True)
    (downloads / f"{entry['sha256']}.tar.zst.partial").write_bytes(bundle[:777_777])
    artifact = CatalogImageSource(ctx).pull("test-image", _empty_dest(tmp_path), RecordingProgress())
    assert artifact.rootfs.read_bytes() == rootfs
    assert catalog_server.bundle_requests() == ["bytes=777777-"]
    assert list(downloads.iterdir()) == []


def test_server_without_range_support_restarts(
    big_image: tuple[bytes, bytes], catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    bundle, rootfs = big_image
    catalog_server.files["/big.tar.zst"] = bundle
    catalog_server.behaviour["/big.tar.zst"] = "no-range"
    entry = _entry("test-image", "image", bundle, "big.tar.zst")
    ctx = _context(banger_env, _serve_catalog(catalog_server, entry))
    downloads = _downloads(ctx)
    downloads.mkdir(parents=True)
    (downloads / f"{entry['sha256']}.tar.zst.partial").write_bytes(bundle[:500_000])
    artifact = CatalogImageSource(ctx).pull("test-image", _empty_dest(tmp_path), RecordingProgress())
    assert artifact.rootfs.read_bytes() == rootfs
    assert catalog_server.bundle_requests() == ["bytes=500000-"]  # asked, got a 200, started over


def test_corrupt_partial_is_deleted_and_the_next_pull_succeeds(
    big_image: tuple[bytes, bytes], catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    bundle, rootfs = big_image
    catalog_server.files["/big.tar.zst"] = bundle
    entry = _entry("test-image", "image", bundle, "big.tar.zst")
    ctx = _context(banger_env, _serve_catalog(catalog_server, entry))
    downloads = _downloads(ctx)
    downloads.mkdir(parents=True)
    (downloads / f"{entry['sha256']}.tar.zst.partial").write_bytes(os.urandom(100_000))
    with pytest.raises(BundleError, match="does not match the catalog"):
        CatalogImageSource(ctx).pull("test-image", _empty_dest(tmp_path), RecordingProgress())
    assert list(downloads.iterdir()) == []
    dest = tmp_path / "again"
    dest.mkdir()
    assert CatalogImageSource(ctx).pull("test-image", dest, RecordingProgress()).rootfs.read_bytes() == rootfs


def test_answer_for_another_range_restarts_from_scratch(
    big_image: tuple[bytes, bytes], catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    bundle, rootfs = big_image
    catalog_server.files["/big.tar.zst"] = bundle
    catalog_server.behaviour["/big.tar.zst"] = "wrong-range"  # 206 from byte 0 whatever was asked
    entry = _entry("test-image", "image", bundle, "big.tar.zst")
    ctx = _context(banger_env, _serve_catalog(catalog_server, entry))
    downloads = _downloads(ctx)
    downloads.mkdir(parents=True)
    (downloads / f"{entry['sha256']}.tar.zst.partial").write_bytes(bundle[:300_000])
    artifact = CatalogImageSource(ctx).pull("test-image", _empty_dest(tmp_path), RecordingProgress())
    assert artifact.rootfs.read_bytes() == rootfs
    assert catalog_server.bundle_requests() == ["bytes=300000-", None]


def test_concurrent_pulls_of_one_bundle_both_land(
    big_image: tuple[bytes, bytes], catalog_server: CatalogServer, banger_env: dict[str, str], tmp_path: Path
) -> None:
    bundle, rootfs = big_image
    catalog_server.files["/big.tar.zst"] = bundle
    ctx = _context(banger_env, _serve_catalog(catalog_server, _entry("test-image", "image", bundle, "big.tar.zst")))
    results: dict[int, Any] = {}

    def pull(index: int) -> None:
        dest = tmp_path / f"dest{index}"
        dest.mkdir()
        try:
            results[index] = CatalogImageSource(ctx).pull("test-image", dest, RecordingProgress()).rootfs.read_bytes()
        except Exception as exc:  # reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {0: rootfs, 1: rootfs}
    assert list(_downloads(ctx).iterdir()) == []
