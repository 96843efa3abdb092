"""The live path of ``banger system install|status|restart|uninstall``, as root, without touching the host.

PID 1 is not systemd here, so the test runs banger in its own mount and network
namespaces where ``/etc``, ``/opt``, ``/var`` and ``/root`` are overlays on a tmpfs (the
host's directories stay as they are), ``/run`` is a fresh tmpfs holding
``/run/systemd/system`` (what ``sd_booted()`` looks for), and ``systemctl`` is a
recording stand-in: systemd itself cannot run here, so the test asserts the
exact calls made to it. Everything else is real: the wheelhouse built with
``pip wheel``, the offline virtualenv, the files written under /etc and /opt,
and (once present in the venv) ``bangerd-root --revert`` inside the test's own
network namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.host_overlay import PRIVATE_HOST_MOUNTS

REPO = Path(__file__).resolve().parents[2]
BANGER = Path(sys.executable).parent / "banger"

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$BANGER_TEST_CALLS"
if [ "$1" = is-active ]; then echo active; fi
"""

#: Runs in the namespaces; $T is the test's directory, each step's exit status goes to $T/<step>.rc.
SCRIPT = (
    "set -u\n"
    + PRIVATE_HOST_MOUNTS
    + r"""listing() { find /etc /opt /var/lib /var/cache /run -printf '%p %m %u\n' | sort; }
listing > "$T/before.txt"
step() { name=$1; shift; "$@" > "$T/$name.out" 2> "$T/$name.err"; echo $? > "$T/$name.rc"; }
step install "$BANGER" system install --owner daemon --wheels "$T/wheels"
cp /etc/banger/install.toml "$T/install.toml" 2>/dev/null
ls -l /opt/banger/current > "$T/current.txt" 2>&1
/opt/banger/current/bin/bangerd --version > "$T/bangerd-version.txt" 2>&1
mkdir -p /var/lib/banger/images /var/cache/banger /run/banger /run/banger-root  # what the services would leave
step status "$BANGER" system status --json
step restart "$BANGER" system restart
step uninstall "$BANGER" system uninstall --purge
listing > "$T/after.txt"
"""
)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """banger's wheels and every dependency, as a packager would ship them."""
    wheels = tmp_path_factory.mktemp("wheelhouse")
    dists = [REPO, REPO / "hookspecs", *sorted(p.parent for p in REPO.glob("plugins/*/pyproject.toml"))]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), *map(str, dists)],
        check=True,
        timeout=900,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1764547200"},
    )
    return wheels


def test_live_install_status_restart_uninstall(wheelhouse: Path, tmp_path: Path, banger_env: dict[str, str]) -> None:
    (tmp_path / "up").mkdir()
    (tmp_path / "wheels").symlink_to(wheelhouse)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "systemctl").chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        **banger_env,
        "PATH": f"{fake}:{banger_env['PATH']}",
        "T": str(tmp_path),
        "BANGER": str(BANGER),
        "BANGER_TEST_CALLS": str(calls),
    }
    env.pop("BANGER_INSTALL_TOML")  # the real /etc/banger/install.toml, inside the overlay
    subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", SCRIPT],
        env=env,
        check=True,
        timeout=900,
    )

    def step(name: str) -> tuple[int, str, str]:
        return (
            int((tmp_path / f"{name}.rc").read_text()),
            (tmp_path / f"{name}.out").read_text(),
            (tmp_path / f"{name}.err").read_text(),
        )

    code, out, err = step("install")
    assert code == 0, err
    assert out.startswith("banger dev runs as a service for daemon")
    record = (tmp_path / "install.toml").read_text()
    assert 'owner = "daemon"' in record and 'built_at = "2025-12-01T00:00:00Z"' in record
    assert "-> versions/dev-" in (tmp_path / "current.txt").read_text()
    assert (tmp_path / "bangerd-version.txt").read_text().endswith(", built 2025-12-01T00:00:00Z)\n")

    code, out, err = step("status")
    status = json.loads(out)
    # Both units "active" (the stand-in says so), but no daemon answers on /run/banger/bangerd.sock.
    assert code == 1 and status["units"] == {"bangerd-root.service": "active", "bangerd.service": "active"}
    assert status["daemon"] is None

    assert step("restart") == (0, "restarted bangerd-root.service and bangerd.service\n", "")
    code, out, err = step("uninstall")
    assert code == 0, err
    assert out.startswith("uninstalled banger dev: removed ")

    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable --now bangerd-root.service bangerd.service",
        "is-active bangerd-root.service",
        "is-active bangerd.service",
        "restart bangerd-root.service bangerd.service",
        "disable --now bangerd-root.service bangerd.service",
        "daemon-reload",
    ]
    before = (tmp_path / "before.txt").read_text()
    after = (tmp_path / "after.txt").read_text()
    assert after == before
