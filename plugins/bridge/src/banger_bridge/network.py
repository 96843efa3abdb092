"""The ``bridge`` network backend: one host bridge with NAT, one tap per VM.

Everything privileged goes through ``ctx.host_ops`` (netlink in the root
daemon today, the ``bangerd-root`` helper later), so this module only decides
names and addresses and never touches the host itself.

Tap names: a VM's tap is ``bgr`` plus the first 12 hex digits of its id
(15 characters, the kernel's limit), so a restarted daemon finds it again
from the VM id alone. Spare taps wait in a pool named ``bgrpool<N>`` (never
hex, so never a VM's name); ``attach`` renames one instead of creating a tap.
"""

from __future__ import annotations

import ipaddress
import re
import select
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from banger_hookspecs import GuestNetConfig, NetAttachment, NicRequest, NicSpec, PluginContext, PortForward, Progress
from banger_hookspecs.process import read_proc_stat, terminate

from .forward import READY, Rule
from .upstream import RESOLV_CONF_FILES, upstream_nameserver

BACKEND_NAME = "bridge"
BRIDGE_PREFIX = "banger"
TAP_PREFIX = "bgr"
POOL_PREFIX = "bgrpool"
MAX_POOL_SIZE = 64
GUEST_SSH_PORT = 22
#: How long a port forwarder gets to bind its ports and say so.
FORWARDER_READY_TIMEOUT = 10.0

