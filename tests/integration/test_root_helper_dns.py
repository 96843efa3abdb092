"""``*.vm`` routing for an owner daemon through ``bangerd-root`` (issue 17): ``HostOps.route_dns``.

systemd-resolved cannot run here (PID 1 is not systemd), so the boundary is
``resolvectl`` itself: a recording fake is laid over the first directory of
the helper's fixed ``PATH`` in the helper's own mount namespace (nothing on
the host changes) and logs each argv as one JSON list a line. Everything else
is real: the helper as root, the owner a throw-away user, the socket, the
daemon, the bridge in a test network namespace.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.host.rootd import SAFE_PATH
from tests.netns import NetNamespace
from tests.support.roothelper import OwnerDaemon, RootHelper, call_helper, helper_root

#: The directory of the helper's PATH searched first: the fake goes there.
HELPER_BIN = SAFE_PATH.split(":")[0]

#: A tmpfs over HELPER_BIN holding only the fake ``resolvectl`` ($1), then the helper.
_FAKE_VIEW = f"""set -e
mount -t tmpfs -o mode=0755 tmpfs {HELPER_BIN}
cp "$1" {HELPER_BIN}/resolvectl
shift
exec "$@"
"""

ROUTE_CALLS = [
    ["dns", "banger0", "172.16.0.1"],
    ["domain", "banger0", "~vm"],
    ["default-route", "banger0", "false"],
    ["dnssec", "banger0", "no"],
    ["dnsovertls", "banger0", "no"],
]


def resolvectl_calls(root: Path) -> list[list[str]]:
    log = root / "resolvectl.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def root_helper(helper_ns: NetNamespace, owner: pwd.struct_passwd) -> Iterator[RootHelper]:
    """The shared fixture's helper, with the recording ``resolvectl`` first on its PATH."""
    with helper_root() as root:
        fake = root / "fake-resolvectl"
        fake.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\n"
            f"with open({str(root / 'resolvectl.log')!r}, 'a') as log:\n"
            "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        )
        fake.chmod(0o755)
        running = RootHelper(helper_ns, owner, root, view=["sh", "-c", _FAKE_VIEW, "sh", str(fake)])
        try:
            running.start()
            yield running
        finally:
            running.stop()


def test_the_owner_gets_vm_routed_on_the_bridge_and_nothing_else(
    owner_daemon: OwnerDaemon, root_helper: RootHelper
) -> None:
    """A compromised owner daemon may route ``*.vm`` to the bridge address on banger's bridge: that is all."""
    outcomes = call_helper(
        owner_daemon,
        [
            ("route_dns", {"link": "eth0", "server": "172.16.0.1", "domain": "vm"}),
            ("route_dns", {"link": "bangerother", "server": "172.16.0.1", "domain": "vm"}),
            ("route_dns", {"link": "../x", "server": "172.16.0.1", "domain": "vm"}),
            ("route_dns", {"link": "banger0", "server": "1.1.1.1", "domain": "vm"}),
            ("route_dns", {"link": "banger0", "server": "172.16.0.2", "domain": "vm"}),
            ("route_dns", {"link": "banger0", "server": "172.16.0.1:0", "domain": "vm"}),
            ("route_dns", {"link": "banger0", "server": "172.16.0.1", "domain": "com"}),
            ("route_dns", {"link": "banger0", "server": "172.16.0.1", "domain": "../x"}),
        ],
    )
    assert outcomes == [
        "ValueError: invalid link name 'eth0': banger only manages links whose names start with 'banger'",
        "ValueError: link 'bangerother' is not banger's bridge 'banger0': *.vm is routed only there",
        "ValueError: invalid link name '../x': use 1-15 characters of A-Z, a-z, 0-9, '_' and '-' (kernel limit)",
        "ValueError: DNS server 1.1.1.1 is not a usable address inside cidr 172.16.0.0/24",
        "ValueError: DNS server '172.16.0.2' is not the bridge address 172.16.0.1",
        "ValueError: DNS server '172.16.0.1:0': the port must be between 1 and 65535",
        "ValueError: domain 'com' is not 'vm': banger routes only its own *.vm names",
        "ValueError: domain '../x' is not 'vm': banger routes only its own *.vm names",
    ]
    assert resolvectl_calls(root_helper.root) == []

    ok = call_helper(owner_daemon, [("route_dns", {"link": "banger0", "server": "172.16.0.1:53", "domain": "vm"})])
    assert ok == ["ok"]
    assert resolvectl_calls(root_helper.root) == [["dns", "banger0", "172.16.0.1:53"], *ROUTE_CALLS[1:]]
    assert "route_dns(link='banger0', server='172.16.0.1:53', domain='vm')" in root_helper.log.read_text()


def test_an_owner_daemon_with_the_bridge_routes_vm_through_the_helper(
    owner_daemon: OwnerDaemon, root_helper: RootHelper, owner: pwd.struct_passwd
) -> None:
    """The daemon as the owner sets up the bridge at start, serves DNS there and routes ``*.vm`` via the helper."""
    config = owner_daemon.home / ".config" / "banger" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('network_backend = "bridge"\ndns_router = "resolved"\n')
    for path in (config.parent.parent, config.parent, config):
        os.chown(path, owner.pw_uid, owner.pw_gid)

    owner_daemon.start()
    deadline = time.monotonic() + 60  # the bridge is set up after the daemon answers: bounded wait for the route
    while "*.vm routing:" not in owner_daemon.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)

    log = owner_daemon.log.read_text()
    assert "*.vm routing: systemd-resolved sends *.vm queries to 172.16.0.1 on banger0" in log, log
    assert resolvectl_calls(root_helper.root) == ROUTE_CALLS
    assert "route_dns(link='banger0', server='172.16.0.1', domain='vm')" in root_helper.log.read_text()
