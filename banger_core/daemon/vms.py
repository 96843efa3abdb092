"""The VM lifecycle, independent of any backend.

States: ``created -> starting -> running -> stopping -> stopped``, and ``error``
(with ``last_error``). Every transition is committed to the database *before*
the side effects that could fail, so a crash at any point leaves a record that
reconcile can make sense of. Operations on one VM serialize on a per-VM lock;
operations on different VMs run in parallel.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from banger_core.api.models import Deleted, RunPlan, SshEndpoint, VmDetail, VmView
from banger_core.api.requests import CreateRequest
from banger_core.common.config import bridge_addresses, format_size, parse_size
from banger_core.common.defaults import effective_defaults
from banger_core.common.errors import BangerError, Conflict, NotFound, OperationFailed, Unavailable
from banger_core.common.names import generate_vm_name, new_vm_id, validate_image_name, validate_vm_name
from banger_core.common.progress import NullProgress
from banger_core.common.ssh import SshTarget, banner_ready, close_master
from banger_core.daemon import guest
from banger_core.daemon.crashpoint import crash_point
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Image, Kernel, Vm
from banger_hookspecs import (
    Disk,
    GuestNetConfig,
    NetAttachment,
    NicRequest,
    NicSpec,
    PortForward,
    Progress,
    VmInfo,
    VmProcess,
    VmSpec,
)
from banger_hookspecs.boot import READY_MARKER
from banger_hookspecs.logpump import rotated
from banger_hookspecs.process import wait_gone

log = logging.getLogger("banger.vms")

TRANSITIONS: dict[str, set[str]] = {
    "created": {"starting"},
    "starting": {"running", "error", "stopped"},
    "running": {"stopping", "stopped", "error"},
    "stopping": {"stopped", "error"},
    "stopped": {"starting"},
    "error": {"starting", "stopped"},
}
STOP_TIMEOUT = 20.0
#: How long a VMM that its backend killed or stopped gets to exit before we stop waiting to reap it.
REAP_TIMEOUT = 5.0
MIN_DISK = 1 << 30
MAX_DISK = 2 << 40
SERIAL_TAIL_LINES = 15
WORK_DISK = "work.ext4"
#: A VM directory being removed; reconcile finishes the job.
DELETING_PREFIX = ".deleting-"


def _config_source(config: Any, key: str) -> str:
    return "default" if config.sources.get(key) == "default" else "config"


def vm_view(vm: Vm, handles: dict[str, Any] | None = None) -> VmView:
    """The API's view of ``vm``; the live fields (pid, ssh, address) come from its handles while it runs."""
    pid: int | None = None
    ssh: SshEndpoint | None = None
    address: str | None = None
    if handles and vm.state in ("starting", "running", "stopping"):
        pid = handles.get("vmm", {}).get("pid")
        net = handles.get("net")
        if net:
            ssh = SshEndpoint(host=net["ssh_host"], port=net["ssh_port"])
            # Where the guest is reachable: its own IP on a bridge, the forwarded port with usernet.
            address = net.get("dns_address") or f"{net['ssh_host']}:{net['ssh_port']}"
    return VmView(
        id=vm.id,
        name=vm.name,
        state=vm.state,
        image=vm.image,
        kernel=vm.kernel,
        backend=vm.backend,
        network=vm.network,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        disk_size=vm.disk_size,
        guest_ip=vm.guest_ip,
        mac=vm.mac,
        created_at=vm.created_at,
        started_at=vm.started_at,
        last_error=vm.last_error,
        remove_on_exit=vm.remove_on_exit,
        host_access=vm.host_access,
        spec_sources=vm.spec_sources,
        pid=pid,
        ssh=ssh,
        address=address,
    )


def vm_detail(vm: Vm, handles: dict[str, Any] | None, serial_log: Path) -> VmDetail:
    """:func:`vm_view` plus the path of the VM's console log."""
    return VmDetail(**dict(vm_view(vm, handles)), serial_log=str(serial_log))


def info(vm: Vm) -> VmInfo:
    return VmInfo(
        id=vm.id,
        name=vm.name,
        state=vm.state,
        image=vm.image,
        kernel=vm.kernel,
        backend=vm.backend,
        network=vm.network,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        guest_ip=vm.guest_ip,
    )


# -- handles.json -----------------------------------------------------------


def attachment_from_dict(data: dict[str, Any]) -> NetAttachment:
    nic = dict(data["nic"])
    nic["forwards"] = tuple(PortForward(**f) for f in nic.get("forwards", ()))
    return NetAttachment(
        backend=data["backend"],
        nic=NicSpec(**nic),
        guest=GuestNetConfig(**data["guest"]),
        ssh_host=data["ssh_host"],
        ssh_port=int(data["ssh_port"]),
        dns_address=data.get("dns_address"),
        state=dict(data.get("state", {})),
    )


