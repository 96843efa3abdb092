"""The original banger's config keys, wired for real: a running daemon acts on each one."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from banger_core.common import sshconfig
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent


def banger(h: DaemonHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "banger", *args], env=h.env, capture_output=True, text=True, timeout=120)


def write_config(h: DaemonHarness, text: str) -> None:
    (Path(h.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml").write_text(text)


def test_ssh_key_path_is_the_key_vms_trust_and_ssh_uses(daemon: DaemonHarness) -> None:
    home = Path(daemon.env["HOME"])
    write_config(daemon, 'default_image = "fake-tiny"\nssh_key_path = "~/keys/banger"\n')
    client = daemon.client()
    client.images.pull("fake-tiny")
    vm = client.vms.create(name="keyed", backend="fakevmm", start=False)
    key = home / "keys" / "banger"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not (daemon.state / "ssh" / "id_ed25519").exists()
    # `ssh NAME.vm` (banger's generated ssh_config, rewritten on every VM change) uses it too.
    assert f"IdentityFile {key}\n" in sshconfig.generated_path(daemon.env).read_text()
    work = daemon.state / "vms" / vm.id / "work.ext4"
    authorized = subprocess.run(
        ["debugfs", "-R", "cat /.ssh/authorized_keys", str(work)], capture_output=True, text=True, check=True
    ).stdout
    assert authorized.strip() == (home / "keys" / "banger.pub").read_text().strip()


def test_ssh_key_path_without_its_public_half_stops_the_daemon_with_one_line(daemon: DaemonHarness) -> None:
    key = Path(daemon.env["HOME"]) / "id_mine"
    key.write_text("not really a key\n")
    write_config(daemon, 'ssh_key_path = "~/id_mine"\n')
    result = banger(daemon, "vm", "list")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"banger: error: the daemon failed to start: ssh key {key} has no public key {key}.pub: point ssh_key_path "
        "in config.toml at a private key with its .pub beside it (`ssh-keygen -y -f KEY > KEY.pub` makes one), "
        "or unset it"
    )
    assert key.read_text() == "not really a key\n"


def test_default_image_name_picks_the_image_of_new_vms(daemon: DaemonHarness) -> None:
    write_config(daemon, 'default_image_name = "fake-tiny"\n')
    client = daemon.client()
    client.images.pull("fake-tiny")
    plan = client.vms.plan(backend="fakevmm")
    assert plan.values.image == "fake-tiny" and plan.sources["image"] == "config"
    assert client.vms.create(name="aliased", backend="fakevmm", start=False).image == "fake-tiny"
