"""Entry point of banger-bridge: a bridge, a tap per VM and NAT, through the core's host ops."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from banger_hookspecs import (
    CheckResult,
    ConfigOption,
    DoctorCheck,
    NetworkBackend,
    NetworkDriver,
    PluginContext,
    hookimpl,
)

TUN_DEVICE = Path("/dev/net/tun")
#: Where banger's root helper listens when installed (the core's default; $BANGER_ROOT_HELPER overrides it).
ROOT_HELPER_SOCKET = Path("/run/banger-root/bangerd-root.sock")


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption("bridge_name", "str", "banger0", help="bridge the VMs' taps attach to"),
        ConfigOption("tap_pool_size", "int", 2, help="taps created ahead so vm create doesn't wait on netlink"),
        ConfigOption(
            "guest_dns", "str", help="resolver address for guests (default: the host's first non-loopback nameserver)"
        ),
    ]


def _bridge_network(ctx: PluginContext) -> NetworkDriver:
    # Imported here: the port forwarder brings asyncio, ~20 ms on every CLI command that loads plugins.
    from .network import BridgeNetwork

    return BridgeNetwork(ctx)


@hookimpl
def banger_network_backends() -> Iterable[NetworkBackend]:
    return [
        NetworkBackend(
            name="bridge",
            description="a host bridge with NAT and one tap per VM; guests get their own IP and a .vm name",
            factory=_bridge_network,
        )
    ]


def _check(ctx: PluginContext) -> Iterable[CheckResult]:
    if os.geteuid() != 0:
        helper = Path(os.environ.get("BANGER_ROOT_HELPER") or ROOT_HELPER_SOCKET)
        if helper.exists():
            yield CheckResult("bridge", "ok", f"not root: bangerd-root ({helper}) sets up bridge networking")
            return
        yield CheckResult(
            "bridge",
            "info",
            "not root and no root helper: bridge networking is unavailable; VMs use usernet",
            hint="install the root helper (`sudo banger system install --owner $USER`) or run the daemon as root",
        )
        return
    missing = []
    if not (shutil.which("nft") or Path("/usr/sbin/nft").exists()):
        missing.append(("nft not found (NAT for guests)", "install it: apt-get install nftables"))
    if not TUN_DEVICE.exists():
        missing.append((f"{TUN_DEVICE} is missing (VM taps)", "load the tun module: modprobe tun"))
    if missing:
        for summary, hint in missing:
            yield CheckResult("bridge", "warn", summary, hint=hint)
    else:
        yield CheckResult("bridge", "ok", "running as root with nft and /dev/net/tun: bridge networking can be set up")


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="bridge", run=_check)]
