"""Test plugin: network backends without a host side, for in-process daemon tests.

``fakeuser`` (user-mode NIC) and ``faketap`` (tap NIC, so the service allocates
guest IPs from ``cidr``): ``attach`` hands out a loopback ssh endpoint and
records every attach/detach in :data:`ATTACHED` so tests can check nothing leaks.
Registered through a fake ``.dist-info`` (see ``tests.support.daemon``).
"""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import (
    GuestNetConfig,
    NetAttachment,
    NetworkBackend,
    NicRequest,
    NicSpec,
    PluginContext,
    PortForward,
    Progress,
    hookimpl,
)

#: vm_id -> the attachment currently held (attach adds, detach removes).
ATTACHED: dict[str, NetAttachment] = {}
#: vm_id -> the ports the core asked the last attach to publish.
PUBLISHED: dict[str, tuple[PortForward, ...]] = {}
#: Backend names, once per ``setup_host`` call (the host side is set up when a VM first needs it).
SET_UP: list[str] = []
#: Port of the loopback "ssh endpoint" each attach hands out (nothing listens: the ssh probe is the test's).
SSH_PORT = 2222


class FakeNetwork:
    kind: str = "user"

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def setup_host(self, progress: Progress) -> None:
        """Nothing to prepare; recorded in :data:`SET_UP`."""
        SET_UP.append(f"fake{self.kind}")

    def attach(self, request: NicRequest) -> NetAttachment:
        tap = f"tap-{request.vm_id[:8]}" if self.kind == "tap" else None
        address = request.guest_ip or "10.0.2.15"
        attachment = NetAttachment(
            backend=f"fake{self.kind}",
            nic=NicSpec(kind="tap" if self.kind == "tap" else "user", mac=request.mac, tap_name=tap),
            guest=GuestNetConfig(address, 24, "10.0.2.2", "10.0.2.3"),
            ssh_host="127.0.0.1",
            ssh_port=SSH_PORT,
            dns_address=request.guest_ip or None,
            state={"vm": request.vm_name},
        )
        ATTACHED[request.vm_id] = attachment
        PUBLISHED[request.vm_id] = request.published
        return attachment

    def detach(self, attachment: NetAttachment) -> None:
        for vm_id, held in list(ATTACHED.items()):
            if held == attachment:
                del ATTACHED[vm_id]

    def teardown_host(self) -> None:
        """Nothing was set up."""

    def dns_link(self) -> tuple[str, str] | None:
        return None


class FakeTapNetwork(FakeNetwork):
    kind = "tap"


@hookimpl
def banger_network_backends() -> Iterable[NetworkBackend]:
    return [
        NetworkBackend("fakeuser", "user-mode NICs, no host side", FakeNetwork, nic_kind="user"),
        NetworkBackend("faketap", "tap NICs, no host side", FakeTapNetwork, nic_kind="tap"),
    ]
