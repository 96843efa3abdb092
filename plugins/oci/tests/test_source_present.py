"""A registry tag pulled again through the real daemon: one manifest HEAD and "already present" while its digest holds.

A counting proxy on 127.0.0.1 stands between the daemon and a real
docker-registry, so the test sees every request the pull makes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from plugins.oci.tests.registry_lab import ImageSpec, Layout, Registry, make_layer, write_layout
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
#: A hang guard, not a measurement: a pull of these small images takes seconds.
HANG = 300
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class CountingProxy:
    """Forwards GET and HEAD to ``upstream`` and records each request's method and path."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                proxy.requests.append((self.command, self.path))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                with httpx.Client(timeout=30) as client:
                    answer = client.request(self.command, f"http://{upstream}{self.path}", headers=headers)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_HEAD = forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(registry: Registry) -> Iterator[CountingProxy]:
    counting = CountingProxy(registry.host)
    yield counting
    counting.stop()


def banger(h: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "banger"), *args], env=h.env, capture_output=True, text=True, check=False, timeout=HANG
    )


def push(registry: Registry, path: Path, content: bytes, *, as_index: bool = False) -> Layout:
    files = {"etc/os-release": b"ID=test\n", "sbin/init": b"", "usr/sbin/sshd": b"", "srv/version": content}
    image = ImageSpec([make_layer(files, "gzip")])
    images = [image, ImageSpec(image.layers, architecture="arm64")] if as_index else [image]
    layout = write_layout(path, "v1", images, as_index=as_index)
    registry.push(layout, "team/base", all_images=as_index)
    return layout


def pull(h: DaemonHarness, *args: str) -> dict[str, object]:
    result = banger(h, "image", "pull", *args, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def manifest_requests(proxy: CountingProxy) -> list[tuple[str, str]]:
    return [request for request in proxy.requests if "/manifests/" in request[1]]


def test_a_tag_pulled_again_is_already_present_until_it_moves(
    daemon: DaemonHarness, registry: Registry, proxy: CountingProxy, tmp_path: Path
) -> None:
    first = push(registry, tmp_path / "layout-1", b"one\n")
    ref = f"{proxy.host}/team/base:v1"

    pulled = pull(daemon, ref, "--kernel-ref", "fake-kernel")
    assert pulled["pulled"] is True and pulled["name"] == "base-v1"
    assert (pulled["reference"], pulled["digest"], pulled["kernel_ref"]) == (
        ref,
        first.manifests["amd64"],
        "fake-kernel",
    )
    rootfs = Path(str(pulled["path"]))
    inode = rootfs.stat().st_ino

    proxy.requests.clear()
    again = pull(daemon, ref)
    assert again["pulled"] is False
    assert proxy.requests == [("HEAD", "/v2/team/base/manifests/v1")]
    assert (again["created_at"], rootfs.stat().st_ino) == (pulled["created_at"], inode)

    other_kernel = banger(daemon, "image", "pull", ref, "--kernel-ref", "generic-6.6")
    assert other_kernel.returncode == 1
    assert other_kernel.stderr.strip().splitlines()[-1] == (
        f"banger: error: image base-v1 is already present with kernel fake-kernel: "
        f"add --force to pull {ref} again with kernel generic-6.6"
    )

    without_sshd_step = banger(daemon, "image", "pull", ref, "--with-sshd")
    assert without_sshd_step.returncode == 1, "present without --with-sshd: not silently answered from the store"
    assert without_sshd_step.stderr.strip().splitlines()[-1] == (
        f"banger: error: image base-v1 is already present without --with-sshd: add --force to pull {ref} again with it"
    )

    proxy.requests.clear()
    forced = pull(daemon, ref, "--force", "--kernel-ref", "fake-kernel")
    assert forced["pulled"] is True and forced["digest"] == first.manifests["amd64"]
    assert ("GET", "/v2/team/base/manifests/v1") in proxy.requests

    moved = push(registry, tmp_path / "layout-2", b"two\n")
    proxy.requests.clear()
    repulled = pull(daemon, ref, "--kernel-ref", "fake-kernel")
    assert repulled["pulled"] is True and repulled["digest"] == moved.manifests["amd64"] != first.manifests["amd64"]
    assert manifest_requests(proxy)[:2] == [
        ("HEAD", "/v2/team/base/manifests/v1"),
        ("GET", "/v2/team/base/manifests/v1"),
    ]
    assert [i.name for i in daemon.client().images.list()] == ["base-v1"]


def test_image_show_tells_reference_digests_and_kernel_of_an_index(
    daemon: DaemonHarness, registry: Registry, tmp_path: Path
) -> None:
    layout = push(registry, tmp_path / "layout", b"indexed\n", as_index=True)
    ref = f"{registry.host}/team/base:v1"
    pull(daemon, ref, "--kernel-ref", "fake-kernel")

    shown = banger(daemon, "image", "show", "base-v1")
    assert shown.returncode == 0, shown.stderr
    fields = {key: value.strip() for key, value in (line.split(None, 1) for line in shown.stdout.splitlines())}
    assert fields["source"] == "oci" and fields["reference"] == ref and fields["kernel"] == "fake-kernel"
    assert fields["digest"] == layout.index_digest
    assert shown.stdout.count(f"manifest digest  {layout.manifests['amd64']}") == 1
    data = json.loads(banger(daemon, "image", "show", "base-v1", "--json").stdout)
    assert (data["digest"], data["meta"]["manifest_digest"]) == (layout.index_digest, layout.manifests["amd64"])

    # Pinned by digest: the first pull stores it under its own name; later ones ask the registry nothing.
    pinned_ref = f"{registry.host}/team/base@{layout.index_digest}"
    pinned = pull(daemon, pinned_ref, "--kernel-ref", "fake-kernel")
    assert pinned["pulled"] is True and pinned["digest"] == layout.index_digest
    registry.stop()
    assert pull(daemon, pinned_ref)["pulled"] is False
