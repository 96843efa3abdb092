"""Warm starts: templates of a booted, paused guest, and the VMs restored from them.

A template is one VM booted cold until sshd accepts banger's key, then paused
and saved by its VMM (QEMU: a migration stream), plus copies of its overlay
and work disks as they were at that moment. A VM whose image, kernel, size,
backend, network backend and VMM build all match a template starts from
sparse copies of those disks and the saved state instead of booting.

Layout (state dir, 0700)::

    templates/<digest>/template.json   the key it was made for + what a restore needs
    templates/<digest>/state           the VMM's saved state
    templates/<digest>/overlay.ext4    snapshot-time disks (sparse)
    templates/<digest>/work.ext4
    templates/<digest>/agent.token     the guest agent's token on that work disk (0600)
    templates/.building-<digest>/      a template being made; its VMM's pid in vmm.json

A template whose key no longer matches (image re-pulled, kernel changed, other
QEMU) is simply never found: the digest covers every part of the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import TypeAdapter

from banger_core.common.agent_client import AgentClient
from banger_core.common.agent_identity import GuestIdentity
from banger_core.common.agent_login import LoginEnvironment
from banger_core.common.agent_login import record as record_login
from banger_core.common.agent_transport import QEMU_AGENT_SOCKET, VirtioSerialTransport
from banger_core.common.config import bridge_addresses
from banger_core.common.errors import AgentUnavailable, Conflict, NotFound, OperationFailed
from banger_core.common.ssh import SshTarget, banner_ready, close_master
from banger_core.daemon import guest
from banger_core.daemon.agent.client import (
    HOST_TOKEN_FILE,
    agent_client_for,
    new_token,
    stage_token,
    token_rotation,
    write_host_token,
)
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.vm.alloc import template_ip
from banger_core.daemon.vm.disks import OVERLAY_DISK, WORK_DISK
from banger_core.daemon.vm.spec import nic_kind
from banger_hookspecs import Disk, NetAttachment, NicRequest, Progress, VmmSnapshots, VmProcess, VmSpec
from banger_hookspecs.boot import READY_MARKER
from banger_hookspecs.process import is_same_process, signal_process, wait_gone

log = logging.getLogger("banger.warm")

STATE_FILE = "state"
META_FILE = "template.json"
BUILDING_PREFIX = ".building-"
#: The name the template guest boots with (its restored copies get their own through the agent).
TEMPLATE_HOSTNAME = "banger-template"
#: The template guest's MAC. The VMM's saved NIC state keeps it: a VM restored on a bridge takes its own
#: (make_own), or two VMs of one template would share one MAC on the bridge.
TEMPLATE_MAC = "02:42:00:00:00:01"
#: Bumped when what a template holds changes shape: older templates are then never matched.
#: 2: the saved guest's agent takes entropy + clock with the identity, reloads sshd, rotates its token.
#: 3: the template records its ssh login's environment, and its agent runs an exec in exactly that
#:    environment (``env_exact``) with SIGHUP at its default: `vm run` runs commands through the agent.
TEMPLATE_FORMAT = 3
_PROCESS = TypeAdapter(VmProcess)
#: Seconds the agent gets per call (it runs before the restore is called done).
AGENT_TIMEOUT = 30.0
#: Host randomness mixed into a restored guest's pool (more than its 256-bit state).
RESEED_BYTES = 512


@dataclass(frozen=True)
class TemplateKey:
    """Everything a saved guest depends on: a VM matches a template only if all of it is equal."""

    image: str
    image_sha256: str
    kernel: str
    kernel_sha256: str
    vcpus: int
    memory_mib: int
    disk_size: int
    backend: str
    network: str
    vmm: str
    format: int = TEMPLATE_FORMAT

    @property
    def digest(self) -> str:
        """Directory name of the template (hex, 24 digits): a hash of every field."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


