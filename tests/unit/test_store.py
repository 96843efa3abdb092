"""The image store's locking, in-process against a real Runtime, SQLite file and provider plugins."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from banger_core.common.errors import NotFound
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.vm import CreateRequest, VmService
from banger_core.testing import FakeSite, RecordingProgress
from tests.support.daemon import install_fake_plugin

#: A hang guard, not a measurement.
HANG = 60

GATED = '''
import threading
from banger_hookspecs import ImageArtifact, ImageSource, hookimpl

entered = threading.Event()
release = threading.Event()
pulls = []


class Gated:
    """Images named gated-*; a pull of gated-slow waits until the test releases it."""

    def __init__(self, ctx):
        pass

    def claims(self, ref):
        return ref.startswith("gated-")

    def available(self):
        return []

    def pull(self, ref, dest, progress):
        pulls.append(ref)
        if ref == "gated-slow":
            entered.set()
            assert release.wait(60)
        (dest / "rootfs.ext4").write_bytes(b"not really ext4")
        return ImageArtifact(ref, "1", dest / "rootfs.ext4", "fake-kernel", "0" * 64, 15, {})


@hookimpl
def banger_image_sources():
    return [ImageSource("gated", "test images that wait", Gated, priority=1)]
'''


@pytest.fixture
def runtime(banger_env: dict[str, str], banger_site: FakeSite) -> Iterator[tuple[Runtime, ModuleType]]:
    install_fake_plugin(banger_site)
    # A network backend that exists without the builtin plugins (tox -e core has none).
    banger_site.write_dist_info("banger-fakenet-testplugin", "0.0.1", {"fakenet": "tests.support.banger_fakenet"})
    module_name = banger_site.add_plugin("gated", "banger-gated-testplugin", source=GATED)
    rt = Runtime(banger_env)
    rt.open()
    module = __import__(module_name)
    try:
        yield rt, module
    finally:
        module.release.set()
        rt.close()


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # handed to the test's assertions
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_two_pulls_of_one_image_download_it_once(runtime: tuple[Runtime, ModuleType]) -> None:
    rt, gated = runtime
    store = Store(rt)
    first, first_out = in_thread(store.pull_image, "gated-slow", RecordingProgress())
    assert gated.entered.wait(HANG)
    second, second_out = in_thread(store.pull_image, "gated-slow", RecordingProgress())
    gated.release.set()
    first.join(HANG)
    second.join(HANG)
    assert "error" not in first_out and "error" not in second_out, (first_out, second_out)
    assert gated.pulls == ["gated-slow"]
    assert sorted([first_out["result"].pulled, second_out["result"].pulled]) == [False, True]
    assert first_out["result"].kernel == second_out["result"].kernel == "fake-kernel"


def test_a_pull_of_another_image_does_not_wait_for_a_slow_one(runtime: tuple[Runtime, ModuleType]) -> None:
    rt, gated = runtime
    store = Store(rt)
    slow, slow_out = in_thread(store.pull_image, "gated-slow", RecordingProgress())
    assert gated.entered.wait(HANG)
    fast, fast_out = in_thread(store.pull_image, "gated-fast", RecordingProgress())
    fast.join(HANG)
    assert "result" in fast_out and fast_out["result"].pulled is True, fast_out
    assert slow.is_alive() and not slow_out  # the slow pull was still downloading meanwhile
    gated.release.set()
    slow.join(HANG)
    assert slow_out["result"].pulled is True


def test_a_create_racing_an_image_delete_is_refused(runtime: tuple[Runtime, ModuleType]) -> None:
    """The delete saw no users; the create, resolved before the delete, must not orphan a VM."""
    rt, _ = runtime
    store = Store(rt)
    vms = VmService(rt, store)
    store.pull_image("fake-tiny", RecordingProgress())
    request = CreateRequest(name="late", image="fake-tiny", backend="fakevmm", network="fakeuser", start=False)
    values, sources = vms.resolve(request)
    store.delete_image("fake-tiny")
    with pytest.raises(NotFound, match=r"^image 'fake-tiny' was deleted meanwhile: run `banger image pull fake-tiny`$"):
        vms._insert(request, values, sources)
    assert vms.all() == []
