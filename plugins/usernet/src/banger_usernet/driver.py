"""User-mode networking: QEMU's built-in NAT, with the guest's sshd forwarded to loopback.

Nothing on the host changes and nothing listens beyond 127.0.0.1. The guest
sees QEMU's fixed slirp network (10.0.2.0/24: gateway .2, DNS .3, guest .15),
so guest addresses are not unique across VMs and ``*.vm`` names cannot point
at them: ``dns_address`` is None.

The guest never reaches the host's loopback unless the VM was created with
``--host-access``: QEMU's NAT turns a connection to ``10.0.2.2`` (or any other
address of the slirp subnet) into one to the host's ``127.0.0.1``, where
databases, dev servers and bangerd's own helpers listen, and QEMU 7.2 has no
way to filter destinations. So the QEMU backend runs an isolated user NIC on
passt (``--no-map-gw``: egress, no host loopback) when it is installed, else
with QEMU's ``restrict=on`` (no connection leaves the guest); the ssh forward
reaches the guest either way.
"""

from __future__ import annotations

import socket

from banger_hookspecs import (
    GuestNetConfig,
    NetAttachment,
    NicRequest,
    NicSpec,
    PluginContext,
    PortForward,
    Progress,
)

LOOPBACK = "127.0.0.1"
SLIRP_GUEST = GuestNetConfig(address="10.0.2.15", prefix=24, gateway="10.0.2.2", dns="10.0.2.3")
GUEST_SSH_PORT = 22


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    QEMU binds it a moment later; if another process wins that race, the VMM
    fails to start with "Could not set up host forwarding rule", the VM's
    start fails with that line, and starting it again picks another port.
    (The window is the few milliseconds between this call and QEMU's bind.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class UsernetDriver:
    """:class:`banger_hookspecs.NetworkDriver` for QEMU user-mode networking."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def setup_host(self, progress: Progress) -> None:
        """Nothing to prepare: QEMU does all of it inside its own process."""

    def attach(self, request: NicRequest) -> NetAttachment:
        port = free_loopback_port()
        return NetAttachment(
            backend="usernet",
            nic=NicSpec(
                kind="user",
                mac=request.mac,
                # Published ports ride the same user NIC as the ssh forward.
                forwards=(PortForward(LOOPBACK, port, GUEST_SSH_PORT), *request.published),
                host_access=request.host_access,
                egress=bool(self.ctx.config.get("usernet_egress", True)),
            ),
            guest=SLIRP_GUEST,
            ssh_host=LOOPBACK,
            ssh_port=port,
            dns_address=None,
            state={"ssh_port": str(port)},
        )

    def detach(self, attachment: NetAttachment) -> None:
        """Nothing to release: the forward dies with the QEMU process."""

    def dns_link(self) -> tuple[str, str] | None:
        return None
