"""A bridged guest of an unprivileged daemon, through ``bangerd-root``, booted under QEMU TCG (issue 17).

The supported host model end to end, in a test network namespace: the owner
(a throw-away user) runs ``bangerd`` with no config at all, so it starts for
usernet and sets nothing up; ``banger vm create --network bridge`` then gets
the bridge, NAT, a tap owned by the owner and the ``.vm`` DNS socket on port
53 from the root helper, and the guest boots, answers ssh and resolves as
``web.vm``. ``bangerd-root --revert`` leaves the namespace as it found it.

The golden image and kernel come from ``$BANGER_TEST_CACHE`` (built there by
the e2e tests, or here first as root): their cache entries are *copied* into
the owner's cache, never linked or chmod-ed, so the shared cache stays root's.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.netns import NetNamespace
from tests.support.e2e import E2E, GOLDEN, make_env, test_cache
from tests.support.roothelper import OwnerDaemon, RootHelper, process_status

pytestmark = pytest.mark.e2e

BRIDGE_IP = "172.16.0.1"
#: The plugin cache entries an owner needs to pull the golden image and its kernel without root.
CACHED = ("debootstrap/images", "debian/debs")


def seed_owner_cache(owner: pwd.struct_passwd, scratch: Path) -> None:
    """Copy the golden image build and the kernel package from the shared test cache into the owner's cache."""
    shared = test_cache() / "xdg-cache" / "banger" / "plugins"
    if not any((shared / "debootstrap" / "images").glob("*/rootfs.ext4")):
        # A fresh machine: build it once as root, the way the e2e tests do.
        harness = E2E(env=make_env(scratch), root=scratch)
        try:
            harness.banger("image", "pull", GOLDEN, check=True, timeout=3600)
        finally:
            harness.cleanup()
            shutil.rmtree(harness.env["XDG_RUNTIME_DIR"], ignore_errors=True)
    cache = Path(owner.pw_dir) / ".cache"
    for entry in CACHED:
        target = cache / "banger" / "plugins" / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", "--sparse=always", str(shared / entry), str(target)], check=True)
    for directory, dirs, files in os.walk(cache):
        for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
            os.chown(name, owner.pw_uid, owner.pw_gid)


def links(ns: NetNamespace) -> str:
    return ns.run(["ip", "-o", "link", "show"]).stdout


def test_a_usernet_owner_daemon_without_config_boots_a_bridged_vm_through_the_root_helper(
    owner: pwd.struct_passwd,
    helper_ns: NetNamespace,
    root_helper: RootHelper,
    owner_daemon: OwnerDaemon,
    tmp_path: Path,
) -> None:
    ns, uid = helper_ns, owner.pw_uid
    seed_owner_cache(owner, tmp_path)
    owner_daemon.start()
    assert not (owner_daemon.home / ".config" / "banger" / "config.toml").exists()
    assert "banger0" not in links(ns)  # started for usernet: nothing of the bridge yet
    owner_daemon.banger("image", "pull", GOLDEN, check=True, timeout=1800)

    owner_daemon.banger("vm", "create", "--name", "web", "--network", "bridge", check=True, timeout=900)
    vm = json.loads(owner_daemon.banger("vm", "show", "web", "--json", check=True).stdout)
    assert vm["state"] == "running" and vm["network"] == "bridge", vm
    ip, tap = str(vm["guest_ip"]), "bgr" + str(vm["id"])[:12]

    # The host side, made by the helper: the owner's tap on banger0, NAT for the cidr, forwarding on.
    assert ns.run(["cat", f"/sys/class/net/{tap}/owner"]).stdout.strip() == str(uid)
    assert "master banger0" in ns.run(["ip", "-o", "link", "show", tap]).stdout
    assert (
        'ip saddr 172.16.0.0/24 oifname != "banger0" masquerade'
        in ns.run(["nft", "list", "table", "ip", "banger"]).stdout
    )
    assert ns.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"

    # .vm DNS on port 53 of the bridge: a socket the helper bound and passed to the owner's daemon.
    dig = ns.run(["dig", "+short", "+time=2", "+tries=2", f"@{BRIDGE_IP}", "web.vm"], check=False)
    assert dig.stdout.strip() == ip, dig

    # The guest answers over the bridge; nothing of banger runs as root but the helper.
    assert owner_daemon.banger("vm", "ssh", "web", "--", "cat", "/etc/hostname", timeout=120).stdout == "web\n"
    for pid in (owner_daemon.pid(), int(vm["pid"])):
        status = process_status(pid)
        assert status["Uid"].split() == [str(uid)] * 4 and int(status["CapEff"], 16) == 0, (pid, status)
    calls = re.findall(r"uid (\d+) pid \d+: (\w+)\(", root_helper.log.read_text())
    assert {caller for caller, _ in calls} == {str(uid)}  # every call came from the owner's daemon
    wanted = {"host_routes", "ensure_bridge", "ensure_nat", "create_tap", "rename_tap", "bind_dns_socket"}
    assert wanted <= {method for _, method in calls}

    # Deleted, daemon stopped, helper reverted: the namespace is as the test made it.
    owner_daemon.banger("vm", "delete", "--force", "web", check=True, timeout=300)
    assert tap not in links(ns)
    owner_daemon.stop()
    reverted = root_helper.revert()
    assert "set net.ipv4.ip_forward back to 0" in reverted, reverted
    assert ns.run(["nft", "list", "table", "ip", "banger"], check=False).returncode != 0
    assert "banger" not in links(ns) and "bgr" not in links(ns)
    assert ns.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "0"
