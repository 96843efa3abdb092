"""``bangerd-root`` as root, ``bangerd`` as a throw-away owner, in a test network namespace (issue 17).

What crosses the helper's socket is checked for real: who may connect
(SO_PEERCRED), what a hostile caller with the owner's uid can get done (nothing
outside banger's bridge, taps, cidr), and that a refused call changes nothing.
The guest-booting half lives in ``test_root_helper_vm.py``.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import NetNamespace, temporary_netns
from tests.support.roothelper import (
    OwnerDaemon,
    RootHelper,
    call_helper,
    helper_root,
    kill_processes_of,
    process_status,
    raw_frames,
    run_python_as,
    throwaway_user,
)

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def owner() -> Iterator[pwd.struct_passwd]:
    with throwaway_user() as user:
        yield user


@pytest.fixture
def ns() -> Iterator[NetNamespace]:
    with temporary_netns() as namespace:
        yield namespace


@pytest.fixture
def helper(ns: NetNamespace, owner: pwd.struct_passwd) -> Iterator[RootHelper]:
    with helper_root() as root:
        running = RootHelper(ns, owner, root)
        try:
            running.start()
            yield running
        finally:
            running.stop()


@pytest.fixture
def daemon(ns: NetNamespace, owner: pwd.struct_passwd, helper: RootHelper) -> Iterator[OwnerDaemon]:
    runtime = Path("/tmp") / f"bgr-{owner.pw_name}"
    running = OwnerDaemon(ns, owner, helper, runtime)
    try:
        yield running
    finally:
        running.stop()
        kill_processes_of(owner.pw_uid)
        subprocess.run(["rm", "-rf", str(runtime), f"{runtime}.stderr"], check=False)


def host_state(ns: NetNamespace) -> tuple[str, ...]:
    """Links (flags, master, tap owners), addresses, the whole nftables ruleset and IPv4 forwarding, as text.

    Not ``ip -d``: a bridge's timers there change by themselves.
    """
    owners = ns.run(["sh", "-c", "grep -H . /sys/class/net/*/owner || true"]).stdout
    return (
        ns.run(["ip", "-o", "link", "show"]).stdout,
        ns.run(["ip", "-o", "addr", "show"]).stdout,
        owners,
        ns.run(["nft", "list", "ruleset"]).stdout,
        ns.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout,
    )


def connect_as(user: pwd.struct_passwd, ns: NetNamespace, path: Path) -> str:
    """Connect to ``path`` as ``user`` and try one call; the one-line outcome."""
    code = (
        "from pathlib import Path\n"
        "from banger_core.host.rootclient import RootHelperHostOps\n"
        "try:\n"
        f"    RootHelperHostOps(Path({str(path)!r})).list_links('bgr')\n"
        "    print('ok')\n"
        "except Exception as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}')\n"
    )
    return "\n".join(run_python_as(user, ns, code))


def test_the_socket_is_reachable_by_the_owner_only(helper: RootHelper, owner: pwd.struct_passwd) -> None:
    directory = helper.socket.parent.stat()
    assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == (0, owner.pw_gid, 0o710)
    sock = helper.socket.stat()
    assert stat.S_ISSOCK(sock.st_mode) and (sock.st_uid, stat.S_IMODE(sock.st_mode)) == (owner.pw_uid, 0o600)
    assert connect_as(owner, helper.ns, helper.socket) == "ok"
    refused = connect_as(NOBODY, helper.ns, helper.socket)
    assert refused.startswith("Unavailable: the root helper does not answer on") and "Permission denied" in refused


def test_so_peercred_refuses_another_uid_even_when_the_file_modes_let_it_in(
    helper: RootHelper, owner: pwd.struct_passwd
) -> None:
    """Modes are the first fence; the kernel's word on the peer's uid is the one that counts."""
    os.chmod(helper.socket.parent, 0o711)
    os.chmod(helper.socket, 0o666)
    before = host_state(helper.ns)
    assert connect_as(NOBODY, helper.ns, helper.socket) == (
        f"NotPrivileged: bangerd-root serves only uid {owner.pw_uid} and root, not uid {NOBODY.pw_uid}"
    )
    assert f"refused a connection from uid {NOBODY.pw_uid}" in helper.log.read_text()
    assert host_state(helper.ns) == before


def test_hostile_requests_are_refused_and_change_nothing(daemon: OwnerDaemon, helper: RootHelper) -> None:
    """A compromised owner daemon, calling the helper directly: banger's own interfaces and cidr only."""
    ns, uid = helper.ns, daemon.owner.pw_uid
    # Interfaces banger does not own: a veth with a tap's prefix (its peer named like a host NIC),
    # a root-owned tap, a bridge with banger's prefix that is not the configured one.
    ns.run(["ip", "link", "add", "bgrdummy", "type", "veth", "peer", "name", "eth9"])
    ns.run(["ip", "tuntap", "add", "bgrforeign", "mode", "tap", "user", "0"])
    ns.run(["ip", "link", "add", "bangerother", "type", "bridge"])
    ok = call_helper(daemon, [("ensure_bridge", {"name": "banger0", "address": "172.16.0.1/24"})])
    assert ok == ["ok"]
    before = host_state(ns)
    outcomes = call_helper(
        daemon,
        [
            ("create_tap", {"name": "../x", "bridge": "banger0", "owner_uid": uid}),
            ("create_tap", {"name": "bgrmine", "bridge": "banger0", "owner_uid": 0}),
            ("create_tap", {"name": "bgrmine", "bridge": "bangerother", "owner_uid": uid}),
            ("ensure_nat", {"cidr": "0.0.0.0/0", "bridge": "banger0"}),
            ("ensure_nat", {"cidr": "10.0.0.0/8", "bridge": "banger0"}),
            ("ensure_bridge", {"name": "banger0", "address": "10.0.0.1/8"}),
            ("delete_tap", {"name": "bgrdummy"}),
            ("delete_tap", {"name": "bgrforeign"}),
            ("rename_tap", {"name": "bgrforeign", "new_name": "bgrstolen"}),
            ("delete_bridge", {"name": "bangerother"}),
            ("delete_bridge", {"name": "eth9"}),
            ("bind_dns_socket", {"address": "127.0.0.1", "port": 53}),
            ("list_links", {"prefix": "eth"}),
        ],
    )
    assert outcomes == [
        "ValueError: invalid tap name '../x': use 1-15 characters of A-Z, a-z, 0-9, '_' and '-' (kernel limit)",
        f"HostOpError: the root helper refused create_tap: create_tap(owner_uid=0): only the owner uid {uid} "
        "is allowed",
        "ValueError: bridge 'bangerother' is not banger's bridge 'banger0': banger leaves it alone",
        "ValueError: NAT network 0.0.0.0/0 lies outside the configured cidr 172.16.0.0/24",
        "ValueError: NAT network 10.0.0.0/8 lies outside the configured cidr 172.16.0.0/24",
        "ValueError: bridge address 10.0.0.1/8 is not inside cidr 172.16.0.0/24 with prefix /24",
        "HostOpError: network interface bgrdummy is not a tap: banger left it alone",
        f"HostOpError: tap bgrforeign belongs to uid 0, not to banger's owner {uid}: banger left it alone",
        f"HostOpError: tap bgrforeign belongs to uid 0, not to banger's owner {uid}: banger left it alone",
        "ValueError: bridge 'bangerother' is not banger's bridge 'banger0': banger leaves it alone",
        "ValueError: invalid bridge name 'eth9': banger only manages bridges whose names start with 'banger'",
        "ValueError: DNS address 127.0.0.1 is not a usable address inside cidr 172.16.0.0/24",
        "ValueError: invalid link prefix 'eth': it must start with 'banger' or 'bgr'",
    ]
    assert host_state(ns) == before


