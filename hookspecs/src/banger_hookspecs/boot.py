"""banger's guest boot protocol: what every banger initramfs understands.

A kernel provider's initramfs (``KernelArtifact.initrd``) implements one
version of this protocol; the core writes the kernel command line and the
disks accordingly, whatever the VMM.

Version 1
---------

Disks, in the order the VMM attaches them:

* ``vda`` — the image's ``rootfs.ext4``, attached **read-only**; never written.
* ``vdb`` — the VM's overlay disk (ext4). The initramfs uses ``/upper`` and
  ``/work`` on it as overlayfs upper and work dirs. The core pre-stages the
  VM's identity in ``/upper``: ``etc/hostname``, ``etc/machine-id`` and the
  ed25519 ssh host key pair in ``etc/ssh/`` (generated on the host so the host
  can pin it in banger's known_hosts before the first boot).
* ``vdc`` — the VM's work disk (ext4), mounted at ``/root``. The core stages
  ``.ssh/authorized_keys`` and ``file_sync`` entries on it.

Kernel command line keys (``KEY=VALUE``, no spaces in values):

* ``banger.ip=ADDR/PREFIX`` — static IPv4 address of ``eth0``.
* ``banger.gw=ADDR`` — default gateway.
* ``banger.dns=ADDR`` — nameserver written to ``/etc/resolv.conf``.
* ``banger.hostname=NAME`` — the VM name.
* ``banger.proto=1`` — the protocol version the core speaks.

The initramfs loads the virtio/overlay modules, configures ``eth0``, builds
the overlay root, moves its mounts under a tmpfs ``/run``, mounts the work
disk at ``/root``, makes files staged by an unprivileged host user belong to
root, and ``switch_root``s into ``/sbin/init``.

Guest agent: the initramfs starts ``banger-agent`` (:mod:`banger_hookspecs.guest_agent`)
with the image's ``python3`` before the image's init. The VMM gives it a
channel no guest network reaches: QEMU a ``virtserialport`` named
``PORT_NAME`` on a Unix-socket chardev at ``<run_dir>/`` :data:`AGENT_SOCKET`,
Firecracker its vsock device (the agent listens on vsock port ``VSOCK_PORT``).
The work disk carries the VM's agent token at ``.banger/agent-token``.

Readiness: the image prints :data:`READY_MARKER` followed by the boot id on
the serial console once sshd accepts connections.
"""

from __future__ import annotations

BOOT_PROTOCOL = 1
DISK_ORDER = ("image", "overlay", "work")
CMDLINE_IP = "banger.ip"
CMDLINE_GATEWAY = "banger.gw"
CMDLINE_DNS = "banger.dns"
CMDLINE_HOSTNAME = "banger.hostname"
CMDLINE_PROTO = "banger.proto"
READY_MARKER = "BANGER-READY"
#: The QEMU chardev socket of the guest agent's virtio-serial port, in the VM's run dir.
AGENT_SOCKET = "agent.sock"
#: Where the core stages identity files on the overlay disk.
OVERLAY_UPPER = "upper"
OVERLAY_WORK = "work"
