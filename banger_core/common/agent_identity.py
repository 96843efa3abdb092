"""What the host hands a running guest so it becomes one distinct VM (``set_identity``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GuestIdentity:
    """A VM's identity as the guest agent installs it.

    Attributes:
        hostname: the VM's name (a DNS label).
        machine_id: 32 lowercase hex digits for ``/etc/machine-id``.
        ssh_host_key: the OpenSSH private ed25519 host key; the agent installs it
            (and reloads a running sshd) before answering.
        ssh_host_key_public: its public line (``ssh-ed25519 AAAA...``); without it the
            guest derives it with ``ssh-keygen -y`` (a process start, slow under TCG).
        address: ``"10.x.y.z/24"`` for ``eth0`` on a bridge; None on usernet.
        gateway: the default gateway, or None.
        dns: nameservers for ``/etc/resolv.conf`` (left alone when empty).
    """

    hostname: str
    machine_id: str
    ssh_host_key: bytes = field(repr=False)
    ssh_host_key_public: str | None = None
    address: str | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = ()