def test_malformed_frames_are_refused_with_a_reason(daemon: OwnerDaemon, helper: RootHelper) -> None:
    """Unknown methods, missing or extra arguments, wrong types: refused on the wire, before any host code."""
    before = host_state(helper.ns)
    answers = raw_frames(
        daemon,
        [
            {"method": "__init__", "args": {}},
            {"method": "ensure_bridge", "args": {"name": "banger0"}},
            {"method": "ensure_bridge", "args": {"name": "banger0", "address": "172.16.0.1/24", "x": 1}},
            {"method": "create_tap", "args": {"name": "bgrx", "bridge": "banger0", "owner_uid": "1000"}},
            {"method": "create_tap", "args": {"name": "bgrx", "bridge": "banger0", "owner_uid": True}},
            ["ensure_bridge", "banger0"],
        ],
    )
    assert answers == [
        {"error": {"type": "ProtocolError", "message": m}}
        for m in (
            "unknown method '__init__': the helper serves only the HostOps methods",
            "ensure_bridge takes exactly the arguments ['name', 'address']",
            "ensure_bridge takes exactly the arguments ['name', 'address']",
            "create_tap(owner_uid) must be an integer",
            "create_tap(owner_uid) must be an integer",
            'a request is an object with exactly "method" and "args"',
        )
    ]
    assert host_state(helper.ns) == before


def test_the_owner_daemon_runs_unprivileged_and_its_socket_refuses_others(
    daemon: OwnerDaemon, owner: pwd.struct_passwd
) -> None:
    daemon.start()
    status = process_status(daemon.pid())
    assert status["Uid"].split() == [str(owner.pw_uid)] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert daemon.banger("vm", "list", "--json", check=True).stdout.strip() == "[]"
    sock = daemon.runtime / "bangerd.sock"
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r})\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert run_python_as(NOBODY, daemon.ns, code) == ["PermissionError"]
