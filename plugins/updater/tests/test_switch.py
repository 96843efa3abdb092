"""The live switch on a ``system install --root`` rendered root: systemctl, the daemon, doctor, and going back.

systemd cannot run here, so ``systemctl`` is a recording stand-in on PATH (the test asserts
the exact calls) and bangerd a stand-in on a Unix socket that answers ``GET /v1/daemon`` as
the version ``current`` points at (what a restarted bangerd does). Everything else is real:
the signed release, the venv pip builds, the flip, install.toml, and the new version's own
``banger doctor``, which the test release fails on purpose when told to.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.common.errors import BangerError
from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from banger_updater.release import Version
from banger_updater.run import Updater, rollback
from banger_updater.swap import Installation, SystemdServices
from plugins.updater.tests.release_lab import tree
from plugins.updater.tests.servers import FakeDaemon

pytestmark = pytest.mark.unit

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$BANGER_TEST_CALLS"
"""
RESTARTS = ["restart bangerd-root.service", "restart bangerd.service"]


class Quiet:
    def step(self, message: str) -> None:
        pass

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemctl's recorded calls (the stand-in is first on PATH)."""
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    (fakebin / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fakebin / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fakebin}:{os.environ['PATH']}")
    recorded = tmp_path / "systemctl-calls"
    monkeypatch.setenv("BANGER_TEST_CALLS", str(recorded))
    recorded.touch()
    return recorded


@pytest.fixture
def live(installed: Path) -> Iterator[tuple[Installation, SystemdServices, FakeDaemon]]:
    """The rendered install, its systemd services as an update drives them, and the stand-in bangerd."""
    inst = Installation(installed, installed / "etc/banger/install.toml")
    with tempfile.TemporaryDirectory(prefix="bgr-", dir="/tmp") as runtime:  # short: a Unix socket path
        socket = Path(runtime) / "bangerd.sock"
        daemon = FakeDaemon(socket, inst.current_link)
        with daemon.running():
            yield inst, SystemdServices(socket, inst.current_link, ready_timeout=20), daemon


def updater(releases: Path, lab: TrustLab) -> Updater:
    config = {
        "update_release_url": releases.as_uri(),
        "update_identity": TEST_IDENTITY,
        "update_issuer": TEST_ISSUER,
        "sigstore_trusted_root": str(lab.trusted_root),
    }
    return Updater(config, Quiet())


def record_text(inst: Installation) -> str:
    return inst.record_path.read_text()


def test_a_good_update_restarts_both_services_in_order_and_passes_doctor(
    live: tuple[Installation, SystemdServices, FakeDaemon], calls: Path, releases: Path, trust_lab: TrustLab
) -> None:
    inst, services, _ = live
    summary = updater(releases, trust_lab).install(inst, Version(0, 2, 0), services, dry_run=False)
    assert summary == "banger v0.1.0 -> v0.2.0 (services restarted, doctor passed); v0.1.0 kept for --rollback"
    assert calls.read_text().splitlines() == RESTARTS
    assert str(inst.current_link.readlink()) == "versions/v0.2.0"
    assert 'version = "v0.2.0"' in record_text(inst)


def test_a_failing_doctor_after_the_flip_goes_back_and_shows_the_original_error(
    live: tuple[Installation, SystemdServices, FakeDaemon],
    calls: Path,
    releases: Path,
    trust_lab: TrustLab,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inst, services, _ = live
    monkeypatch.setenv("BANGER_TEST_DOCTOR_FAILS", "v0.2.0")
    before, record = tree(inst.layout.root), record_text(inst)
    with pytest.raises(BangerError) as failed:
        updater(releases, trust_lab).install(inst, Version(0, 2, 0), services, dry_run=False)
    assert str(failed.value) == (
        "switching to v0.2.0 failed: banger doctor of v0.2.0 failed: "
        "FAIL fake the v0.2.0 test release fails its doctor on purpose; back on v0.1.0 (services restarted)"
    )
    assert calls.read_text().splitlines() == RESTARTS + RESTARTS  # onto the new version, then back
    assert str(inst.current_link.readlink()) == "versions/v0.1.0"
    assert record_text(inst) == record
    assert tree(inst.layout.root) == before  # the new version's directory is gone again


def test_a_daemon_that_does_not_come_back_as_the_new_version_is_a_failure(
    live: tuple[Installation, SystemdServices, FakeDaemon], calls: Path, releases: Path, trust_lab: TrustLab
) -> None:
    inst, _, _ = live
    silent = SystemdServices(inst.layout.root / "no-daemon.sock", inst.current_link, ready_timeout=0.5)
    with pytest.raises(BangerError, match=r"bangerd did not come back as v0\.2\.0 on .* within 0 s \(no answer\)"):
        updater(releases, trust_lab).install(inst, Version(0, 2, 0), silent, dry_run=False)
    assert calls.read_text().splitlines() == RESTARTS + RESTARTS
    assert str(inst.current_link.readlink()) == "versions/v0.1.0"


def test_a_busy_daemon_refuses_the_update_before_anything_changes(
    live: tuple[Installation, SystemdServices, FakeDaemon], calls: Path, releases: Path, trust_lab: TrustLab
) -> None:
    inst, services, daemon = live
    daemon.in_progress = {"vm create": 1, "image pull": 2}
    before = tree(inst.layout.root)
    with pytest.raises(BangerError) as refused:
        updater(releases, trust_lab).install(inst, Version(0, 2, 0), services, dry_run=False)
    assert str(refused.value) == (
        "bangerd is busy (image pull x2, vm create x1): let it finish, then run `banger update` again"
    )
    assert calls.read_text() == "" and tree(inst.layout.root) == before


def test_rollback_restarts_onto_the_kept_version(
    live: tuple[Installation, SystemdServices, FakeDaemon], calls: Path, releases: Path, trust_lab: TrustLab
) -> None:
    inst, services, _ = live
    updater(releases, trust_lab).install(inst, Version(0, 2, 0), services, dry_run=False)
    after_update = Installation(inst.layout.root, inst.record_path)
    summary = rollback(after_update, services, Quiet())
    assert (
        summary
        == "banger v0.2.0 -> v0.1.0 (services restarted, doctor passed); v0.2.0 kept (--rollback again returns to it)"
    )
    assert calls.read_text().splitlines() == RESTARTS + RESTARTS
    assert str(inst.current_link.readlink()) == "versions/v0.1.0"
    assert 'version = "v0.1.0"' in record_text(inst)
