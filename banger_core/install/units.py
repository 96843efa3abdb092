"""``bangerd.service`` and ``bangerd-root.service``, rendered from an :class:`InstallRecord`.

Why each hardening line is there is said next to it: the units are read by
people auditing a host (docs/privileges.md), not only by systemd.
"""

from __future__ import annotations

from banger_core.install.layout import DAEMON_UNIT, ROOT_UNIT
from banger_core.install.record import InstallRecord

#: bangerd-root's capability bounding set, each with the operation that needs it.
ROOT_HELPER_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("CAP_NET_ADMIN", "bridge, taps (and their owner), nftables table, ip_forward, *.vm routing in systemd-resolved"),
    ("CAP_NET_BIND_SERVICE", "binding the .vm DNS server's port 53 and handing the socket to bangerd"),
    ("CAP_CHOWN", "handing the owner files it creates (jailer chroot, sockets)"),
    ("CAP_DAC_OVERRIDE", "the jailer preparing its chroot in directories of the owner"),
    ("CAP_FOWNER", "the jailer setting modes on files of the owner"),
    ("CAP_SETUID", "the jailer dropping to the owner's uid"),
    ("CAP_SETGID", "the jailer dropping to the owner's gid"),
    ("CAP_SYS_ADMIN", "the jailer's mount namespace and pivot_root"),
    ("CAP_SYS_CHROOT", "the jailer's chroot"),
    ("CAP_MKNOD", "the jailer's /dev/kvm and /dev/net/tun nodes inside the chroot"),
    ("CAP_SYS_RESOURCE", "the jailer's resource limits for Firecracker"),
)


def _header(record: InstallRecord) -> str:
    return (
        f"# Written by `banger system install` (banger {record.version}, commit {record.commit[:8]}); "
        "`banger system uninstall` removes it.\n"
        "# See docs/install.md and docs/privileges.md.\n"
    )


def daemon_unit(record: InstallRecord) -> str:
    """bangerd as the owner: no capabilities, read-only system and home, its own state/cache/runtime dirs."""
    # XDG_* make the daemon's default dirs exactly the ones systemd creates below (state_dir = $XDG_DATA_HOME/banger).
    return f"""{_header(record)}
[Unit]
Description=banger daemon for {record.owner} (VMs, images, API on {record.socket})
Wants={ROOT_UNIT}
After={ROOT_UNIT} network.target

[Service]
Type=simple
User={record.owner}
ExecStart={record.prefix}/current/bin/bangerd
Environment=BANGER_ROOT_HELPER={record.root_socket}
Environment=XDG_DATA_HOME=/var/lib XDG_CACHE_HOME=/var/cache XDG_RUNTIME_DIR=/run
StateDirectory=banger
StateDirectoryMode=0700
CacheDirectory=banger
CacheDirectoryMode=0700
RuntimeDirectory=banger
RuntimeDirectoryMode=0700
# Running VMs keep their sockets here across a daemon restart, and the next daemon adopts them.
RuntimeDirectoryPreserve=yes
# Only bangerd itself is stopped on restart: the VMs it launched keep running (see docs/daemon.md).
KillMode=process
Restart=on-failure
RestartSec=2
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
# AF_NETLINK: reading interfaces and addresses; AF_VSOCK: the guest agent on hosts with vhost-vsock.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_VSOCK
DevicePolicy=closed
DeviceAllow=/dev/kvm rw
DeviceAllow=/dev/net/tun rw
DeviceAllow=/dev/vhost-vsock rw
DeviceAllow=/dev/vhost-net rw

[Install]
WantedBy=multi-user.target
"""


def root_helper_unit(record: InstallRecord) -> str:
    """bangerd-root: root, but only the capabilities its operations use, and nothing else it can write."""
    capabilities = "\n".join(f"#   {name}: {why}" for name, why in ROOT_HELPER_CAPABILITIES)
    return f"""{_header(record)}
[Unit]
Description=banger root helper for uid {record.owner_uid} (bridge, taps, NAT, DNS port on {record.root_socket})
Before={DAEMON_UNIT}

[Service]
Type=simple
ExecStart={record.prefix}/current/bin/bangerd-root --owner-uid {record.owner_uid}
# bangerd-root makes it root:<owner's group> 0710 itself; the owner reaches its 0600 socket, nobody else.
RuntimeDirectory=banger-root
RuntimeDirectoryMode=0710
# Whether it switched ip_forward on (so --revert can switch it off again).
StateDirectory=banger-root
StateDirectoryMode=0700
Restart=on-failure
RestartSec=2
UMask=0077
# What each capability is for:
{capabilities}
CapabilityBoundingSet={" ".join(name for name, _ in ROOT_HELPER_CAPABILITIES)}
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=read-only
PrivateTmp=yes
# Not ProtectKernelTunables: turning on net.ipv4.ip_forward is one of the helper's jobs.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""
