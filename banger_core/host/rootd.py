"""``bangerd-root``: the root helper that performs banger's privileged host operations for the owner's daemon.

It listens on a Unix socket, lets only the owner uid (``--owner-uid``) and
root talk to it (SO_PEERCRED; every refusal is logged), and serves exactly the
methods of :class:`banger_hookspecs.HostOps`, one call per connection, with
the protocol of :mod:`banger_core.host.rootproto`. Every call is checked
twice: on the wire (method name, argument names and types, any ``*_uid`` /
``*_gid`` argument equal to the owner's) and by
:class:`~banger_core.host.netops.NetlinkHostOps`, which accepts only banger's
interface prefixes, the bridge and addresses of ``[network]`` in
``/etc/banger/install.toml`` (banger's defaults when absent), and taps owned
by the owner.

It loads no plugin and reads no user file: its only inputs are its command
line, install.toml and the requests. Its environment is replaced at start by
a fixed PATH.

The socket's directory is ``root:<owner's group>`` mode 0710 and the socket
itself ``<owner>:root`` mode 0600, so only the owner and root can reach it
even before the SO_PEERCRED check.

``bangerd-root --revert`` undoes what the helper changed on this host: banger's
nftables table, the bridge, the owner's taps, and IPv4 forwarding when the
helper turned it on (recorded with the boot id in ``--state-dir``);
``banger system uninstall`` runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import socket
import stat
import struct
import sys
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from banger_core.common.config import ConfigError, bridge_addresses
from banger_core.common.errors import BangerError, HostOpError
from banger_core.host.hostops import DEFAULT_ROOT_HELPER_SOCKET
from banger_core.host.netops import BRIDGE_PREFIX, TAP_PREFIX, NetlinkHostOps, validate_ifname
from banger_core.host.rootproto import (
    MethodSpec,
    ProtocolError,
    check_call,
    close_all,
    recv_frame,
    returns_socket,
    send_frame,
    to_json,
)

log = logging.getLogger("bangerd-root")

DEFAULT_INSTALL_TOML = Path("/etc/banger/install.toml")
DEFAULT_STATE_DIR = Path("/var/lib/banger-root")
#: The helper's whole environment: no PATH, PYTHON* or LD_* from whoever started it.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NETWORK = {"bridge_name": "banger0", "cidr": "172.16.0.0/24", "bridge_ip": "172.16.0.1"}
FORWARDING_RECORD = "ip_forward.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: A client gets this long to send its request; a call's own work is not limited.
REQUEST_TIMEOUT = 10.0
MAX_CLIENTS = 16
#: How long a stopping helper waits for calls in flight.
DRAIN_TIMEOUT = 30.0
_PEERCRED = struct.Struct("3i")


class SetupError(Exception):
    """The helper cannot start as asked; the message says what to fix."""


# ---------------------------------------------------------------------- bounds


def load_network_bounds(path: Path) -> dict[str, str]:
    """``[network]`` of install.toml (``bridge_name``, ``cidr``, ``bridge_ip``), banger's defaults for what is absent.

    Raises:
        SetupError: unreadable or malformed file, unknown key or invalid value.
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from None
    table = data.get("network", {})
    if not isinstance(table, dict):
        raise SetupError(f"{path}: [network] must be a table")
    unknown = set(table) - set(DEFAULT_NETWORK)
    if unknown:
        raise SetupError(f"{path}: unknown key(s) in [network]: {', '.join(sorted(unknown))}")
    bounds = {**DEFAULT_NETWORK, **table}
    try:
        validate_ifname(bounds["bridge_name"], BRIDGE_PREFIX, "bridge")
        bridge_addresses(bounds)
    except (ValueError, ConfigError) as exc:
        raise SetupError(f"{path} [network]: {exc}".replace(": fix it in config.toml", "")) from None
    return {key: str(value) for key, value in bounds.items()}


# ---------------------------------------------------------------------- forwarding record


class ForwardingRecord:
    """Remembers that the helper switched IPv4 forwarding on (and what it was), for :func:`revert`.

    The record carries the boot id: forwarding resets at boot, so a record
    from an earlier boot means nothing any more.
    """

    def __init__(self, state_dir: Path, ip_forward: Path) -> None:
        self.path = state_dir / FORWARDING_RECORD
        self.ip_forward = ip_forward

    def note_before_change(self) -> None:
        """Record the current value once per boot, before the helper changes it."""
        current = self.ip_forward.read_text().strip()
        if current == "1" or self._recorded() is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"boot_id": _boot_id(), "ip_forward": current}))

    def _recorded(self) -> str | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("boot_id") != _boot_id():
            return None
        value = data.get("ip_forward")
        return value if value in ("0", "1") else None

    def restore(self) -> str | None:
        """Put forwarding back as recorded (this boot only); returns the value restored, if any."""
        value = self._recorded()
        if value is not None:
            self.ip_forward.write_text(value + "\n")
        self.path.unlink(missing_ok=True)
        return value