def process_from_dict(data: dict[str, Any]) -> VmProcess:
    return VmProcess(
        backend=data["backend"],
        pid=int(data["pid"]),
        start_time=int(data["start_time"]),
        control_socket=str(data["control_socket"]),
        extra=dict(data.get("extra", {})),
    )


def _reap(proc: VmProcess) -> None:
    """Collect a stopped VMM's exit status, whichever backend started it.

    VMM processes are the daemon's children (until a daemon restart), and a
    backend may not wait for them: without this each stopped VM would stay a
    ``<defunct>`` entry under bangerd for the daemon's lifetime. Only that exact
    process (pid + start time) is collected, so other subprocesses keep theirs.
    """
    wait_gone(proc.pid, proc.start_time, REAP_TIMEOUT)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(asdict(obj), default=str))


class VmService:
    """Create, start, stop, delete and reconcile VMs. Methods block: call them from threads."""

    def __init__(self, rt: Runtime, store: Store) -> None:
        self.rt = rt
        self.store = store
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._alloc_lock = threading.Lock()
        self.handles: dict[str, dict[str, Any]] = {}
        self.on_change: list[Callable[[], None]] = []

    # -- helpers -----------------------------------------------------------

    @contextmanager
    def _vm_lock(self, vm_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(vm_id, threading.Lock())
        with lock:
            yield

    def _changed(self) -> None:
        for callback in self.on_change:
            try:
                callback()
            except Exception:
                log.exception("change callback failed")

    def _get(self, name: str) -> Vm:
        validate_vm_name(name)
        with self.rt.database.read() as s:
            vm = s.exec(select(Vm).where(Vm.name == name)).first()
        if vm is None:
            raise NotFound(f"no VM named {name!r}: `banger vm list` shows the VMs")
        return vm

    def _get_by_id(self, vm_id: str) -> Vm:
        with self.rt.database.session() as s:
            vm = s.get(Vm, vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        return vm

    def _set_state(self, vm_id: str, state: str, **fields: Any) -> Vm:
        with self.rt.database.session() as s:
            vm = s.get(Vm, vm_id)
            if vm is None:
                raise NotFound(f"VM {vm_id} vanished")
            if state != vm.state and state not in TRANSITIONS.get(vm.state, set()):
                raise Conflict(f"VM {vm.name} is {vm.state}; it cannot become {state}")
            vm.state = state
            for key, value in fields.items():
                setattr(vm, key, value)
            s.add(vm)
        self._changed()
        return vm

    def _handles_path(self, vm_id: str) -> Path:
        return self.rt.layout.vm_dir(vm_id) / "handles.json"

    def _write_handles(self, vm_id: str, handles: dict[str, Any]) -> None:
        path = self._handles_path(vm_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(handles, fh, indent=2)
        os.replace(tmp, path)
        self.handles[vm_id] = handles

    def _read_handles(self, vm_id: str) -> dict[str, Any] | None:
        if vm_id in self.handles:
            return self.handles[vm_id]
        try:
            data = json.loads(self._handles_path(vm_id).read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict):
            self.handles[vm_id] = data
            return data
        return None

    def _drop_handles(self, vm_id: str) -> None:
        self.handles.pop(vm_id, None)
        self._handles_path(vm_id).unlink(missing_ok=True)

    def serial_log(self, vm_id: str) -> Path:
        return self.rt.layout.vm_dir(vm_id) / "serial.log"

    def serial_tail(self, vm_id: str, lines: int = SERIAL_TAIL_LINES) -> str:
        try:
            with open(self.serial_log(vm_id), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no serial output)"
        tail = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) if tail else "(no serial output)"

    # -- queries -----------------------------------------------------------

    def all(self) -> list[VmView]:
        with self.rt.database.read() as s:
            vms = s.exec(select(Vm).order_by(col(Vm.created_at))).all()
        return [vm_view(vm, self.handles.get(vm.id)) for vm in vms]

    def get(self, name: str) -> VmDetail:
        vm = self._get(name)
        return vm_detail(vm, self._read_handles(vm.id), self.serial_log(vm.id))

    def running_addresses(self) -> dict[str, str]:
        """``name -> address`` of running VMs with a routable address (for the .vm DNS server)."""
        out: dict[str, str] = {}
        with self.rt.database.read() as s:
            for vm in s.exec(select(Vm).where(Vm.state == "running")).all():
                net = (self.handles.get(vm.id) or {}).get("net") or {}
                if net.get("dns_address"):
                    out[vm.name] = net["dns_address"]
        return out

    def ssh_target(self, name: str) -> SshTarget:
        vm = self._get(name)
        if vm.state != "running":
            hint = f"start it: `banger vm start {name}`" if vm.state in ("stopped", "created", "error") else "wait"
            raise Conflict(f"VM {name} is {vm.state}, not running: {hint}")
        handles = self._read_handles(vm.id) or {}
        net = handles.get("net")
        if not net:
            raise OperationFailed(f"VM {name} has no network handles: restart it (`banger vm restart {name}`)")
        return self._target(vm, net["ssh_host"], int(net["ssh_port"]))

    def _target(self, vm: Vm, host: str, port: int) -> SshTarget:
        return SshTarget(
            name=vm.name,
            host=host,
            port=port,
            key=str(self.rt.keys.key),
            known_hosts=str(self.rt.keys.known_hosts),
            control_path=str(self._control_path(vm.id)),
        )

    def _control_path(self, vm_id: str) -> Path:
        return self.rt.layout.vm_run_dir(vm_id) / "ssh.sock"

    # -- spec resolution ---------------------------------------------------

    def resolve(
        self, req: CreateRequest, *, image_may_be_missing: bool = False
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Effective spec values and where each came from (flag, config, image, host heuristic).

        With ``image_may_be_missing`` (planning before an automatic pull) an
        image that is not pulled yet is fine and its kernel is reported as
        coming from the image once pulled.
        """
        config = self.rt.config
        defaults = effective_defaults(config.get("vm_defaults"), self.rt.ctx.host.cpus, self.rt.ctx.host.memory_mib)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        flags = {
            "vcpus": req.vcpus,
            "memory_mib": req.memory_mib,
            "disk_size": parse_size(req.disk_size) if req.disk_size is not None else None,
        }
        for key, flag in flags.items():
            values[key], sources[key] = (flag, "flag") if flag is not None else defaults[key]
        if not isinstance(values["vcpus"], int) or not 1 <= values["vcpus"] <= 64:
            raise BangerError(f"vCPUs must be between 1 and 64, got {values['vcpus']}")
        if not isinstance(values["memory_mib"], int) or not 128 <= values["memory_mib"] <= 1 << 20:
            raise BangerError(f"memory must be between 128 and 1048576 MiB, got {values['memory_mib']}")
        if not MIN_DISK <= values["disk_size"] <= MAX_DISK:
            raise BangerError(
                f"disk size must be between 1G and 2T, got {format_size(values['disk_size'])}: pass e.g. --disk-size 8G"
            )

        if req.image:
            values["image"], sources["image"] = validate_image_name(req.image), "flag"
        else:
            values["image"], sources["image"] = config["default_image"], _config_source(config, "default_image")
        image = None
        if not image_may_be_missing or self.store.has_image(values["image"]):
            image = self.store.get_image(values["image"])
        values["image_present"] = image is not None
        if req.kernel:
            values["kernel"], sources["kernel"] = validate_image_name(req.kernel, "kernel"), "flag"
        elif config.get("default_kernel"):
            values["kernel"], sources["kernel"] = config["default_kernel"], "config"
        elif image is None:
            values["kernel"], sources["kernel"] = "the image's", "known once pulled"
        elif image.kernel_ref:
            values["kernel"], sources["kernel"] = image.kernel_ref, "image"
        else:
            raise BangerError(f"image {image.name} names no kernel: pass --kernel or set default_kernel")
        if image is not None:
            self.store.get_kernel(values["kernel"])

        network = req.network or config["network_backend"]
        sources["network"] = "flag" if req.network else _config_source(config, "network_backend")
        values["network"] = network
        self.rt.network(network)  # its settings (cidr for a bridge) are checked here, before anything exists
        values["host_access"], sources["host_access"] = self._host_access(req.host_access, network)

        backend, why = self.select_backend(req.backend, network)
        values["backend"], sources["backend"] = backend, why
        return values, sources

    def _host_access(self, requested: bool, network: str) -> tuple[bool, str]:
        """``--host-access``: honoured by user-mode NICs only, refused elsewhere rather than ignored."""
        if not requested:
            return False, "default"
        nic_kind = self.rt.pm.network_backends().require(network).value.nic_kind
        if nic_kind != "user":
            raise BangerError(
                f"--host-access only applies to user-mode networking (--network usernet): a {network} guest "
                "never reaches the host's 127.0.0.1"
            )
        return True, "flag"

    def select_backend(self, requested: str | None, network: str) -> tuple[str, str]:
        """``(backend, why)``: explicit flag or config, else ``auto`` (most preferred usable).

        Only backends that can attach ``network``'s kind of NIC qualify:
        Firecracker has no user-mode networking, so with ``usernet`` auto picks QEMU.
        """
        nic_kind = self._nic_kind(network)
        backends = self.rt.pm.vmm_backends()
        configured = self.rt.config["vmm_backend"]
        explicit = requested or (configured if configured != "auto" else None)
        if explicit:
            registration = self.rt.pm.vmm_backends().require(explicit).value
            if nic_kind not in registration.nic_kinds:
                raise Conflict(
                    f"VMM backend {explicit} cannot attach {network} NICs ({nic_kind}): "
                    f"use --network with a {'/'.join(registration.nic_kinds)} backend (e.g. --network bridge)"
                )
            availability = self.rt.vmm(explicit).availability()
            if not availability.usable:
                raise Unavailable(f"VMM backend {explicit} cannot run VMs here: {availability.reason}")
            return explicit, "flag" if requested else "config"
        candidates = []
        reasons = []
        for name in sorted(backends):
            if nic_kind not in backends[name].value.nic_kinds:
                reasons.append(f"{name}: cannot attach {network} NICs")
                continue
            availability = self.rt.vmm(name).availability()
            reasons.append(f"{name}: {availability.reason}")
            if availability.usable:
                candidates.append((availability.preference, name, availability.reason))
        if not candidates:
            why = "; ".join(reasons) or "none installed"
            raise Unavailable(f"no VMM backend can run VMs here with network {network} ({why}): see `banger doctor`")
        _, name, reason = max(candidates)
        return name, f"auto: {reason}"

    def _nic_kind(self, network: str) -> str:
        return str(self.rt.pm.network_backends().require(network).value.nic_kind)

    # -- allocation --------------------------------------------------------

    def _allocate_ip(self, network_backend: str, used: set[str]) -> str | None:
        """A free address in ``cidr`` for a tap NIC; None for user-mode NICs, whose address is fixed."""
        if self._nic_kind(network_backend) != "tap":
            return None
        cidr, bridge_ip = bridge_addresses(self.rt.config)
        for host in cidr.hosts():
            text = str(host)
            if text not in used and host != bridge_ip:
                return text
        raise Conflict(f"no free guest address left in {cidr}: delete VMs or widen cidr")

    @staticmethod
    def _new_mac(used: set[str]) -> str:
        for _ in range(1000):
            mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
            if mac not in used:
                return mac
        raise Conflict("could not allocate a unique MAC address")

    # -- create ------------------------------------------------------------

    def create(
        self,
        req: CreateRequest,
        progress: Progress,
        *,
        on_record: Callable[[str, str], None] | None = None,
        on_spec: Callable[[RunPlan], None] | None = None,
    ) -> VmDetail:
        """Create a VM (record, disks) and, unless ``req.start`` is False, boot it.

        ``on_record(vm_id, name)`` is called as soon as the record exists, so a
        caller can clean up (by id: the name may be reused) if its client goes
        away mid-way. ``on_spec(plan)`` gets the resolved spec before anything
        is made (the daemon streams it as a ``spec`` event). A ``--rm`` VM that
        fails to boot loses its remove-on-exit mark: it is kept for inspection,
        also across a daemon restart.
        """
        if req.name is not None:
            validate_vm_name(req.name)
        values, sources = self.resolve(req)
        sync_entries = self._file_sync_entries()
        if on_spec is not None:
            on_spec(RunPlan.model_validate({"values": values, "sources": sources}))
        vm = self._insert(req, values, sources)
        if on_record is not None:
            on_record(vm.id, vm.name)
        crash_point("create:recorded")
        try:
            progress.step("creating disks")
            self._create_disks(vm, progress, sync_entries)
        except BaseException:
            self._discard(vm)
            raise
        crash_point("create:disks")
        self.rt.pm.call_event("banger_vm_created", vm=info(vm))
        self._changed()
        if not req.start:
            return self.get(vm.name)
        try:
            return self.start(vm.name, progress)
        except BaseException:
            if req.remove_on_exit:
                self._keep_for_inspection(vm.id)
            raise

    def _keep_for_inspection(self, vm_id: str) -> None:
        with self.rt.database.session() as s:
            row = s.get(Vm, vm_id)
            if row is not None and row.state == "error":
                row.remove_on_exit = False
                s.add(row)

    def _insert(self, req: CreateRequest, values: dict[str, Any], sources: dict[str, str]) -> Vm:
        with self._alloc_lock, self.rt.database.session() as s:
            rows = s.exec(select(Vm.name, Vm.guest_ip, Vm.mac)).all()
            names = {r[0] for r in rows}
            name = req.name or generate_vm_name(lambda n: n in names)
            if name in names:
                raise Conflict(f"a VM named {name!r} already exists: pick another --name or delete it")
            # Checked again in this write transaction: the store's deletes check for users in
            # theirs, so a delete racing this create either sees the new VM or is seen here.
            for kind, model, ref in (("image", Image, values["image"]), ("kernel", Kernel, values["kernel"])):
                if s.get(model, ref) is None:
                    raise NotFound(f"{kind} {ref!r} was deleted meanwhile: run `banger {kind} pull {ref}`")
            vm = Vm(
                id=new_vm_id(),
                name=name,
                image=values["image"],
                kernel=values["kernel"],
                backend=values["backend"],
                network=values["network"],
                vcpus=values["vcpus"],
                memory_mib=values["memory_mib"],
                disk_size=values["disk_size"],
                guest_ip=self._allocate_ip(values["network"], {r[1] for r in rows if r[1]}),
                mac=self._new_mac({r[2] for r in rows}),
                state="created",
                created_at=datetime.now(UTC),
                remove_on_exit=req.remove_on_exit,
                host_access=values["host_access"],
                spec_sources=sources,
            )
            s.add(vm)
            try:
                s.flush()
            except IntegrityError as exc:  # the unique constraints are the last line of defence
                raise Conflict(f"could not create VM {name}: {exc.orig}") from None
        return vm

    def _file_sync_entries(self) -> list[Any]:
        """Validated ``file_sync`` entries: all of them are checked before anything is created."""
        entries = self.rt.config.get("file_sync") or []
        if not entries:
            return []
        from banger_core.daemon.filesync import validate_entries

        return list(validate_entries(entries, Path(self.rt.env.get("HOME", "/root"))))

    def _create_disks(self, vm: Vm, progress: Progress, sync_entries: list[Any]) -> None:
        root = self.rt.layout.vm_dir(vm.id)
        root.mkdir(mode=0o700, parents=True)
        identity = guest.new_identity(vm.name)
        guest.create_overlay_disk(root / "overlay.ext4", vm.disk_size, identity)
        with tempfile.TemporaryDirectory(dir=root, prefix=".work-staging-") as staging:
            staging_dir = Path(staging)
            guest.stage_authorized_keys(staging_dir, self.rt.keys.public_key())
            if sync_entries:
                from banger_core.daemon.filesync import stage

                stage(sync_entries, staging_dir, lambda warning: progress.step(f"file_sync: {warning}"))
            partial = root / ".work.ext4.partial"
            guest.create_work_disk(partial, vm.disk_size, staging_dir)
        self.rt.keys.pin(f"{vm.name}.vm", identity.host_key_public)
        # Last and atomic: a work disk in place means the create finished (reconcile relies on it).
        os.replace(partial, root / WORK_DISK)

    def _discard(self, vm: Vm) -> None:
        """Undo a create that failed half way: no record, no files, no pinned key."""
        self._forget(vm)
        self._changed()

    def _forget(self, vm: Vm) -> None:
        """Remove a (stopped) VM's disks, sockets, pinned host key, handles and record.

        The directory is first renamed to ``.deleting-<id>`` (atomic), so a
        crash mid-removal never leaves a VM with half its disks: reconcile
        finishes ``.deleting-*`` directories and drops records whose directory
        is gone. The record goes last.
        """
        vm_dir = self.rt.layout.vm_dir(vm.id)
        doomed = vm_dir.with_name(f"{DELETING_PREFIX}{vm.id}")
        try:
            os.replace(vm_dir, doomed)
        except FileNotFoundError:
            pass
        shutil.rmtree(doomed, ignore_errors=True)
        shutil.rmtree(self.rt.layout.vm_run_dir(vm.id), ignore_errors=True)
        crash_point("delete:files-removed")
        self.rt.keys.unpin(f"{vm.name}.vm")
        with self.rt.database.session() as s:
            row = s.get(Vm, vm.id)
            if row is not None:
                s.delete(row)
        self.handles.pop(vm.id, None)

    # -- start -------------------------------------------------------------

    def start(self, name: str, progress: Progress) -> VmDetail:
        vm = self._get(name)
        with self._vm_lock(vm.id):
            vm = self._get(name)
            if vm.state == "running":
                raise Conflict(f"VM {name} is already running")
            if vm.state not in ("created", "stopped", "error"):
                raise Conflict(f"VM {name} is {vm.state}: wait for it, or `banger vm stop --force {name}`")
            self._boot(vm, progress)
        return self.get(name)

    def _boot(self, vm: Vm, progress: Progress) -> None:
        vmlinux, initrd = self.store.kernel_files(vm.kernel)
        rootfs = self.store.rootfs(vm.image)
        self.store.get_image(vm.image)
        vmm = self.rt.vmm(vm.backend)
        net = self.rt.network(vm.network)
        vm = self._set_state(vm.id, "starting", last_error=None)
        attachment: NetAttachment | None = None
        proc: VmProcess | None = None
        root = self.rt.layout.vm_dir(vm.id)
        run_dir = self.rt.layout.vm_run_dir(vm.id)
        try:
            run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            progress.step("attaching network")
            attachment = net.attach(
                NicRequest(
                    vm_id=vm.id, vm_name=vm.name, mac=vm.mac, guest_ip=vm.guest_ip or "", host_access=vm.host_access
                )
            )
            self._write_handles(vm.id, {"net": _jsonable(attachment)})
            serial = self.serial_log(vm.id)
            serial.write_bytes(b"")
            rotated(serial).unlink(missing_ok=True)  # this boot's console only
            spec = VmSpec(
                vm_id=vm.id,
                name=vm.name,
                kernel=vmlinux,
                initrd=initrd,
                cmdline=guest.kernel_cmdline(vm.name, attachment.guest),
                disks=(
                    Disk(rootfs, True, "image"),
                    Disk(root / "overlay.ext4", False, "overlay"),
                    Disk(root / WORK_DISK, False, "work"),
                ),
                vcpus=vm.vcpus,
                memory_mib=vm.memory_mib,
                nic=attachment.nic,
                vsock_cid=None,
                run_dir=run_dir,
                serial_log=serial,
            )
            progress.step(f"booting ({vm.backend})")
            proc = vmm.launch(spec, progress)
            self._write_handles(vm.id, {"net": _jsonable(attachment), "vmm": _jsonable(proc)})
            crash_point("start:launched")
            progress.step("waiting for ssh")
            self._wait_ready(vm, proc, attachment)
        except BaseException as exc:
            message = self._boot_failure(vm, exc, proc, attachment)
            if isinstance(exc, BangerError):
                raise type(exc)(message) from exc
            raise OperationFailed(message) from exc
        vm = self._set_state(vm.id, "running", started_at=datetime.now(UTC))
        progress.step(f"{vm.name} is running")
        self.rt.pm.call_event("banger_vm_started", vm=info(vm))

    def _boot_failure(
        self, vm: Vm, exc: BaseException, proc: VmProcess | None, attachment: NetAttachment | None
    ) -> str:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            message = "start interrupted"
        else:
            message = str(exc) or type(exc).__name__
        log.warning("VM %s failed to start: %s", vm.name, message)
        close_master(self._control_path(vm.id))
        if proc is not None:
            try:
                self.rt.vmm(vm.backend).kill(proc)
            except Exception:
                log.exception("killing %s after a failed start", vm.name)
            _reap(proc)
        if attachment is not None:
            try:
                self.rt.network(vm.network).detach(attachment)
            except Exception:
                log.exception("detaching %s after a failed start", vm.name)
        self._drop_handles(vm.id)
        self._set_state(vm.id, "error", last_error=message)
        return message

    def _wait_ready(self, vm: Vm, proc: VmProcess, attachment: NetAttachment) -> None:
        """Ready = sshd accepts banger's key. The serial marker or an SSH banner says when to try."""
        vmm = self.rt.vmm(vm.backend)
        timeout = float(self.rt.config["ssh_ready_timeout"])
        deadline = time.monotonic() + timeout
        target = self._target(vm, attachment.ssh_host, attachment.ssh_port)
        marker = guest.MarkerWatch(self.serial_log(vm.id), READY_MARKER.encode())
        checks = 0
        while time.monotonic() < deadline:
            # Poll briskly (a boot under KVM takes about a second), check the VMM every 2 s.
            if checks % 10 == 0 and not vmm.is_running(proc):
                raise OperationFailed(
                    f"VM {vm.name}'s {vm.backend} process exited during boot: {self._why_dead(vm, proc)}"
                )
            checks += 1
            if marker.seen() or banner_ready(attachment.ssh_host, attachment.ssh_port, timeout=0.5):
                probe = subprocess.run(
                    [*target.argv(connect_timeout=5), "true"], capture_output=True, timeout=30, check=False
                )
                if probe.returncode == 0:
                    return
                log.debug("ssh probe of %s: %s", vm.name, probe.stderr.decode(errors="replace").strip())
            time.sleep(0.2)
        raise OperationFailed(
            f"VM {vm.name} did not become ssh-ready within {timeout:.0f} s "
            f"(raise ssh_ready_timeout if this host is slow); last serial lines: {self.serial_tail(vm.id)}"
        )

    def _why_dead(self, vm: Vm, proc: VmProcess) -> str:
        """The VMM's own account of its death (log + console tail), one line."""
        try:
            tail = str(self.rt.vmm(vm.backend).log_tail(proc, SERIAL_TAIL_LINES) or "")
        except Exception as exc:  # a backend without a useful log must not hide the error itself
            log.debug("log_tail of %s failed: %s", vm.name, exc)
            tail = ""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        return " | ".join(lines[-SERIAL_TAIL_LINES:]) if lines else f"last serial lines: {self.serial_tail(vm.id)}"

    # -- stop --------------------------------------------------------------

    def stop(self, name: str, progress: Progress, *, force: bool = False) -> VmDetail:
        vm = self._get(name)
        with self._vm_lock(vm.id):
            vm = self._get(name)
            if vm.state in ("created", "stopped"):
                raise Conflict(f"VM {name} is not running ({vm.state})")
            if vm.state == "error" and not self._read_handles(vm.id):
                self._set_state(vm.id, "stopped")
                return self.get(name)
            self._halt(vm, progress, force=force)
        return self.get(name)

    def _halt(self, vm: Vm, progress: Progress, *, force: bool, reason: str | None = None) -> None:
        if vm.state != "stopping":
            vm = self._set_state(vm.id, "stopping")
        handles = self._read_handles(vm.id) or {}
        close_master(self._control_path(vm.id))
        if handles.get("vmm"):
            proc = process_from_dict(handles["vmm"])
            vmm = self.rt.vmm(vm.backend)
            if force:
                progress.step("killing the VM")
                vmm.kill(proc)
            else:
                progress.step("shutting down the guest")
                vmm.stop(proc, STOP_TIMEOUT)
            _reap(proc)
        self._release_network(vm, handles)
        vm = self._set_state(vm.id, "stopped", last_error=reason)
        progress.step(f"{vm.name} stopped")
        self.rt.pm.call_event("banger_vm_stopped", vm=info(vm))

    def _release_network(self, vm: Vm, handles: dict[str, Any]) -> None:
        """Give back the VM's NIC (tap, forward) and forget its handles; never fatal."""
        if handles.get("net"):
            try:
                self.rt.network(vm.network).detach(attachment_from_dict(handles["net"]))
            except Exception as exc:
                log.warning("detaching %s: %s", vm.name, exc)
        self._drop_handles(vm.id)

    def restart(self, name: str, progress: Progress) -> VmDetail:
        vm = self._get(name)
        with self._vm_lock(vm.id):
            vm = self._get(name)
            if vm.state in ("running", "starting", "stopping", "error"):
                self._halt(vm, progress, force=False)
            self._boot(self._get(name), progress)
        return self.get(name)

    # -- delete ------------------------------------------------------------

    def delete(self, name: str, progress: Progress, *, force: bool = False) -> Deleted:
        return self.delete_by_id(self._get(name).id, progress, force=force)

    def delete_by_id(self, vm_id: str, progress: Progress, *, force: bool = False) -> Deleted:
        """Delete exactly the VM ``vm_id``: cleanups use this, as a new VM may have taken the old one's name."""
        with self._vm_lock(vm_id):
            vm = self._get_by_id(vm_id)
            name = vm.name
            if vm.state in ("running", "starting", "stopping") or self._read_handles(vm.id):
                if not force:
                    raise Conflict(f"VM {name} is {vm.state}: stop it first, or pass --force to stop and delete it")
                self._halt(vm, progress, force=True)
                vm = self._get_by_id(vm_id)
            crash_point("delete:halted")
            progress.step("removing disks")
            snapshot = info(vm)
            self._forget(vm)
        with self._locks_guard:
            self._locks.pop(vm.id, None)
        self._changed()
        progress.step(f"{name} deleted")
        self.rt.pm.call_event("banger_vm_deleted", vm=snapshot)
        return Deleted(name=name)

    # -- reconcile ---------------------------------------------------------

    def reconcile(self) -> dict[str, list[str]]:
        """At daemon start: finish what a crash interrupted, adopt live VMs, demote dead ones (keeping their disks)."""
        self.store.recover()
        removed = self._remove_leftovers()
        adopted: list[str] = []
        demoted: list[str] = []
        with self.rt.database.read() as s:
            vms = s.exec(select(Vm).where(col(Vm.state).in_(("starting", "running", "stopping")))).all()
        for vm in vms:
            handles = self._read_handles(vm.id) or {}
            alive = False
            if handles.get("vmm"):
                try:
                    alive = bool(self.rt.vmm(vm.backend).is_running(process_from_dict(handles["vmm"])))
                except Exception as exc:
                    log.warning("cannot inspect %s: %s", vm.name, exc)
            if alive and vm.state == "running":
                adopted.append(vm.name)
                log.info("adopted running VM %s (pid %s)", vm.name, handles["vmm"]["pid"])
                continue
            pid = handles.get("vmm", {}).get("pid")
            reason = (
                f"its {vm.backend} process (pid {pid}) was gone when the daemon started"
                if pid
                else "the daemon stopped while it was starting"
            )
            if alive:  # starting/stopping when the daemon died: finish the job cleanly
                try:
                    self.rt.vmm(vm.backend).kill(process_from_dict(handles["vmm"]))
                except Exception as exc:
                    log.warning("killing %s: %s", vm.name, exc)
                reason = f"the daemon stopped while it was {vm.state}; the VM was stopped"
            self._release_network(vm, handles)
            with self.rt.database.session() as s:
                row = s.get(Vm, vm.id)
                if row is not None:
                    row.state = "stopped"
                    row.last_error = reason
                    s.add(row)
            demoted.append(vm.name)
            log.warning("VM %s marked stopped: %s", vm.name, reason)
            self.rt.pm.call_event("banger_vm_stopped", vm=info(self._get(vm.name)))
        self._changed()
        return {"adopted": adopted, "demoted": demoted, "removed": removed}

    def _remove_leftovers(self) -> list[str]:
        """Delete what no one can want any more; return the names of the VMs removed.

        * ``.deleting-*`` directories: a delete was removing them.
        * ``--rm`` VMs: their session was a connection to the previous daemon,
          so it is over; the VM goes, as its owner asked (VMM killed if alive).
        * a created/stopped/error record whose directory is gone: a create
          crashed before making it, or a delete after removing it (a delete
          halts the VM first, so a live VM is never in this case).
        * a ``created`` record without its work disk: the create never finished
          (the work disk is put in place last, atomically).

        Anything else keeps its disks, whatever its bookkeeping says.
        """
        for leftover in sorted(self.rt.layout.vms.glob(f"{DELETING_PREFIX}*")):
            log.warning("finishing the interrupted removal of %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        removed: list[str] = []
        with self.rt.database.session() as s:
            vms = s.exec(select(Vm)).all()
        for vm in vms:
            vm_dir = self.rt.layout.vm_dir(vm.id)
            if vm.remove_on_exit:
                why = "it was a --rm VM whose session ended with the previous daemon"
            elif vm.state in ("created", "stopped", "error") and not vm_dir.exists():
                why = "its directory is gone: a create or a delete was interrupted"
            elif vm.state == "created" and not (vm_dir / WORK_DISK).exists():
                why = "its create was interrupted before its disks were complete"
            else:
                continue
            handles = self._read_handles(vm.id) or {}
            if handles.get("vmm"):
                try:
                    self.rt.vmm(vm.backend).kill(process_from_dict(handles["vmm"]))
                except Exception as exc:
                    log.warning("killing %s: %s", vm.name, exc)
            self._release_network(vm, handles)
            self._forget(vm)
            log.warning("VM %s (id %s) deleted: %s", vm.name, vm.id, why)
            removed.append(vm.name)
            self.rt.pm.call_event("banger_vm_deleted", vm=info(vm))
        return removed

    def check_alive(self) -> list[str]:
        """Mark running VMs whose VMM died (guest powered off, crash) as stopped; return their names."""
        gone: list[str] = []
        with self.rt.database.read() as s:
            vms = s.exec(select(Vm).where(Vm.state == "running")).all()
        for vm in vms:
            handles = self._read_handles(vm.id) or {}
            if not handles.get("vmm"):
                continue
            with self._locks_guard:
                lock = self._locks.setdefault(vm.id, threading.Lock())
            if not lock.acquire(blocking=False):
                continue  # an operation on it is in progress; it will settle the state
            try:
                current = self._get(vm.name)
                if current.state != "running":
                    continue
                if self.rt.vmm(vm.backend).is_running(process_from_dict(handles["vmm"])):
                    continue
                proc = process_from_dict(handles["vmm"])
                reason = f"its VMM process exited (guest power-off or crash): {self._why_dead(current, proc)}"
                self._halt(current, NullProgress(), force=True, reason=reason)
                gone.append(vm.name)
            except Exception:
                log.exception("checking %s", vm.name)
            finally:
                lock.release()
        return gone