@dataclass(frozen=True)
class Template:
    """A saved guest on disk, ready to restore."""

    key: TemplateKey
    directory: Path
    cmdline: str
    host_key_public: str
    created_at: float
    #: The template's guest agent answered before the pause: restored VMs get their identity through it.
    agent: bool = False
    #: What an ssh login to the saved guest puts in a command's environment (None: not recorded).
    login: LoginEnvironment | None = None

    @property
    def state(self) -> Path:
        return self.directory / STATE_FILE

    def disk(self, role: str) -> Path:
        return self.directory / (OVERLAY_DISK if role == "overlay" else WORK_DISK)

    @property
    def agent_token(self) -> str:
        """The agent token the restored guest has loaded (it is on the copied work disk)."""
        return (self.directory / HOST_TOKEN_FILE).read_text().strip()


def _login(value: object) -> LoginEnvironment | None:
    try:
        return LoginEnvironment.from_json(value)
    except ValueError:
        return None


def copy_sparse(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` copying only its data extents, so a sparse disk stays sparse.

    ``cp --reflink`` falls back to a full copy on ext4; walking SEEK_DATA/SEEK_HOLE
    and copying each extent in the kernel (``copy_file_range``) moves the few MiB a
    lazily initialised ext4 disk holds, not its nominal size. No fsync: the copy is
    a new VM's disk, read back through the same page cache by its VMM.
    """
    size = src.stat().st_size
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        fout.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            position = start
            while position < end:
                copied = os.copy_file_range(fin.fileno(), fout.fileno(), end - position, position, position)
                if copied == 0:  # the source shrank under us: what is left stays a hole
                    break
                position += copied
            offset = end


class Templates:
    """Find, make and remove warm-start templates. Methods block: call them from threads."""

    def __init__(self, rt: Runtime, store: Store) -> None:
        self.rt = rt
        self.store = store
        self.root = rt.layout.state_dir / "templates"
        self._building: set[str] = set()
        self._lock = threading.Lock()
        #: Template VMs on a bridge all boot with the one reserved address (alloc.template_ip): one at a time.
        self._tap_template = threading.Lock()

    # -- keys and lookup ---------------------------------------------------

    def snapshots(self, backend: str) -> VmmSnapshots | None:
        """The backend's snapshot side, or None when it cannot save and restore guests."""
        driver = self.rt.vmm(backend)
        return driver if isinstance(driver, VmmSnapshots) else None

    def key(
        self, image: str, kernel: str, vcpus: int, memory_mib: int, disk_size: int, backend: str, network: str
    ) -> TemplateKey | None:
        """The template key for a VM of this spec, or None when its backend cannot warm start."""
        snapshots = self.snapshots(backend)
        if snapshots is None:
            return None
        image_row = self.store.get_image(image)
        kernel_row = self.store.get_kernel(kernel)
        kernel_sha = hashlib.sha256(json.dumps(kernel_row.sha256, sort_keys=True).encode()).hexdigest()
        return TemplateKey(
            image=image,
            image_sha256=image_row.sha256,
            kernel=kernel,
            kernel_sha256=kernel_sha,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_size=disk_size,
            backend=backend,
            network=network,
            vmm=snapshots.snapshot_compat(),
        )

    def find(self, key: TemplateKey) -> Template | None:
        """The template made for exactly ``key``, if one is complete on disk."""
        directory = self.root / key.digest
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != asdict(key):
            return None
        template = Template(
            key=key,
            directory=directory,
            cmdline=str(meta["cmdline"]),
            host_key_public=str(meta["host_key_public"]),
            created_at=float(meta["created_at"]),
            agent=bool(meta.get("agent", False)),
            login=_login(meta.get("login")),
        )
        if not all(p.is_file() for p in (template.state, template.disk("overlay"), template.disk("work"))):
            return None
        return template

    def for_image(self, image: str) -> list[Template]:
        """Every complete template of ``image``, whatever its key."""
        found = []
        for meta_path in sorted(self.root.glob(f"*/{META_FILE}")):
            try:
                meta = json.loads(meta_path.read_text())
                key = TemplateKey(**meta["key"])
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if key.image == image and (template := self.find(key)) is not None:
                found.append(template)
        return found

    # -- making ------------------------------------------------------------

    def warm(self, key: TemplateKey, progress: Progress) -> Template:
        """Boot a template VM for ``key`` cold, wait until ssh works, pause it and save it.

        Raises:
            Conflict: a template for this key is being made right now.
            OperationFailed: the template VM did not boot or could not be saved; nothing is left behind.
        """
        with self._lock:
            if key.digest in self._building:
                raise Conflict(f"a warm template of image {key.image} is being made already: wait for it")
            self._building.add(key.digest)
        try:
            if nic_kind(self.rt, key.network) != "tap":
                return self._make(key, progress, guest_ip="")
            cidr, bridge_ip = bridge_addresses(self.rt.config)
            guest_ip = template_ip(cidr, bridge_ip)
            if guest_ip is None:
                raise OperationFailed(f"cidr {cidr} has no address to spare for a template VM: widen cidr")
            with self._tap_template:
                return self._make(key, progress, guest_ip=guest_ip)
        finally:
            with self._lock:
                self._building.discard(key.digest)

    def _make(self, key: TemplateKey, progress: Progress, guest_ip: str) -> Template:
        snapshots = self.snapshots(key.backend)
        if snapshots is None:
            raise OperationFailed(f"VMM backend {key.backend} cannot save a running guest: warm start needs qemu")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        building = self.root / f"{BUILDING_PREFIX}{key.digest}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(mode=0o700)
        run_dir = self.rt.layout.runtime_dir / "templates" / key.digest
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        vmm = self.rt.vmm(key.backend)
        net = self.rt.network(key.network)
        attachment = None
        proc: VmProcess | None = None
        template_id = key.digest[:16]
        try:
            progress.step(f"making the template disks of {key.image}")
            identity = guest.new_identity(TEMPLATE_HOSTNAME)
            guest.create_overlay_disk(building / OVERLAY_DISK, key.disk_size, identity)
            token = new_token()
            with tempfile.TemporaryDirectory(dir=building, prefix=".work-staging-") as staging:
                # Only banger's key and the agent token: file_sync and workspaces go in per VM, after the restore.
                guest.stage_authorized_keys(Path(staging), self.rt.keys.public_key())
                stage_token(Path(staging), token)
                guest.create_work_disk(building / WORK_DISK, key.disk_size, Path(staging))
            write_host_token(building, token)
            attachment = net.attach(
                NicRequest(
                    vm_id=template_id,
                    vm_name=TEMPLATE_HOSTNAME,
                    mac=TEMPLATE_MAC,
                    guest_ip=guest_ip,
                    host_access=False,
                    published=(),
                )
            )
            vmlinux, initrd = self.store.kernel_files(key.kernel)
            serial = building / "serial.log"
            spec = VmSpec(
                vm_id=template_id,
                name=TEMPLATE_HOSTNAME,
                kernel=vmlinux,
                initrd=initrd,
                cmdline=guest.kernel_cmdline(TEMPLATE_HOSTNAME, attachment.guest),
                disks=self._disks(key.image, building),
                vcpus=key.vcpus,
                memory_mib=key.memory_mib,
                nic=attachment.nic,
                vsock_cid=None,
                run_dir=run_dir,
                serial_log=serial,
            )
            progress.step(f"booting the template VM of {key.image} ({key.backend})")
            proc = vmm.launch(spec, progress)
            (building / "vmm.json").write_bytes(_PROCESS.dump_json(proc))
            known_hosts = building / "known_hosts"
            known_hosts.write_text(f"{TEMPLATE_HOSTNAME}.vm {identity.host_key_public}\n")
            target = SshTarget(
                name=TEMPLATE_HOSTNAME,
                host=attachment.ssh_host,
                port=attachment.ssh_port,
                key=str(self.rt.keys.key),
                known_hosts=str(known_hosts),
                control_path=str(run_dir / "ssh.sock"),
            )
            progress.step("waiting for the template's ssh")
            self._wait_ready(target, serial, vmm, proc)
            # The saved guest's login environment: `vm run` reproduces it for commands run through the agent.
            login = record_login(target)
            close_master(run_dir / "ssh.sock")
            agent_problem = self._agent_problem(run_dir, token)
            agent = agent_problem is None
            if agent_problem is not None:
                progress.step(
                    f"the template's guest agent does not answer ({agent_problem}): restored VMs keep its identity"
                )
            progress.step("pausing and saving the template")
            snapshots.save_snapshot(proc, building / STATE_FILE)
            proc = None
            (building / META_FILE).write_text(
                json.dumps(
                    {
                        "key": asdict(key),
                        "cmdline": spec.cmdline,
                        "host_key_public": identity.host_key_public,
                        "created_at": time.time(),
                        "agent": agent,
                        "login": login.to_json(),
                    }
                )
            )
            (building / "vmm.json").unlink()
            final = self.root / key.digest
            shutil.rmtree(final, ignore_errors=True)
            os.replace(building, final)
        except BaseException as exc:
            if proc is not None:
                vmm.kill(proc)
                wait_gone(proc.pid, proc.start_time, 5.0)
            shutil.rmtree(building, ignore_errors=True)
            if isinstance(exc, Exception) and not isinstance(exc, OperationFailed | Conflict):
                raise OperationFailed(f"warming image {key.image} failed: {exc}") from exc
            raise
        finally:
            if attachment is not None:
                try:
                    net.detach(attachment)
                except Exception as exc:
                    log.warning("detaching the template VM's network: %s", exc)
            shutil.rmtree(run_dir, ignore_errors=True)
        template = self.find(key)
        if template is None:  # only if someone removed it under us
            raise OperationFailed(f"the template of {key.image} vanished right after it was saved")
        progress.step(f"template of {key.image} saved")
        return template

    @staticmethod
    def _agent_problem(run_dir: Path, token: str) -> str | None:
        """None when the template guest's agent answers on its QEMU virtio-serial port, else why not."""
        client = AgentClient(VirtioSerialTransport(run_dir / QEMU_AGENT_SOCKET), token)
        try:
            client.health(timeout=AGENT_TIMEOUT)
        except (AgentUnavailable, OperationFailed, OSError) as exc:
            log.warning("template guest agent: %s", exc)
            return str(exc)
        return None

    def _disks(self, image: str, directory: Path) -> tuple[Disk, ...]:
        return (
            Disk(self.store.rootfs(image), True, "image"),
            Disk(directory / OVERLAY_DISK, False, "overlay"),
            Disk(directory / WORK_DISK, False, "work"),
        )

    def _wait_ready(self, target: SshTarget, serial: Path, vmm: object, proc: VmProcess) -> None:
        from banger_core.daemon.vm.boot import ssh_login_works

        timeout = float(self.rt.config["ssh_ready_timeout"])
        deadline = time.monotonic() + timeout
        marker = guest.MarkerWatch(serial, READY_MARKER.encode())
        checks = 0
        while time.monotonic() < deadline:
            if checks % 10 == 0 and not self.rt.vmm(proc.backend).is_running(proc):
                raise OperationFailed(f"the template VM exited during boot: {self.rt.vmm(proc.backend).log_tail(proc)}")
            checks += 1
            if (marker.seen() or banner_ready(target.host, target.port, timeout=0.5)) and ssh_login_works(target):
                return
            time.sleep(0.2)
        raise OperationFailed(f"the template VM did not become ssh-ready within {timeout:.0f} s")

    # -- restoring ---------------------------------------------------------

    def copy_disks(self, template: Template, vm_dir: Path) -> None:
        """A new VM's disks as sparse copies of the template's, and the template's agent token as the VM's
        (it is what the restored guest has loaded). The work disk lands last: reconcile takes a work disk
        in place as a finished create."""
        write_host_token(vm_dir, template.agent_token)
        for role, name in (("overlay", OVERLAY_DISK), ("work", WORK_DISK)):
            partial = vm_dir / f".{name}.warm"
            copy_sparse(template.disk(role), partial)
            os.replace(partial, vm_dir / name)

    def make_own(
        self, vm_id: str, identity: guest.GuestIdentity, attachment: NetAttachment, progress: Progress
    ) -> None:
        """Give a restored guest ``identity``, its own agent token and, on a bridge, its own MAC and address.

        One call installs the hostname, machine-id and ed25519 host key (sshd reload started), after
        mixing host randomness into the guest's RNG and setting its clock to the host's (it resumes at
        the template's save time: builds see files "from the future", TLS sees stale time), and last
        replaces the agent token every VM of the template shares with the VM's own, which the host
        keeps from then on (crash-safely: :func:`token_rotation`). Several VMs resumed from one saved
        state share none of these afterwards.
        On a tap NIC the guest resumes with the template's MAC (kept in the VMM's saved NIC state) and
        address: first its NIC takes the VM's MAC (virtio-net tells QEMU, which then filters for it),
        then the identity call sets the VM's address, gateway and nameserver.
        Nothing reaches the guest over ssh before this.
        """
        progress.step("giving the restored VM its own identity and agent token")
        client = agent_client_for(self.rt, vm_id)
        bridged = attachment.nic.kind == "tap"
        if bridged:
            self._set_mac(client, attachment.nic.mac)
        net = attachment.guest
        with token_rotation(client, self.rt.layout.vm_dir(vm_id)) as token:
            client.set_identity(
                GuestIdentity(
                    hostname=identity.hostname,
                    machine_id=identity.machine_id,
                    ssh_host_key=identity.host_key_private,
                    ssh_host_key_public=identity.host_key_public,
                    address=f"{net.address}/{net.prefix}" if bridged else None,
                    gateway=net.gateway if bridged else None,
                    dns=(net.dns,) if bridged else (),
                ),
                timeout=AGENT_TIMEOUT,
                entropy=os.urandom(RESEED_BYTES),
                clock=time.time(),
                # sshd reloads on the new key while the VM goes on; its first ssh user waits for it
                # (Power.confirm_ssh), a command run through the agent never does.
                wait_sshd=False,
                new_token=token,
            )

    @staticmethod
    def _set_mac(client: AgentClient, mac: str) -> None:
        """``ip link set eth0 address MAC`` in the guest (an exec: every template's agent has it)."""
        errors: list[bytes] = []
        status = client.exec(
            ["ip", "link", "set", "dev", "eth0", "address", mac],
            stdout=lambda _: None,
            stderr=errors.append,
            timeout=AGENT_TIMEOUT,
        )
        if status != 0:
            detail = b"".join(errors).decode(errors="replace").strip()
            raise OperationFailed(f"the restored guest could not take its MAC {mac}: {detail or f'status {status}'}")

    # -- removing ----------------------------------------------------------

    def remove(self, image: str) -> int:
        """Delete every template of ``image``; return how many there were.

        Raises:
            NotFound: the image has no template.
        """
        templates = self.for_image(image)
        if not templates:
            raise NotFound(f"image {image} has no warm template: `banger image warm {image}` makes one")
        for template in templates:
            shutil.rmtree(template.directory, ignore_errors=True)
        return len(templates)

    def forget_image(self, image: str) -> None:
        """Delete ``image``'s templates, if any (the image itself is gone)."""
        for template in self.for_image(image):
            shutil.rmtree(template.directory, ignore_errors=True)

    def finish_interrupted(self) -> None:
        """Stop the template VMs being made and drop their half-made files.

        At daemon start (a dead daemon's builds) and at a graceful stop (this
        daemon's own: a build thread that is still running fails, and cleans up too).
        """
        for building in sorted(self.root.glob(f"{BUILDING_PREFIX}*")):
            try:
                proc = _PROCESS.validate_json((building / "vmm.json").read_bytes())
            except (OSError, ValueError):
                proc = None
            if proc is not None and is_same_process(proc.pid, proc.start_time):
                log.warning("stopping the template VM (pid %d) of an unfinished warm template", proc.pid)
                signal_process(proc.pid, proc.start_time, signal.SIGKILL)
                wait_gone(proc.pid, proc.start_time, 5.0)
            shutil.rmtree(building, ignore_errors=True)