def _boot_id() -> str:
    return BOOT_ID.read_text().strip()


class HelperHostOps(NetlinkHostOps):
    """The helper's server object: :class:`NetlinkHostOps` bound to the owner and install.toml's network.

    It only adds the forwarding record in front of :meth:`ensure_nat`; every
    other ``HostOps`` method (including ones added later) is NetlinkHostOps'
    own, validation included.
    """

    def __init__(self, bounds: Mapping[str, str], owner: pwd.struct_passwd, state_dir: Path) -> None:
        super().__init__(
            bounds,
            owner_uid=owner.pw_uid,
            owner_gid=owner.pw_gid,
            bridge_name=bounds["bridge_name"],
            search_path=SAFE_PATH,
        )
        self.forwarding = ForwardingRecord(state_dir, self.ip_forward)

    def ensure_nat(self, cidr: str, bridge: str) -> None:
        self._nat_network(cidr)
        self._bridge(bridge)
        try:
            self.forwarding.note_before_change()
        except OSError as exc:
            raise HostOpError(f"cannot record the IPv4 forwarding setting in {self.forwarding.path}: {exc}") from exc
        super().ensure_nat(cidr, bridge)


# ---------------------------------------------------------------------- serving


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end, from the kernel (SO_PEERCRED)."""
    pid, uid, gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


class RootHelper:
    """Answers calls on accepted connections; one lock serializes every host change."""

    def __init__(self, ops: NetlinkHostOps, owner_uid: int, owner_gid: int) -> None:
        self.ops = ops
        self.owner_uid = owner_uid
        self.owner_gid = owner_gid
        self.lock = threading.Lock()

    def handle(self, conn: socket.socket) -> None:
        """Serve the one call of ``conn`` and close it."""
        with conn:
            pid, uid, _ = peer_credentials(conn)
            if uid not in (0, self.owner_uid):
                log.warning("refused a connection from uid %d (pid %d): only uid %d and root", uid, pid, self.owner_uid)
                self._answer_error(
                    conn, "NotPrivileged", f"bangerd-root serves only uid {self.owner_uid} and root, not uid {uid}"
                )
                return
            conn.settimeout(REQUEST_TIMEOUT)
            try:
                message, fds = recv_frame(conn)
                close_all(fds)  # requests carry no descriptors; never keep what a client slipped in
                spec, args = check_call(message)
                self._check_ids(spec, args)
            except (ProtocolError, OSError) as exc:
                log.warning("refused a malformed request from uid %d (pid %d): %s", uid, pid, exc)
                self._answer_error(conn, "ProtocolError", str(exc))
                return
            conn.settimeout(None)
            self._call(conn, spec, args, f"uid {uid} pid {pid}")

    def _check_ids(self, spec: MethodSpec, args: dict[str, object]) -> None:
        for name, value in args.items():
            if name.endswith("uid") and value != self.owner_uid:
                raise ProtocolError(f"{spec.name}({name}={value!r}): only the owner uid {self.owner_uid} is allowed")
            if name.endswith("gid") and value != self.owner_gid:
                raise ProtocolError(f"{spec.name}({name}={value!r}): only the owner gid {self.owner_gid} is allowed")

    def _call(self, conn: socket.socket, spec: MethodSpec, args: dict[str, object], who: str) -> None:
        method = getattr(self.ops, spec.name, None)
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        if method is None:
            self._answer_error(conn, "HostOpError", f"this bangerd-root does not implement {spec.name}: update banger")
            return
        try:
            with self.lock:
                result = method(**args)
        except ValueError as exc:
            log.warning("%s: refused %s(%s): %s", who, spec.name, shown, exc)
            self._answer_error(conn, "ValueError", str(exc))
            return
        except BangerError as exc:
            log.warning("%s: %s(%s) failed: %s", who, spec.name, shown, exc)
            self._answer_error(conn, type(exc).__name__, str(exc))
            return
        except Exception as exc:
            log.exception("%s: %s(%s) failed", who, spec.name, shown)
            self._answer_error(conn, "HostOpError", f"bangerd-root failed in {spec.name}: {type(exc).__name__}: {exc}")
            return
        log.info("%s: %s(%s)", who, spec.name, shown)
        try:
            if returns_socket(spec) and isinstance(result, socket.socket):
                with result:
                    send_frame(conn, {"result": {"fd": 0}}, [result.fileno()])
            else:
                send_frame(conn, {"result": to_json(result)})
        except OSError as exc:
            log.warning("%s: could not answer %s: %s", who, spec.name, exc)

    @staticmethod
    def _answer_error(conn: socket.socket, kind: str, message: str) -> None:
        try:
            send_frame(conn, {"error": {"type": kind, "message": message}})
        except OSError:
            pass  # the client went away; the log line already says what happened

    def serve(self, listener: socket.socket, stop: threading.Event) -> None:
        """Accept until ``stop`` is set; at most :data:`MAX_CLIENTS` calls at once."""
        slots = threading.BoundedSemaphore(MAX_CLIENTS)
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            slots.acquire()

            def run(conn: socket.socket = conn) -> None:
                try:
                    self.handle(conn)
                except Exception:
                    log.exception("a connection failed")
                finally:
                    slots.release()

            threading.Thread(target=run, name="bangerd-root-call", daemon=True).start()
        # Let calls in flight finish (a half-applied nft script is worse than a slow stop).
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for _ in range(MAX_CLIENTS):
            slots.acquire(timeout=max(0.0, deadline - time.monotonic()))


def bind_listener(path: Path, owner: pwd.struct_passwd) -> socket.socket:
    """The listening socket: directory ``root:<owner group>`` 0710, socket ``<owner>:root`` 0600.

    Raises:
        SetupError: the directory exists but is not root's, or is writable by others.
    """
    directory = path.parent
    directory.mkdir(mode=0o710, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise SetupError(f"{directory} must be a directory owned by root: remove it and start bangerd-root again")
    os.chown(directory, 0, owner.pw_gid)
    os.chmod(directory, 0o710)  # noqa: S103 -- traversable by the owner's group only; the socket itself is 0600
    path.unlink(missing_ok=True)  # a stale socket of an earlier helper; the directory is root's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    os.chown(path, owner.pw_uid, 0)
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener


# ---------------------------------------------------------------------- revert


def revert(ops: HelperHostOps, bounds: Mapping[str, str]) -> list[str]:
    """Undo the helper's changes: NAT table, the owner's taps, the bridge, forwarding; what was done, as lines."""
    done = []
    ops.remove_nat(bounds["cidr"], bounds["bridge_name"])
    done.append("removed nftables table ip banger")
    for tap in ops.list_links(TAP_PREFIX):
        try:
            ops.delete_tap(tap)
            done.append(f"deleted tap {tap}")
        except (ValueError, HostOpError) as exc:
            done.append(f"left {tap} alone: {exc}")
    ops.delete_bridge(bounds["bridge_name"])
    done.append(f"deleted bridge {bounds['bridge_name']}")
    restored = ops.forwarding.restore()
    if restored is not None:
        done.append(f"set net.ipv4.ip_forward back to {restored}")
    return done


# ---------------------------------------------------------------------- main


def _owner(uid: int) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        raise SetupError(f"--owner-uid {uid}: no such user") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bangerd-root", description="banger's root helper: privileged host operations for the owner's daemon."
    )
    parser.add_argument("--owner-uid", type=int, required=True, help="the only non-root uid allowed to connect")
    parser.add_argument(
        "--socket", type=Path, default=DEFAULT_ROOT_HELPER_SOCKET, help=f"default {DEFAULT_ROOT_HELPER_SOCKET}"
    )
    parser.add_argument(
        "--install-toml", type=Path, default=DEFAULT_INSTALL_TOML, help="its [network] bounds what is accepted"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="where the forwarding record lives (root only)"
    )
    parser.add_argument("--revert", action="store_true", help="undo the helper's host changes and exit")
    args = parser.parse_args(argv)
    os.environ.clear()
    os.environ.update(PATH=SAFE_PATH, LC_ALL="C.UTF-8")
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if os.geteuid() != 0:
            raise SetupError("bangerd-root must run as root (it is started by bangerd-root.service)")
        owner = _owner(args.owner_uid)
        bounds = load_network_bounds(args.install_toml)
        ops = HelperHostOps(bounds, owner, args.state_dir)
        if args.revert:
            for line in revert(ops, bounds):
                print(line)
            return
        listener = bind_listener(args.socket, owner)
    except (SetupError, BangerError, ValueError, OSError) as exc:
        print(f"bangerd-root: error: {exc}", file=sys.stderr)
        sys.exit(1)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "serving uid %d on %s (bridge %s, cidr %s)", owner.pw_uid, args.socket, bounds["bridge_name"], bounds["cidr"]
    )
    try:
        RootHelper(ops, owner.pw_uid, owner.pw_gid).serve(listener, stop)
    finally:
        listener.close()
        args.socket.unlink(missing_ok=True)
        log.info("stopped")


if __name__ == "__main__":
    main()
