"""npm binaries: registry choice, fetch + integrity checks against a real loopback registry, hostile tarballs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import ssl
import stat
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from banger_core.testing import RecordingProgress, TlsFiles, mint_tls
from banger_debootstrap import npm
from banger_debootstrap.build import install_npm_binary
from banger_debootstrap.npm import DEFAULT_REGISTRY, NpmError, extract_member, fetch, registry_url
from banger_debootstrap.recipe import NpmBinary
from banger_hookspecs import SourceUnavailable

pytestmark = pytest.mark.unit

PACKAGE = "@banger-test/tool-linux-x64"
VERSION = "1.2.3"
PROGRAM = b"\x7fELF pretend program\n" * 1000


def make_tarball(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A gzip tarball; ``None`` content makes a symlink to /etc/passwd."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


GOOD = make_tarball([("package/package.json", b"{}"), ("package/bin/tool", PROGRAM), ("package/README.md", b"hi")])


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def spec_for(data: bytes) -> NpmBinary:
    return NpmBinary(PACKAGE, VERSION, integrity(data), "package/bin/tool", "/usr/local/bin/tool")


@dataclass
class Registry:
    """What the loopback registry serves: the tarball bytes and the integrity its metadata publishes."""

    url: str
    tarball: bytes = GOOD
    published: str = field(default_factory=lambda: integrity(GOOD))
    #: Promise more tarball bytes than are sent, then close: a transfer that breaks off.
    truncate: bool = False
    requests: list[str] = field(default_factory=list)


@contextmanager
def serve_registry(tls: ssl.SSLContext | None = None) -> Iterator[Registry]:
    """An npm-registry-shaped HTTP(S) server on 127.0.0.1: ``/<scope>%2f<name>`` metadata, ``/-/`` tarballs."""
    state = Registry(url="")
    scheme = "https" if tls else "http"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            host = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
            if unquote(self.path) == f"/{PACKAGE}" and "%2F" in self.path.upper():
                dist = {"integrity": state.published, "tarball": f"{host}/{PACKAGE}/-/tool-{VERSION}.tgz"}
                body = json.dumps({"name": PACKAGE, "versions": {VERSION: {"dist": dist}}}).encode()
            elif self.path == f"/{PACKAGE}/-/tool-{VERSION}.tgz":
                body = state.tarball
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.truncate and body is state.tarball:
                body = body[: len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def registry() -> Iterator[Registry]:
    with serve_registry() as state:
        yield state


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return mint_tls(tmp_path / "tls")


@pytest.fixture
def tls_registry(tls: TlsFiles) -> Iterator[Registry]:
    with serve_registry(tls.server_context()) as state:
        yield state


@pytest.fixture
def npm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose ``.npmrc`` the test writes, and no TLS or npm settings left in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name in ("SSL_CERT_FILE", "SSL_CERT_DIR") or name.lower().startswith("npm_config_"):
            monkeypatch.delenv(name)
    return home


def test_good_tarball_is_verified_cached_by_digest_and_reused_offline(registry: Registry, tmp_path: Path) -> None:
    spec = spec_for(GOOD)
    cache = tmp_path / "npm"
    path = fetch(spec, registry.url, cache, RecordingProgress())
    assert path == cache / f"{hashlib.sha512(GOOD).hexdigest()}.tgz"
    assert path.read_bytes() == GOOD and os.listdir(cache) == [path.name]
    assert len(registry.requests) == 2  # metadata, then the tarball
    out = io.BytesIO()
    assert extract_member(path, spec.member, out) == len(PROGRAM) and out.getvalue() == PROGRAM
    # A rebuild takes the cached tarball without asking the registry.
    assert fetch(spec, "http://127.0.0.1:9/", cache, RecordingProgress()) == path
    assert len(registry.requests) == 2


def test_registry_publishing_another_integrity_is_refused_and_nothing_cached(
    registry: Registry, tmp_path: Path
) -> None:
    registry.published = integrity(b"some other release")
    with pytest.raises(NpmError) as caught:
        fetch(spec_for(GOOD), registry.url, tmp_path / "npm", RecordingProgress())
    message = str(caught.value)
    assert "\n" not in message and f"publishes integrity {registry.published}" in message
    assert f"the recipe pins {integrity(GOOD)}" in message
    assert os.listdir(tmp_path / "npm") == []
    assert len(registry.requests) == 1  # the tarball was never downloaded


def test_tarball_not_matching_the_integrity_is_refused_and_nothing_cached(registry: Registry, tmp_path: Path) -> None:
    registry.tarball = make_tarball([("package/bin/tool", b"tampered")])  # the metadata still publishes GOOD's
    with pytest.raises(NpmError) as caught:
        fetch(spec_for(GOOD), registry.url, tmp_path / "npm", RecordingProgress())
    message = str(caught.value)
    assert "\n" not in message and "does not match the integrity" in message and "nothing was cached" in message
    assert os.listdir(tmp_path / "npm") == []


def test_a_transfer_that_breaks_off_is_unavailable_and_nothing_cached(registry: Registry, tmp_path: Path) -> None:
    registry.truncate = True
    with pytest.raises(SourceUnavailable, match=f"fetching {PACKAGE}@{VERSION} from {registry.url} failed"):
        fetch(spec_for(GOOD), registry.url, tmp_path / "npm", RecordingProgress())
    assert os.listdir(tmp_path / "npm") == []


def test_a_corrupted_cache_entry_is_fetched_again(registry: Registry, tmp_path: Path) -> None:
    spec = spec_for(GOOD)
    cache = tmp_path / "npm"
    cache.mkdir()
    (cache / f"{spec.sha512}.tgz").write_bytes(b"truncated")
    assert fetch(spec, registry.url, cache, RecordingProgress()).read_bytes() == GOOD
    assert len(registry.requests) == 2


def test_unknown_version_and_unreachable_registry(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NpmError, match=r"lists no version 9\.9\.9 of @banger-test/tool-linux-x64"):
        fetch(replace(spec_for(GOOD), version="9.9.9"), registry.url, tmp_path / "npm", RecordingProgress())
    with pytest.raises(SourceUnavailable, match="answered HTTP 404"):
        fetch(
            replace(spec_for(GOOD), package="@banger-test/other"), registry.url, tmp_path / "npm", RecordingProgress()
        )
    with pytest.raises(SourceUnavailable, match=r"cannot reach http://127\.0\.0\.1:9/"):
        fetch(spec_for(GOOD), "http://127.0.0.1:9/", tmp_path / "npm", RecordingProgress())
    assert os.listdir(tmp_path / "npm") == []


@pytest.mark.parametrize("evil", ["../escape", "package/../../escape", "/etc/cron.d/evil"])
def test_traversal_entry_refuses_the_whole_tarball(tmp_path: Path, evil: str) -> None:
    tarball = tmp_path / "evil.tgz"
    tarball.write_bytes(make_tarball([(evil, b"x"), ("package/bin/tool", PROGRAM)]))
    with pytest.raises(NpmError, match="has an unsafe entry"):
        extract_member(tarball, "package/bin/tool", io.BytesIO())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz"]  # nothing written anywhere


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ([("package/bin/tool", None)], "is not a regular file"),
        ([("package/bin/tool", b"a"), ("package/bin/tool", b"b")], "holds package/bin/tool twice"),
        ([("package/bin/other", b"a")], "has no package/bin/tool"),
        ([("package/bin/big", b"x" * 4096), ("package/bin/tool", b"y")], "unpacks to more than"),
    ],
)
def test_hostile_or_wrong_tarballs_are_refused(
    tmp_path: Path, entries: list[tuple[str, bytes | None]], error: str
) -> None:
    tarball = tmp_path / "t.tgz"
    tarball.write_bytes(make_tarball(entries))
    with pytest.raises(NpmError, match=error):
        extract_member(tarball, "package/bin/tool", io.BytesIO(), max_bytes=1024)


def test_not_a_tarball(tmp_path: Path) -> None:
    tarball = tmp_path / "t.tgz"
    tarball.write_bytes(b"<html>not found</html>")
    with pytest.raises(NpmError, match="is not a readable gzip tarball"):
        extract_member(tarball, "package/bin/tool", io.BytesIO())


@pytest.mark.skipif(os.geteuid() != 0, reason="files in an image tree are chowned to root")
def test_install_puts_only_the_member_at_dest_0755(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "local").mkdir(parents=True)
    (root / "usr" / "local" / "bin").symlink_to("/tmp")  # an escaping parent stays inside the tree
    tarball = tmp_path / "good.tgz"
    tarball.write_bytes(GOOD)
    install_npm_binary(root, spec_for(GOOD), tarball)
    installed = root / "tmp" / "tool"
    info = installed.lstat()
    assert installed.read_bytes() == PROGRAM
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o755, 0, 0)
    assert not (root / "package").exists() and not (root / "tmp" / "README.md").exists()


def test_registry_url_order(tmp_path: Path) -> None:
    npmrc = tmp_path / "npmrc"
    npmrc.write_text("fund=false\nregistry = https://npm.mirror.example/\n")
    assert registry_url("https://configured.example/", {}, [npmrc]) == "https://configured.example/"
    assert registry_url(None, {"NPM_CONFIG_REGISTRY": "http://env.example/"}, [npmrc]) == "http://env.example/"
    assert registry_url(None, {}, [tmp_path / "missing", npmrc]) == "https://npm.mirror.example/"
    assert registry_url(None, {}, [tmp_path / "missing"]) == DEFAULT_REGISTRY == "https://registry.npmjs.org/"
    with pytest.raises(NpmError, match="npm_registry 'ftp://x' is not an http"):
        registry_url("ftp://x", {}, [])


def test_https_registry_signed_by_npms_cafile_is_trusted_without_ssl_cert_file(
    tls_registry: Registry, tls: TlsFiles, npm_home: Path, tmp_path: Path
) -> None:
    """A TLS-intercepting proxy's CA, known to npm through ``cafile=``: the fetch trusts it as npm does."""
    (npm_home / ".npmrc").write_text(f"fund=false\ncafile = {tls.ca}\nregistry={tls_registry.url}\n")
    registry = registry_url(None)
    assert registry == tls_registry.url
    path = fetch(spec_for(GOOD), registry, tmp_path / "npm", RecordingProgress())
    assert path.read_bytes() == GOOD and len(tls_registry.requests) == 2


