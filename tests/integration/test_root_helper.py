"""``bangerd-root`` as root, ``bangerd`` as a throw-away owner, in a test network namespace (issue 17).

What crosses the helper's socket is checked for real: who may connect
(SO_PEERCRED), what a hostile caller with the owner's uid can get done (nothing
outside banger's bridge, taps, cidr), and that a refused call changes nothing.
The guest-booting half lives in ``test_root_helper_vm.py``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from tests.netns import NetNamespace
from tests.support.roothelper import (
    OwnerDaemon,
    RootHelper,
    call_helper,
    process_status,
    raw_frames,
    run_python_as,
)

NOBODY = pwd.getpwnam("nobody")


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


def test_the_socket_is_reachable_by_the_owner_only(root_helper: RootHelper, owner: pwd.struct_passwd) -> None:
    directory = root_helper.socket.parent.stat()
    assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == (0, owner.pw_gid, 0o710)
    sock = root_helper.socket.stat()
    assert stat.S_ISSOCK(sock.st_mode) and (sock.st_uid, stat.S_IMODE(sock.st_mode)) == (owner.pw_uid, 0o600)
    assert connect_as(owner, root_helper.ns, root_helper.socket) == "ok"
    refused = connect_as(NOBODY, root_helper.ns, root_helper.socket)
    assert refused.startswith("Unavailable: the root helper does not answer on") and "Permission denied" in refused


def test_so_peercred_refuses_another_uid_even_when_the_file_modes_let_it_in(
    root_helper: RootHelper, owner: pwd.struct_passwd
) -> None:
    """Modes are the first fence; the kernel's word on the peer's uid is the one that counts."""
    os.chmod(root_helper.socket.parent, 0o711)
    os.chmod(root_helper.socket, 0o666)
    before = host_state(root_helper.ns)
    assert connect_as(NOBODY, root_helper.ns, root_helper.socket) == (
        f"NotPrivileged: bangerd-root serves only uid {owner.pw_uid} and root, not uid {NOBODY.pw_uid}"
    )
    assert f"refused a connection from uid {NOBODY.pw_uid}" in root_helper.log.read_text()
    assert host_state(root_helper.ns) == before


def test_hostile_requests_are_refused_and_change_nothing(owner_daemon: OwnerDaemon, root_helper: RootHelper) -> None:
    """A compromised owner daemon, calling the helper directly: banger's own interfaces and cidr only."""
    ns, uid = root_helper.ns, owner_daemon.owner.pw_uid
    # Interfaces banger does not own: a veth with a tap's prefix (its peer named like a host NIC),
    # a root-owned tap, a bridge with banger's prefix that is not the configured one.
    ns.run(["ip", "link", "add", "bgrdummy", "type", "veth", "peer", "name", "eth9"])
    ns.run(["ip", "tuntap", "add", "bgrforeign", "mode", "tap", "user", "0"])
    ns.run(["ip", "link", "add", "bangerother", "type", "bridge"])
    ok = call_helper(owner_daemon, [("ensure_bridge", {"name": "banger0", "address": "172.16.0.1/24"})])
    assert ok == ["ok"]
    before = host_state(ns)
    outcomes = call_helper(
        owner_daemon,
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


def test_malformed_frames_are_refused_with_a_reason(owner_daemon: OwnerDaemon, root_helper: RootHelper) -> None:
    """Unknown methods, missing or extra arguments, wrong types: refused on the wire, before any host code."""
    before = host_state(root_helper.ns)
    answers = raw_frames(
        owner_daemon,
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
    assert host_state(root_helper.ns) == before


def test_the_owner_daemon_runs_unprivileged_and_its_socket_refuses_others(
    owner_daemon: OwnerDaemon, owner: pwd.struct_passwd
) -> None:
    owner_daemon.start()
    status = process_status(owner_daemon.pid())
    assert status["Uid"].split() == [str(owner.pw_uid)] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert owner_daemon.banger("vm", "list", "--json", check=True).stdout.strip() == "[]"
    assert f"privileged host operations: bangerd-root at {owner_daemon.helper.socket}" in owner_daemon.log.read_text()
    sock = owner_daemon.runtime / "bangerd.sock"
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r})\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert run_python_as(NOBODY, owner_daemon.ns, code) == ["PermissionError"]


def test_a_work_disk_staged_by_the_owner_says_so_in_its_root_directory(helper_ns: NetNamespace, tmp_path: Path) -> None:
    """The guest's initramfs makes the work disk root's when its root directory is not root's.

    An owner daemon stages authorized_keys as itself; mkfs.ext4 alone makes the
    root directory 0:0, so the guest kept the owner's files and sshd refused
    banger's key (StrictModes). The root directory must carry the stager's ids.
    """
    scratch = Path(tempfile.mkdtemp(prefix="bgr-disk-", dir="/var/tmp"))
    try:
        os.chown(scratch, NOBODY.pw_uid, NOBODY.pw_gid)
        code = (
            "import sys\n"
            "from pathlib import Path\n"
            "from banger_core.daemon import guest\n"
            "staging = Path(sys.argv[1]) / 'staging'\n"
            "staging.mkdir()\n"
            "guest.stage_authorized_keys(staging, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest0000 t')\n"
            "guest.create_work_disk(Path(sys.argv[1]) / 'work.ext4', 64 << 20, staging)\n"
        )
        run_python_as(NOBODY, helper_ns, code, str(scratch))
        disk = scratch / "work.ext4"
        owners = {
            path: re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", debugfs_stat(disk, path)).groups()  # type: ignore[union-attr]
            for path in ("/", "/.ssh", "/.ssh/authorized_keys")
        }
        assert set(owners.values()) == {(str(NOBODY.pw_uid), str(NOBODY.pw_gid))}, owners
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def debugfs_stat(disk: Path, path: str) -> str:
    result = subprocess.run(["debugfs", "-R", f"stat {path}", str(disk)], capture_output=True, text=True, check=True)
    return result.stdout
