"""passt: user-mode networking that gives an isolated guest internet egress.

QEMU's own slirp maps its gateway ``10.0.2.2`` (and every other address of
its subnet) to the host's ``127.0.0.1``, so an isolated guest has to run with
``restrict=on``: no egress at all. passt (``apt-get install passt``) forwards
guest connections through ordinary host sockets instead and, with
``--no-map-gw``, maps no guest address to host loopback: the guest reaches
what any other program on the host network reaches, not the host's
127.0.0.1-only services. QEMU (>= 7.2) connects to it with ``-netdev stream``.

One passt runs per VM, started before QEMU and tracked by pid + start time in
the VM's :class:`~banger_hookspecs.VmProcess` ``extra``, so it is stopped with
the VM even after a daemon restart. ``--one-off`` also ends it when QEMU
closes the connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from banger_hookspecs import GuestNetConfig, NicSpec
from banger_hookspecs.process import is_same_process, read_proc_stat, remove_stale_socket, terminate
from banger_qemu.argv import forward_address
from banger_qemu.spawn import spawn_detached

PASST_SOCKET = "passt.sock"
PASST_LOG = "passt.log"
#: The addresses the initramfs gives a usernet guest: passt answers as its gateway and DNS.
GUEST = GuestNetConfig(address="10.0.2.15", prefix=24, gateway="10.0.2.2", dns="10.0.2.3")
SOCKET_TIMEOUT = 10.0
TERM_GRACE = 5.0


class PasstError(Exception):
    """passt exited or never created its socket."""


def find_passt(routes: Path = Path("/proc/net/route")) -> str | None:
    """The ``passt`` binary on PATH, or None when it is absent or would have nothing to carry.

    passt refuses to start without an IPv4 default route ("External interface not
    usable"): on an offline host (or a namespace with no way out) the guest gets
    QEMU's ``restrict=on`` instead, which is what it would have anyway: no egress.
    """
    return shutil.which("passt") if has_default_route(routes) else None


def has_default_route(routes: Path = Path("/proc/net/route")) -> bool:
    """True if this network namespace has an IPv4 default route that is up."""
    try:
        lines = routes.read_text().splitlines()[1:]  # the first line names the columns
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        # Iface Destination Gateway Flags ...: destination 0.0.0.0, flag RTF_UP (0x1)
        if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 0x1:
            return True
    return False


def uses_passt(nic: NicSpec | None, passt: str | None) -> bool:
    """True when ``nic`` is an isolated user-mode NIC and passt is installed.

    With ``host_access`` the guest is meant to reach host loopback: QEMU's slirp does exactly that.
    Without ``egress`` it is meant to reach nothing: QEMU's ``restrict=on`` does that.
    """
    return passt is not None and nic is not None and nic.kind == "user" and nic.egress and not nic.host_access


def passt_argv(binary: str, nic: NicSpec, socket_path: Path, uid: int, gid: int) -> list[str]:
    """passt's argv (no shell) for ``nic``: guest addressing as slirp's, forwards on their host address only.

    Raises:
        ValueError: a forward is not IPv4 TCP with valid ports.
    """
    argv = [
        binary,
        "--foreground",
        "--stderr",
        "--one-off",
        # As root passt would drop to "nobody", which cannot create the socket in the
        # daemon's 0700 run directory: stay the daemon's own user (passt still sandboxes itself).
        "--runas",
        f"{uid}:{gid}",
        "--no-map-gw",
        "--ipv4-only",
        "--address",
        GUEST.address,
        "--netmask",
        str(GUEST.prefix),
        "--gateway",
        GUEST.gateway,
        "--dns-forward",
        GUEST.dns,
        "--socket",
        str(socket_path),
    ]
    specs: dict[str, list[str]] = {"tcp": [], "udp": []}
    for fwd in nic.forwards:
        address = forward_address(fwd)
        # One option per forward: each binds its own host address.
        specs[fwd.protocol].append(f"{address}/{fwd.host_port}:{fwd.guest_port}")
    for option, protocol in (("--tcp-ports", "tcp"), ("--udp-ports", "udp")):
        for spec in specs[protocol] or ["none"]:
            argv += [option, spec]
    return argv


def start_passt(binary: str, nic: NicSpec, run_dir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start passt for ``nic`` and wait until its socket exists.

    Returns:
        the process, its start time and the socket path.

    Raises:
        PasstError: passt exited or did not create its socket in time (the message has its log tail).
    """
    socket_path = run_dir / PASST_SOCKET
    remove_stale_socket(socket_path)
    argv = passt_argv(binary, nic, socket_path, os.getuid(), os.getgid())
    log_path = run_dir / PASST_LOG
    popen = spawn_detached(argv, log_path, run_dir)
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        stat = read_proc_stat(popen.pid)
        if socket_path.is_socket() and stat is not None:
            return popen, stat.start_time, socket_path
        time.sleep(0.02)
    popen.kill()
    popen.wait()
    remove_stale_socket(socket_path)
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    raise PasstError("passt did not start: " + (" | ".join(tail) or "no output"))


def stop_passt(pid: int, start_time: int, socket_path: Path) -> None:
    """Terminate passt if it is still the process we started, reap it, remove its socket."""
    terminate(pid, start_time, TERM_GRACE)
    if not is_same_process(pid, start_time):
        remove_stale_socket(socket_path)
