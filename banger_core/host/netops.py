"""Privileged host operations over netlink (pyroute2) and nftables, for a daemon running as root.

:class:`NetlinkHostOps` implements :class:`banger_hookspecs.HostOps`. Every
argument is validated before any netlink call: interface names must carry
banger's prefixes (``banger`` for bridges, ``bgr`` for taps) and be valid
kernel interface names; addresses must lie inside the configured CIDR.
Arguments are plain ``str``/``int`` and results JSON-able, because the same
interface will be served by the ``bangerd-root`` helper over a socket.

NAT lives in its own nftables table (``ip banger``), replaced atomically by
:meth:`NetlinkHostOps.ensure_nat` and deleted as a unit by
:meth:`NetlinkHostOps.remove_nat`, so banger never edits rules it does not own.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from banger_core.common.config import ConfigError, bridge_addresses
from banger_core.common.errors import HostOpError
from banger_core.host.jailops import JailOps

BRIDGE_PREFIX = "banger"
TAP_PREFIX = "bgr"
NFT_TABLE = "banger"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
#: The one domain :meth:`NetlinkHostOps.route_dns` routes: banger's names are ``NAME.vm``.
DNS_DOMAIN = "vm"
#: Seconds one ``resolvectl`` call may take.
RESOLVECTL_TIMEOUT = 10.0

#: Kernel interface names hold at most IFNAMSIZ - 1 = 15 bytes; we also forbid
#: characters that mean something to ``ip``, nft or a shell ('/', ':', spaces, '.').
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
_IFF_UP = 0x1
_MAIN_TABLE = 254
_RTN_UNICAST = 1
_TUN_TYPE_TAP = 2
_UID_MAX = 2**32 - 2  # (uid_t)-1 means "no owner"


def validate_ifname(name: str, prefix: str, what: str) -> str:
    """Return ``name`` if it is a valid interface name starting with ``prefix``.

    Args:
        name: the proposed interface name.
        prefix: the banger prefix it must carry (``banger`` or ``bgr``).
        what: what the name is for, for the error message (``"bridge"``).

    Returns:
        The name, unchanged.

    Raises:
        ValueError: the name is not a string, too long, has odd characters or lacks the prefix.
    """
    if not isinstance(name, str) or not _IFNAME_RE.match(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-15 characters of A-Z, a-z, 0-9, '_' and '-' (kernel limit)"
        )
    if not name.startswith(prefix):
        raise ValueError(f"invalid {what} name {name!r}: banger only manages {what}s whose names start with {prefix!r}")
    return name


def _validate_uid(uid: int) -> int:
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= _UID_MAX:
        raise ValueError(f"invalid owner uid {uid!r}: expected an integer between 0 and {_UID_MAX}")
    return uid


class _NetlinkMessage(Protocol):
    """The part of a pyroute2 message (link, address, route) banger reads; pyroute2 has no type hints."""

    def __getitem__(self, key: str) -> int: ...

    def get(self, key: str | tuple[str, ...]) -> object: ...

    def get_nested(self, *keys: str) -> object: ...


class _IPRoute(Protocol):
    """The part of pyroute2's ``IPRoute`` banger calls."""

    def link_lookup(self, *, ifname: str) -> list[int]: ...

    def get_links(self, *indices: int) -> Sequence[_NetlinkMessage]: ...

    def link(self, command: str, **attributes: object) -> object: ...

    def get_addr(self, *, index: int, family: int) -> Iterable[_NetlinkMessage]: ...

    def addr(self, command: str, **attributes: object) -> object: ...

    def get_routes(self, *, family: int) -> Iterable[_NetlinkMessage]: ...


def _link_kind(link: _NetlinkMessage) -> str | None:
    kind = link.get(("linkinfo", "kind"))
    return kind if isinstance(kind, str) else None