def test_https_registry_from_an_unknown_ca_is_refused_in_one_line(
    tls_registry: Registry, npm_home: Path, tmp_path: Path
) -> None:
    other_ca = mint_tls(tmp_path / "other").ca
    for npmrc in ("", f"cafile={other_ca}\n"):  # the system trust store, then a cafile of another CA
        (npm_home / ".npmrc").write_text(npmrc)
        with pytest.raises(SourceUnavailable) as caught:
            fetch(spec_for(GOOD), tls_registry.url, tmp_path / "npm", RecordingProgress())
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"cannot reach {tls_registry.url}")
        assert "CERTIFICATE_VERIFY_FAILED" in message and message.endswith(
            "set cafile= in your npmrc to the CA that signs it)"
        )
    assert tls_registry.requests == [] and os.listdir(tmp_path / "npm") == []


def test_tls_context_settings(tls: TlsFiles, tmp_path: Path) -> None:
    npmrc = tmp_path / "npmrc"
    npmrc.write_text("strict-ssl=false\ncafile=/nonexistent/ca.pem\n")
    lines: list[str] = []
    with pytest.raises(
        NpmError, match=r"^npm's cafile /nonexistent/ca.pem cannot be used \(No such file or directory\): fix"
    ):
        npm.tls_context(lines.append, {}, [npmrc])
    assert lines == [
        "ignoring npm's strict-ssl=false: banger always verifies the registry (set cafile= to trust a proxy's CA)"
    ]
    with pytest.raises(NpmError, match="holds no PEM certificate"):
        npm.tls_context(lines.append, {"npm_config_cafile": str(npmrc)}, [])
    # npm's precedence: the environment, then the npmrc files in order; a cafile replaces the system store.
    context = npm.tls_context(lines.append, {"NPM_CONFIG_CAFILE": str(tls.ca)}, [npmrc])
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "banger test CA tls"),),)]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert npm.tls_context(lines.append, {}, []).get_ca_certs() == ssl.create_default_context().get_ca_certs()