_BRIDGE_NAME_RE = re.compile(r"^banger[A-Za-z0-9_-]{0,9}$")
_VM_ID_RE = re.compile(r"^[0-9a-f]{1,64}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class BridgeError(Exception):
    """The bridge backend cannot do what was asked; the message says what to change."""


def tap_name_for(vm_id: str) -> str:
    """The tap name of VM ``vm_id`` (``bgr`` + its first 12 hex digits).

    Raises:
        ValueError: ``vm_id`` is not lowercase hex.

    Example:
        >>> tap_name_for("0123456789abcdef0123456789abcdef")
        'bgr0123456789ab'
    """
    if not isinstance(vm_id, str) or not _VM_ID_RE.match(vm_id):
        raise ValueError(f"invalid VM id {vm_id!r}: expected lowercase hex")
    return TAP_PREFIX + vm_id[:12]


class BridgeNetwork:
    """:class:`~banger_hookspecs.NetworkDriver` for a bridge + tap + NAT setup.

    Reads ``cidr``, ``bridge_ip`` (core keys) and ``bridge_name``,
    ``tap_pool_size``, ``guest_dns`` (this plugin's keys) from ``ctx.config``.

    Args:
        ctx: the plugin context; ``ctx.host_ops`` does the privileged work.
        resolv_conf_files: where to look for the host's upstream resolver
            when ``guest_dns`` is unset.

    Raises:
        BridgeError: the configuration is inconsistent (the message names the key).
    """

    def __init__(self, ctx: PluginContext, resolv_conf_files: Sequence[Path] = RESOLV_CONF_FILES) -> None:
        config = ctx.config
        self.host_ops = ctx.host_ops
        self.logger = ctx.logger
        self.owner_uid = ctx.owner_uid
        self.resolv_conf_files = tuple(resolv_conf_files)
        try:
            self.cidr = ipaddress.IPv4Network(config["cidr"])
        except (KeyError, ValueError, TypeError):
            raise BridgeError(
                f"cidr {config.get('cidr')!r} is not an IPv4 network like 172.16.0.0/24: fix it in config.toml"
            ) from None
        self.bridge_ip = self._config_address(config.get("bridge_ip"), "bridge_ip")
        if not self._is_usable(self.bridge_ip):
            raise BridgeError(
                f"bridge_ip {self.bridge_ip} is not a usable address in cidr {self.cidr}: fix it in config.toml"
            )
        self.bridge_name = str(config.get("bridge_name", "banger0"))
        if not _BRIDGE_NAME_RE.match(self.bridge_name):
            raise BridgeError(
                f"bridge_name {self.bridge_name!r} must start with 'banger' and be at most 15 characters "
                "of A-Z, a-z, 0-9, '_' and '-': fix it in config.toml"
            )
        self.pool_size = config.get("tap_pool_size", 2)
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int):
            raise BridgeError(f"tap_pool_size must be an integer, got {self.pool_size!r}: fix it in config.toml")
        if not 0 <= self.pool_size <= MAX_POOL_SIZE:
            raise BridgeError(f"tap_pool_size must be between 0 and {MAX_POOL_SIZE}: fix it in config.toml")
        guest_dns = config.get("guest_dns")
        self.guest_dns = None if guest_dns is None else str(self._config_address(guest_dns, "guest_dns"))

    def _config_address(self, value: object, key: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(value)
        except (ValueError, TypeError):
            raise BridgeError(f"{key} {value!r} is not an IPv4 address: fix it in config.toml") from None

    def _is_usable(self, address: ipaddress.IPv4Address) -> bool:
        """Inside the cidr and, for subnets with a broadcast address, neither its first nor last address."""
        if address not in self.cidr:
            return False
        return self.cidr.prefixlen >= 31 or address not in (self.cidr.network_address, self.cidr.broadcast_address)

    # ------------------------------------------------------------------ host

    def setup_host(self, progress: Progress) -> None:
        """Idempotently make the bridge, NAT and the tap pool; called before the first bridged VM starts.

        Raises:
            BridgeError: the cidr overlaps a route of the host (nothing was changed).
        """
        progress.step(f"setting up bridge {self.bridge_name}")
        self._check_routes()
        address = f"{self.bridge_ip}/{self.cidr.prefixlen}"
        if self.host_ops.ensure_bridge(self.bridge_name, address):
            progress.log(f"bridge {self.bridge_name} created or repaired with {address}")
        self.host_ops.ensure_nat(str(self.cidr), self.bridge_name)
        progress.log(f"NAT for {self.cidr} leaving through the host's other links")
        created = self._fill_pool()
        if created:
            progress.log(f"created {created} spare tap(s)")
        if self.guest_dns is None and self._upstream() is None:
            progress.log(
                "no usable nameserver in /etc/resolv.conf: guests can resolve only *.vm names; "
                "set guest_dns in config.toml"
            )

    def _check_routes(self) -> None:
        for route in self.host_ops.host_routes():
            network = ipaddress.IPv4Network(route)
            if network.prefixlen == 0:
                continue  # the default route overlaps everything and is no conflict
            if network.overlaps(self.cidr):
                raise BridgeError(
                    f"cidr {self.cidr} overlaps the host route {network}: "
                    "set cidr and bridge_ip in config.toml to a subnet the host does not use"
                )

    def _fill_pool(self) -> int:
        """Create missing pool taps and drop surplus ones; returns how many were created."""
        present = set(self.host_ops.list_links(POOL_PREFIX))
        wanted = {f"{POOL_PREFIX}{i}" for i in range(self.pool_size)}
        for surplus in sorted(present - wanted):
            self.host_ops.delete_tap(surplus)
        missing = sorted(wanted - present)
        for name in missing:
            self.host_ops.create_tap(name, self.bridge_name, self.owner_uid)
        return len(missing)

    def dns_link(self) -> tuple[str, str]:
        """``(bridge name, bridge IP)``: where banger's ``.vm`` DNS server listens."""
        return self.bridge_name, str(self.bridge_ip)

    # ------------------------------------------------------------------ per VM

    def attach(self, request: NicRequest) -> NetAttachment:
        """Give the VM its tap (a renamed spare, or a new one) and its static IPv4 config.

        Raises:
            ValueError: the request's id, MAC or IP is malformed or outside the cidr.
        """
        tap = tap_name_for(request.vm_id)
        mac = request.mac.lower()
        if not _MAC_RE.match(mac):
            raise ValueError(f"invalid MAC address {request.mac!r}: expected six hex pairs like 02:fc:00:00:00:01")
        guest_ip = self._guest_address(request.guest_ip)
        if tap in self.host_ops.list_links(tap):
            # Left over from a crash: create_tap re-attaches it if it is ours.
            self.host_ops.create_tap(tap, self.bridge_name, self.owner_uid)
        else:
            self._take_tap(tap)
        state = {"tap": tap}
        if request.published:
            try:
                pid, start_time = start_forwarder(str(guest_ip), request.published)
            except BaseException:
                self.host_ops.delete_tap(tap)  # the core detaches only what attach returned
                raise
            state.update(forwarder_pid=str(pid), forwarder_start=str(start_time))
        return NetAttachment(
            backend=BACKEND_NAME,
            nic=NicSpec(kind="tap", mac=mac, tap_name=tap),
            guest=GuestNetConfig(
                address=str(guest_ip),
                prefix=self.cidr.prefixlen,
                gateway=str(self.bridge_ip),
                dns=self.guest_dns or self._upstream() or str(self.bridge_ip),
            ),
            ssh_host=str(guest_ip),
            ssh_port=GUEST_SSH_PORT,
            dns_address=str(guest_ip),
            state=state,
        )

    def _take_tap(self, tap: str) -> None:
        """Rename the first spare tap to ``tap``, or create ``tap`` when there is none (or it vanished)."""
        spares = self.host_ops.list_links(POOL_PREFIX)
        if spares:
            try:
                self.host_ops.rename_tap(spares[0], tap)
                return
            except Exception as exc:  # a fresh tap is as good as a spare
                self.logger.warning("could not use spare tap %s for %s: %s", spares[0], tap, exc)
        self.host_ops.create_tap(tap, self.bridge_name, self.owner_uid)

    def _guest_address(self, value: str) -> ipaddress.IPv4Address:
        try:
            address = ipaddress.IPv4Address(value)
        except (ValueError, TypeError):
            raise ValueError(f"invalid guest IP {value!r}: expected an IPv4 address in {self.cidr}") from None
        if address == self.bridge_ip or not self._is_usable(address):
            raise ValueError(f"guest IP {address} is not a free host address in {self.cidr} (bridge: {self.bridge_ip})")
        return address

    def _upstream(self) -> str | None:
        return upstream_nameserver(self.resolv_conf_files, self.cidr)

    def detach(self, attachment: NetAttachment) -> None:
        """Stop the VM's port forwarder, delete its tap (idempotent), then top the spare pool up again."""
        pid, started = attachment.state.get("forwarder_pid"), attachment.state.get("forwarder_start")
        if pid and started:
            terminate(int(pid), int(started))  # by pid and start time: never a process that reused the pid
        tap = attachment.state.get("tap") or attachment.nic.tap_name
        if tap is None:
            return
        self.host_ops.delete_tap(tap)
        try:
            self._fill_pool()
        except Exception as exc:  # a missing spare only costs the next start a few ms
            self.logger.warning("could not refill the spare tap pool: %s", exc)


def start_forwarder(guest_ip: str, published: Sequence[PortForward]) -> tuple[int, int]:
    """Start the VM's forwarder (:mod:`banger_bridge.forward`); ``(pid, start time)`` once its ports are bound.

    Raises:
        BridgeError: a port could not be bound (the kernel's reason), or the forwarder did not start.
    """
    argv = [sys.executable, "-m", "banger_bridge.forward", guest_ip]
    argv += [Rule(p.protocol, p.host_port, p.guest_port).argument() for p in published]
    # Its own session: a daemon restart (or a ^C on a foreground daemon) leaves it running, like the VMM.
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    with proc.stdout, proc.stderr:
        readable, _, _ = select.select([proc.stdout], [], [], FORWARDER_READY_TIMEOUT)
        line = proc.stdout.readline().decode(errors="replace").strip() if readable else ""
        if line == READY:
            stat = read_proc_stat(proc.pid)
            if stat is not None:
                return proc.pid, stat.start_time
        proc.kill()
        proc.wait()
        why = proc.stderr.read().decode(errors="replace").strip() or f"no answer within {FORWARDER_READY_TIMEOUT:.0f} s"
    raise BridgeError(f"could not publish the VM's ports: {why}")