def _is_tap(link: _NetlinkMessage) -> bool:
    if _link_kind(link) != "tun":
        return False
    return bool(link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_TUN_TYPE") == _TUN_TYPE_TAP)


def _tap_owner(link: _NetlinkMessage) -> int | None:
    owner = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_TUN_OWNER")
    return owner if isinstance(owner, int) else None


class NetlinkHostOps(JailOps):
    """:class:`~banger_hookspecs.HostOps` for a process with CAP_NET_ADMIN (the root daemon or helper).

    Args:
        config: effective configuration; reads ``cidr`` (the guest subnet, e.g.
            ``"172.16.0.0/24"``) and ``bridge_ip`` (the host's address in it);
            the jailer keys for :meth:`spawn_jailed_vmm` (see :mod:`banger_core.host.jailops`).
        owner_uid: when set (the ``bangerd-root`` helper), the only uid taps may
            be created for and a jailed VMM may run as; taps owned by anyone else
            are left alone. None (a root daemon's own host ops) refuses every jailed spawn.
        owner_gid: the owner's group, for methods that hand files or processes over.
        bridge_name: when set (the helper), the only bridge name accepted; else
            ``config["bridge_name"]`` (default ``banger0``) for :meth:`route_dns`.
        search_path: where ``nft`` and ``resolvectl`` are looked up (the helper's
            fixed ``PATH``); None: this process's ``PATH``.

    Raises:
        ValueError: from the first call that needs them, when ``cidr`` is not an
            IPv4 network or ``bridge_ip`` is not a usable address inside it.

    Example::

        ops = NetlinkHostOps({"cidr": "172.16.0.0/24", "bridge_ip": "172.16.0.1"})
        ops.ensure_bridge("banger0", "172.16.0.1/24")
        ops.create_tap("bgr0123456789ab", "banger0", owner_uid=1000)
        ops.ensure_nat("172.16.0.0/24", "banger0")
    """

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        owner_uid: int | None = None,
        owner_gid: int | None = None,
        bridge_name: str | None = None,
        search_path: str | None = None,
    ) -> None:
        self.config = config
        self.owner_uid = owner_uid
        self.owner_gid = owner_gid
        self.bridge_name = bridge_name
        self.search_path = search_path
        self.nft = shutil.which("nft", path=search_path) or "/usr/sbin/nft"
        self.ip_forward = IP_FORWARD

    # ------------------------------------------------------------------ validation

    @cached_property
    def _guest_network(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
        # Checked on first use, not at construction: the daemon builds its host ops
        # at start, and a bad cidr must fail only the bridge, not a usernet daemon.
        try:
            return bridge_addresses(self.config)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @property
    def cidr(self) -> ipaddress.IPv4Network:
        return self._guest_network[0]

    @property
    def bridge_ip(self) -> ipaddress.IPv4Address:
        return self._guest_network[1]

    def _usable_address(self, value: object, what: str) -> ipaddress.IPv4Address:
        try:
            address = ipaddress.IPv4Address(value)
        except (ValueError, TypeError):
            raise ValueError(f"{what} {value!r} is not an IPv4 address") from None
        if address not in self.cidr or (
            self.cidr.prefixlen < 31 and address in (self.cidr.network_address, self.cidr.broadcast_address)
        ):
            raise ValueError(f"{what} {address} is not a usable address inside cidr {self.cidr}")
        return address

    def _bridge_interface(self, address: str) -> ipaddress.IPv4Interface:
        try:
            iface = ipaddress.IPv4Interface(address)
        except (ValueError, TypeError):
            raise ValueError(
                f"bridge address {address!r} is not an IPv4 address with a prefix like 172.16.0.1/24"
            ) from None
        if iface.network != self.cidr:
            raise ValueError(
                f"bridge address {address} is not inside cidr {self.cidr} with prefix /{self.cidr.prefixlen}"
            )
        self._usable_address(str(iface.ip), "bridge address")
        return iface

    def _nat_network(self, cidr: str) -> ipaddress.IPv4Network:
        try:
            network = ipaddress.IPv4Network(cidr)
        except (ValueError, TypeError):
            raise ValueError(f"NAT network {cidr!r} is not an IPv4 network like 172.16.0.0/24") from None
        if not network.subnet_of(self.cidr):
            raise ValueError(f"NAT network {network} lies outside the configured cidr {self.cidr}")
        return network

    def _bridge(self, name: str) -> str:
        validate_ifname(name, BRIDGE_PREFIX, "bridge")
        if self.bridge_name is not None and name != self.bridge_name:
            raise ValueError(f"bridge {name!r} is not banger's bridge {self.bridge_name!r}: banger leaves it alone")
        return name

    def _owner(self, uid: int) -> int:
        _validate_uid(uid)
        if self.owner_uid is not None and uid != self.owner_uid:
            raise ValueError(f"owner uid {uid} is not banger's owner uid {self.owner_uid}")
        return uid

    def _check_tap_owner(self, tap: _NetlinkMessage, name: str) -> None:
        """Refuse a tap of someone else when an owner is set: banger never touches taps it did not make."""
        if self.owner_uid is not None and _tap_owner(tap) != self.owner_uid:
            raise HostOpError(
                f"tap {name} belongs to uid {_tap_owner(tap)}, not to banger's owner {self.owner_uid}: "
                "banger left it alone"
            )

    @staticmethod
    def _link_prefix(prefix: str) -> str:
        if not isinstance(prefix, str) or not _IFNAME_RE.match(prefix):
            raise ValueError(f"invalid link prefix {prefix!r}: use 1-15 characters of A-Z, a-z, 0-9, '_' and '-'")
        if not prefix.startswith((BRIDGE_PREFIX, TAP_PREFIX)):
            raise ValueError(f"invalid link prefix {prefix!r}: it must start with {BRIDGE_PREFIX!r} or {TAP_PREFIX!r}")
        return prefix

    # ------------------------------------------------------------------ netlink plumbing

    @contextmanager
    def _netlink(self, what: str) -> Iterator[_IPRoute]:
        """An IPRoute socket; netlink errors become one-line :class:`HostOpError` sentences."""
        try:
            with IPRoute() as ipr:
                yield ipr
        except NetlinkError as exc:
            hint = ": run the daemon as root" if exc.code == errno.EPERM else ""
            raise HostOpError(f"{what} failed: {os.strerror(exc.code)}{hint}") from exc
        except PermissionError as exc:
            raise HostOpError(f"{what} failed: {exc.strerror}: run the daemon as root") from exc

    @staticmethod
    def _find(ipr: _IPRoute, name: str) -> _NetlinkMessage | None:
        """The link called ``name``, or None."""
        indices = ipr.link_lookup(ifname=name)
        if not indices:
            return None
        return ipr.get_links(indices[0])[0]

    @classmethod
    def _created(cls, ipr: _IPRoute, name: str) -> _NetlinkMessage:
        """The link just added as ``name``."""
        link = cls._find(ipr, name)
        if link is None:  # another root process deleted it in between
            raise HostOpError(f"network interface {name} vanished right after banger created it: try again")
        return link

    # ------------------------------------------------------------------ bridge

    def ensure_bridge(self, name: str, address: str) -> bool:
        """Create or repair bridge ``name`` so it is up with exactly the IPv4 address ``address``.

        Args:
            name: bridge name, starting with ``banger``.
            address: the host's address with prefix (``"172.16.0.1/24"``), inside the cidr.

        Returns:
            True when something had to be created or repaired.

        Raises:
            ValueError: bad name or address (nothing was touched).
            HostOpError: a link with that name exists and is not a bridge, or netlink refused.
        """
        self._bridge(name)
        iface = self._bridge_interface(address)
        wanted = (str(iface.ip), iface.network.prefixlen)
        changed = False
        with self._netlink(f"setting up bridge {name}") as ipr:
            link = self._find(ipr, name)
            if link is None:
                ipr.link("add", ifname=name, kind="bridge")
                link = self._created(ipr, name)
                changed = True
            elif _link_kind(link) != "bridge":
                raise HostOpError(
                    f"network interface {name} exists but is not a bridge: "
                    f"delete it (`ip link del {name}`) or set bridge_name in config.toml to another name"
                )
            index = link["index"]
            present = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=socket.AF_INET)}
            # The bridge is banger's: an address from an older cidr would keep a stale route alive.
            for stale, prefixlen in sorted(present - {wanted}):
                ipr.addr("del", index=index, address=stale, prefixlen=prefixlen)
                changed = True
            if wanted not in present:
                ipr.addr("add", index=index, address=wanted[0], prefixlen=wanted[1])
                changed = True
            if not link["flags"] & _IFF_UP:
                ipr.link("set", index=index, state="up")
                changed = True
        return changed

    def delete_bridge(self, name: str) -> None:
        """Delete bridge ``name`` if it exists (its taps are released, not deleted).

        Raises:
            ValueError: bad name.
            HostOpError: the link exists but is not a bridge (left alone), or netlink refused.
        """
        self._bridge(name)
        with self._netlink(f"deleting bridge {name}") as ipr:
            link = self._find(ipr, name)
            if link is None:
                return
            if _link_kind(link) != "bridge":
                raise HostOpError(f"network interface {name} is not a bridge: banger left it alone")
            ipr.link("del", index=link["index"])

    # ------------------------------------------------------------------ taps

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        """Create tap ``name`` owned by ``owner_uid``, enslaved to ``bridge``, up.

        An existing tap of that name and owner is re-attached and brought up,
        so a retry after a crash succeeds.

        Raises:
            ValueError: bad names or uid (nothing was touched).
            HostOpError: the bridge is missing, the name is taken by something
                else, or netlink refused.
        """
        validate_ifname(name, TAP_PREFIX, "tap")
        self._bridge(bridge)
        self._owner(owner_uid)
        with self._netlink(f"creating tap {name}") as ipr:
            master = self._find(ipr, bridge)
            if master is None or _link_kind(master) != "bridge":
                # The daemon sets the bridge up when a VM first needs it; gone now means deleted since.
                raise HostOpError(
                    f"bridge {bridge} does not exist (deleted while banger ran?): start the VM again, "
                    "banger sets the bridge up again first"
                )
            tap = self._find(ipr, name)
            created = tap is None
            if tap is None:
                # no_pi as `ip tuntap` does: Firecracker and QEMU expect bare Ethernet frames.
                ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=owner_uid, ifr={"no_pi": 1})
                tap = self._created(ipr, name)
            elif not _is_tap(tap):
                raise HostOpError(f"network interface {name} exists but is not a tap: delete it (`ip link del {name}`)")
            elif _tap_owner(tap) != owner_uid:
                raise HostOpError(
                    f"tap {name} exists but belongs to uid {_tap_owner(tap)}, not {owner_uid}: "
                    f"delete it (`ip link del {name}`)"
                )
            try:
                ipr.link("set", index=tap["index"], master=master["index"], state="up")
            except NetlinkError:
                if created:
                    ipr.link("del", index=tap["index"])
                raise

    def rename_tap(self, name: str, new_name: str) -> None:
        """Rename tap ``name`` to ``new_name``; owner and bridge stay, the tap ends up up.

        Raises:
            ValueError: bad names (nothing was touched).
            HostOpError: ``name`` is not an existing tap, ``new_name`` is taken, or netlink refused.
        """
        validate_ifname(name, TAP_PREFIX, "tap")
        validate_ifname(new_name, TAP_PREFIX, "tap")
        with self._netlink(f"renaming tap {name} to {new_name}") as ipr:
            tap = self._find(ipr, name)
            if tap is None or not _is_tap(tap):
                raise HostOpError(f"tap {name} does not exist: start the VM again (banger creates a new tap)")
            self._check_tap_owner(tap, name)
            if self._find(ipr, new_name) is not None:
                raise HostOpError(f"network interface {new_name} already exists: delete it (`ip link del {new_name}`)")
            index = tap["index"]
            # The kernel renames only links that are down.
            ipr.link("set", index=index, state="down")
            try:
                ipr.link("set", index=index, ifname=new_name)
            finally:
                ipr.link("set", index=index, state="up")

    def delete_tap(self, name: str) -> None:
        """Delete tap ``name`` if it exists.

        Raises:
            ValueError: bad name.
            HostOpError: the link exists but is not a tap (left alone), or netlink refused.
        """
        validate_ifname(name, TAP_PREFIX, "tap")
        with self._netlink(f"deleting tap {name}") as ipr:
            tap = self._find(ipr, name)
            if tap is None:
                return
            if not _is_tap(tap):
                raise HostOpError(f"network interface {name} is not a tap: banger left it alone")
            self._check_tap_owner(tap, name)
            ipr.link("del", index=tap["index"])

    # ------------------------------------------------------------------ inspection

    def list_links(self, prefix: str) -> list[str]:
        """Names of links starting with ``prefix`` (itself starting with ``banger`` or ``bgr``), sorted."""
        self._link_prefix(prefix)
        with self._netlink("listing network interfaces") as ipr:
            names = [link.get("ifname") for link in ipr.get_links()]
        return sorted(n for n in names if isinstance(n, str) and n.startswith(prefix))

    def host_routes(self) -> list[str]:
        """IPv4 unicast routes of the main table as CIDR strings, except those through banger's bridges."""
        with self._netlink("listing routes") as ipr:
            names: dict[object, object] = {link["index"]: link.get("ifname") for link in ipr.get_links()}
            routes = set()
            for route in ipr.get_routes(family=socket.AF_INET):
                if route.get("table") != _MAIN_TABLE or route["type"] != _RTN_UNICAST:
                    continue
                device = names.get(route.get("oif"))
                if isinstance(device, str) and device.startswith(BRIDGE_PREFIX):
                    continue
                destination = route.get("dst") or str(ipaddress.IPv4Address(0))  # the default route has no dst
                routes.add(f"{destination}/{route['dst_len']}")
        return sorted(routes, key=ipaddress.IPv4Network)

    # ------------------------------------------------------------------ DNS

    def bind_dns_socket(self, address: str, port: int) -> socket.socket:
        """A UDP socket bound to ``address:port``, where ``address`` is the configured ``bridge_ip``.

        Raises:
            ValueError: another address, or a port outside 1-65535 (nothing was bound).
            HostOpError: the kernel refused the bind (the reason and the likely fix).
        """
        if self._usable_address(address, "DNS address") != self.bridge_ip:
            raise ValueError(f"DNS address {address} is not the bridge address {self.bridge_ip}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"DNS port {port!r} is not between 1 and 65535")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((str(self.bridge_ip), port))
        except OSError as exc:
            sock.close()
            hint = {
                errno.EADDRINUSE: "another DNS server holds it: stop it or change dns_port",
                errno.EADDRNOTAVAIL: "the bridge does not carry that address yet: start a bridged VM first",
                errno.EACCES: "ports below 1024 need root: run the daemon as root or through bangerd-root",
            }.get(exc.errno or 0, "check the address and port")
            raise HostOpError(f"cannot listen for DNS on {address}:{port}: {exc.strerror}: {hint}") from exc
        return sock

    def route_dns(self, link: str, server: str, domain: str) -> None:
        """Have systemd-resolved send ``*.vm`` queries, and only those, to banger's server on the bridge.

        Runs ``resolvectl`` (found on the search path): the server and the
        routing-only domain ``~vm`` on the link, ``default-route false`` so the
        link never becomes a catch-all resolver, DNSSEC and DNS-over-TLS off for
        this link only (``vm.`` is not in the signed root; banger's server speaks
        plain UDP). ``resolvectl revert LINK`` undoes it.

        Args:
            link: banger's bridge (the helper's ``bridge_name``, else the configured one).
            server: the bridge address, optionally with ``:PORT`` (resolvectl's syntax).
            domain: ``"vm"``.

        Raises:
            ValueError: another link, server or domain (nothing ran).
            HostOpError: resolvectl is missing or failed (the first failing command, in one line).
        """
        expected_link = self.bridge_name or str(self.config.get("bridge_name", "banger0"))
        validate_ifname(link, BRIDGE_PREFIX, "link")
        if link != expected_link:
            raise ValueError(f"link {link!r} is not banger's bridge {expected_link!r}: *.vm is routed only there")
        server = self._dns_server(server)
        if domain != DNS_DOMAIN:
            raise ValueError(f"domain {domain!r} is not {DNS_DOMAIN!r}: banger routes only its own *.vm names")
        for args in (
            ("dns", link, server),
            ("domain", link, f"~{domain}"),
            ("default-route", link, "false"),
            ("dnssec", link, "no"),
            ("dnsovertls", link, "no"),
        ):
            self._resolvectl(*args)

    def _dns_server(self, server: str) -> str:
        """``server`` normalized, if it is the bridge address with an optional valid ``:PORT``."""
        address, _, port = server.partition(":") if isinstance(server, str) else ("", "", "")
        if self._usable_address(address, "DNS server") != self.bridge_ip:
            raise ValueError(f"DNS server {server!r} is not the bridge address {self.bridge_ip}")
        if not port:
            return str(self.bridge_ip)
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"DNS server {server!r}: the port must be between 1 and 65535")
        return f"{self.bridge_ip}:{int(port)}"

    def _resolvectl(self, *args: str) -> None:
        command = " ".join(("resolvectl", *args))
        binary = shutil.which("resolvectl", path=self.search_path)
        if binary is None:
            raise HostOpError(f'cannot run `{command}`: resolvectl not found: set dns_router = "manual"')
        try:
            result = subprocess.run(
                [binary, *args], capture_output=True, text=True, timeout=RESOLVECTL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise HostOpError(
                f"`{command}` did not finish within {RESOLVECTL_TIMEOUT:g} s: is systemd-resolved healthy?"
            ) from None
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
            raise HostOpError(
                f'`{command}` failed: {detail}: check `systemctl status systemd-resolved`, or set dns_router = "manual"'
            )

    # ------------------------------------------------------------------ NAT

    def ensure_nat(self, cidr: str, bridge: str) -> None:
        """Enable IPv4 forwarding and masquerade traffic from ``cidr`` leaving through any link but ``bridge``.

        The rules live in nftables table ``ip banger``, replaced in one
        transaction, so calling this again (or with a new cidr) is safe.

        Raises:
            ValueError: ``cidr`` outside the configured cidr, or a bad bridge name.
            HostOpError: nft is missing or refused the rules, or forwarding could not be enabled.
        """
        network = self._nat_network(cidr)
        self._bridge(bridge)
        try:
            if self.ip_forward.read_text().strip() != "1":
                self.ip_forward.write_text("1\n")
        except OSError as exc:
            raise HostOpError(f"enabling IPv4 forwarding failed: {exc.strerror}: run the daemon as root") from exc
        # "table" then "delete table" makes the delete valid whether or not the
        # table existed; the new table follows in the same atomic transaction.
        self._nft(
            f"table ip {NFT_TABLE}\n"
            f"delete table ip {NFT_TABLE}\n"
            f"table ip {NFT_TABLE} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {network} oifname != "{bridge}" masquerade\n'
            "  }\n"
            "}\n",
            "set up NAT",
        )

    def remove_nat(self, cidr: str, bridge: str) -> None:
        """Delete banger's nftables table (all its NAT rules at once); a no-op when absent.

        IPv4 forwarding stays on: other software on the host may rely on it.
        """
        self._nat_network(cidr)
        self._bridge(bridge)
        self._nft(f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n", "remove NAT")

    def _nft(self, script: str, what: str) -> None:
        try:
            result = subprocess.run([self.nft, "-f", "-"], input=script, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise HostOpError(f"cannot {what}: nft not found: install nftables (apt-get install nftables)") from None
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
            raise HostOpError(f"cannot {what}: nft: {detail}")
