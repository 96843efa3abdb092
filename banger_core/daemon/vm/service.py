"""The VM lifecycle, independent of any backend: the operations the API and the web UI call.

States and their legal transitions: :mod:`banger_core.api.state`. Every transition is committed to the database *before*
the side effects that could fail, so a crash at any point leaves a record that
reconcile can make sense of. Operations on one VM serialize on a per-VM lock;
operations on different VMs run in parallel.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import JsonValue
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from banger_core.api.models import Deleted, PlanValues, RunPlan, VmDetail, VmView, WarmTemplateView
from banger_core.api.requests import CreateRequest
from banger_core.api.state import ACTIVE, STARTABLE, VmState
from banger_core.common.config import bridge_addresses
from banger_core.common.errors import Conflict, NotFound, OperationFailed
from banger_core.common.names import generate_vm_name, new_vm_id, validate_vm_name
from banger_core.common.ssh import SshTarget
from banger_core.daemon.busy import busy_while
from banger_core.daemon.crashpoint import crash_point
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Image, Kernel, Vm
from banger_core.daemon.vm import alloc, boot, disks, ports, spec
from banger_core.daemon.vm.boot import Power
from banger_core.daemon.vm.handles import HandleStore, VmHandles
from banger_core.daemon.vm.reconcile import Reconciler
from banger_core.daemon.vm.records import VmLocks, VmRecords
from banger_core.daemon.vm.views import info, vm_detail, vm_view
from banger_core.daemon.vm.warm import Template, TemplateKey, Templates
from banger_hookspecs import Progress

log = logging.getLogger("banger.vms")


class _LogProgress:
    """Progress of a background job: into the daemon's log."""

    def step(self, message: str) -> None:
        log.info("warm: %s", message)

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        log.debug("warm: %s", message)


class VmService:
    """Create, start, stop, delete and reconcile VMs. Methods block: call them from threads."""

    def __init__(self, rt: Runtime, store: Store, *, ssh_probe: boot.SshProbe = boot.ssh_login_works) -> None:
        """``ssh_probe`` is the readiness login (tests without a guest sshd pass their own)."""
        self.rt = rt
        self.store = store
        self.on_change: list[Callable[[], None]] = []
        self.records = VmRecords(rt, self._changed)
        self.handles = HandleStore(rt.layout)
        self.locks = VmLocks()
        self._alloc_lock = threading.Lock()
        self.templates = Templates(rt, store)
        self.power = Power(rt, store, self.records, self.handles, ssh_probe, self.templates)
        self.reconciler = Reconciler(rt, store, self.records, self.handles, self.power, self.locks, self._forget)

    def _changed(self) -> None:
        for callback in self.on_change:
            try:
                callback()
            except Exception:
                log.exception("change callback failed")

    # -- queries -----------------------------------------------------------

    def all(self) -> list[VmView]:
        return [vm_view(vm, self._handles_json(self.handles.cache.get(vm.id))) for vm in self.records.all()]

    def get(self, name: str) -> VmDetail:
        vm = self.records.by_name(name)
        return vm_detail(vm, self._handles_json(self.handles.read(vm.id)), boot.serial_log(self.rt, vm.id))

    def running_addresses(self) -> dict[str, str]:
        """``name -> address`` of running VMs with a routable address (for the .vm DNS server)."""
        out: dict[str, str] = {}
        for vm in self.records.in_states(VmState.RUNNING):
            handles = self.handles.cache.get(vm.id)
            if handles is not None and handles.net is not None and handles.net.dns_address:
                out[vm.name] = handles.net.dns_address
        return out

    @staticmethod
    def _handles_json(handles: VmHandles | None) -> dict[str, JsonValue] | None:
        return handles.to_json() if handles is not None else None

    def ssh_target(self, name: str) -> SshTarget:
        vm = self.records.by_name(name)
        if vm.state != VmState.RUNNING:
            hint = f"start it: `banger vm start {name}`" if vm.state in STARTABLE else "wait"
            raise Conflict(f"VM {name} is {vm.state}, not running: {hint}")
        handles = self.handles.read(vm.id)
        if handles is None or handles.net is None:
            raise OperationFailed(f"VM {name} has no network handles: restart it (`banger vm restart {name}`)")
        return boot.ssh_target(self.rt, vm, handles.net.ssh_host, handles.net.ssh_port)

    # -- spec resolution ---------------------------------------------------

    def resolve(self, req: CreateRequest, *, image_may_be_missing: bool = False) -> tuple[PlanValues, dict[str, str]]:
        """Effective spec values and where each came from (see :func:`spec.resolve`)."""
        return spec.resolve(self.rt, self.store, req, image_may_be_missing=image_may_be_missing)

    # -- create ------------------------------------------------------------

    @busy_while("vm create")
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
        sync_entries = disks.file_sync_entries(self.rt)
        if on_spec is not None:
            on_spec(RunPlan(values=values, sources=sources))
        vm = self._insert(req, values, sources)
        if on_record is not None:
            on_record(vm.id, vm.name)
        crash_point("create:recorded")
        # Only a VM's first boot may come from a template: later starts keep the VM's own disks.
        key = None if req.cold or not req.start else self._template_key(vm)
        template = self.templates.find(key) if key is not None else None
        try:
            if template is not None:
                # Its disks are the template's, as they were at the pause; file_sync goes in after the restore.
                progress.step("copying the warm template's disks")
                self.rt.layout.vm_dir(vm.id).mkdir(mode=0o700, parents=True)
                self.templates.copy_disks(template, self.rt.layout.vm_dir(vm.id))
            else:
                progress.step("creating disks")
                disks.create_disks(self.rt, vm, progress, sync_entries)
        except BaseException:
            self._discard(vm)
            raise
        crash_point("create:disks")
        self.rt.pm.call_event("banger_vm_created", vm=info(vm))
        self._changed()
        if not req.start:
            return self.get(vm.name)
        try:
            detail = self.start(vm.name, progress, template=template)
        except BaseException:
            if req.remove_on_exit:
                self.records.keep_for_inspection(vm.id)
            raise
        if key is not None and template is None and self.rt.config["warm_auto"]:
            self._warm_in_background(key)
        return detail

    def warm_image(self, image: str, progress: Progress) -> WarmTemplateView:
        """Make (again) the template a default ``vm create --image IMAGE`` would restore."""
        values, _ = self.resolve(CreateRequest(image=image))
        key = self.templates.key(
            image, values.kernel, values.vcpus, values.memory_mib, values.disk_size, values.backend, values.network
        )
        if key is None:
            raise Conflict(
                f"warm start needs a VMM backend that saves guests (qemu) and a usernet network; "
                f"new VMs here get {values.backend} on {values.network}: set vmm_backend/network_backend"
            )
        template = self.templates.warm(key, progress)
        k = template.key
        return WarmTemplateView(
            image=k.image,
            kernel=k.kernel,
            vcpus=k.vcpus,
            memory_mib=k.memory_mib,
            disk_size=k.disk_size,
            backend=k.backend,
            network=k.network,
            vmm=k.vmm,
            digest=k.digest,
        )

    def _template_key(self, vm: Vm) -> TemplateKey | None:
        try:
            return self.templates.key(
                vm.image, vm.kernel, vm.vcpus, vm.memory_mib, vm.disk_size, vm.backend, vm.network
            )
        except Exception as exc:  # a warm start is an optimisation: never fail a create over it
            log.warning("no warm start for %s: %s", vm.name, exc)
            return None

    def _warm_in_background(self, key: TemplateKey) -> None:
        """After an image's first cold boot: make its template so the next VM starts warm (``warm_auto``)."""

        def work() -> None:
            try:
                self.templates.warm(key, _LogProgress())
            except Exception as exc:
                log.warning("auto-warming image %s failed: %s", key.image, exc)

        threading.Thread(target=work, name=f"warm-{key.digest}", daemon=True).start()

    def _insert(self, req: CreateRequest, values: PlanValues, sources: dict[str, str]) -> Vm:
        with self._alloc_lock, self.rt.database.session() as s:
            rows = s.exec(select(Vm.name, Vm.guest_ip, Vm.mac, Vm.ports)).all()
            names = {r[0] for r in rows}
            name = req.name or generate_vm_name(lambda n: n in names)
            if name in names:
                raise Conflict(f"a VM named {name!r} already exists: pick another --name or delete it")
            # Under the allocation lock, so two creates never publish (or pick) the same host port.
            published = ports.assign(values.ports, ports.published_by_others((r[0], r[3]) for r in rows))
            # Checked again in this write transaction: the store's deletes check for users in
            # theirs, so a delete racing this create either sees the new VM or is seen here.
            for kind, model, ref in (("image", Image, values.image), ("kernel", Kernel, values.kernel)):
                if s.get(model, ref) is None:
                    raise NotFound(f"{kind} {ref!r} was deleted meanwhile: run `banger {kind} pull {ref}`")
            vm = Vm(
                id=new_vm_id(),
                name=name,
                image=values.image,
                kernel=values.kernel,
                backend=values.backend,
                network=values.network,
                vcpus=values.vcpus,
                memory_mib=values.memory_mib,
                disk_size=values.disk_size,
                guest_ip=self._allocate_ip(values.network, {r[1] for r in rows if r[1]}),
                mac=alloc.new_mac({r[2] for r in rows}),
                state=VmState.CREATED,
                created_at=datetime.now(UTC),
                remove_on_exit=req.remove_on_exit,
                host_access=values.host_access,
                ports=ports.stored(published),
                spec_sources=sources,
            )
            s.add(vm)
            try:
                s.flush()
            except IntegrityError as exc:  # the unique constraints are the last line of defence
                raise Conflict(f"could not create VM {name}: {exc.orig}") from None
        return vm

    def _allocate_ip(self, network_backend: str, used: set[str]) -> str | None:
        """A free address in ``cidr`` for a tap NIC; None for user-mode NICs, whose address is fixed."""
        if spec.nic_kind(self.rt, network_backend) != "tap":
            return None
        cidr, bridge_ip = bridge_addresses(self.rt.config)
        return alloc.allocate_ip(cidr, bridge_ip, used)

    def _discard(self, vm: Vm) -> None:
        """Undo a create that failed half way: no record, no files, no pinned key."""
        self._forget(vm)
        self._changed()

    def _forget(self, vm: Vm) -> None:
        """Remove a (stopped) VM's disks, sockets, pinned host key, handles and record; the record goes last."""
        disks.remove_files(self.rt, vm)
        crash_point("delete:files-removed")
        self.rt.keys.unpin(f"{vm.name}.vm")
        self.records.delete(vm.id)
        self.handles.forget(vm.id)

    # -- start / stop ------------------------------------------------------

    def start(self, name: str, progress: Progress, *, template: Template | None = None) -> VmDetail:
        """Boot a stopped VM (cold), or, for a create's first boot, restore it from ``template``."""
        vm = self.records.by_name(name)
        with self.locks.hold(vm.id):
            vm = self.records.by_name(name)
            if vm.state == VmState.RUNNING:
                raise Conflict(f"VM {name} is already running")
            if vm.state not in STARTABLE:
                raise Conflict(f"VM {name} is {vm.state}: wait for it, or `banger vm stop --force {name}`")
            self.power.boot(vm, progress, template)
        return self.get(name)

    def stop(self, name: str, progress: Progress, *, force: bool = False) -> VmDetail:
        vm = self.records.by_name(name)
        with self.locks.hold(vm.id):
            vm = self.records.by_name(name)
            if vm.state in (VmState.CREATED, VmState.STOPPED):
                raise Conflict(f"VM {name} is not running ({vm.state})")
            if vm.state == VmState.ERROR and not self.handles.read(vm.id):
                self.records.set_state(vm.id, VmState.STOPPED)
                return self.get(name)
            self.power.halt(vm, progress, force=force)
        return self.get(name)

    def restart(self, name: str, progress: Progress) -> VmDetail:
        vm = self.records.by_name(name)
        with self.locks.hold(vm.id):
            vm = self.records.by_name(name)
            if vm.state in ACTIVE or vm.state == VmState.ERROR:
                self.power.halt(vm, progress, force=False)
            self.power.boot(self.records.by_name(name), progress)
        return self.get(name)

    # -- delete ------------------------------------------------------------

    def delete(self, name: str, progress: Progress, *, force: bool = False) -> Deleted:
        return self.delete_by_id(self.records.by_name(name).id, progress, force=force)

    @busy_while("vm delete")
    def delete_by_id(self, vm_id: str, progress: Progress, *, force: bool = False) -> Deleted:
        """Delete exactly the VM ``vm_id``: cleanups use this, as a new VM may have taken the old one's name."""
        with self.locks.hold(vm_id):
            vm = self.records.by_id(vm_id)
            name = vm.name
            if vm.state in ACTIVE or self.handles.read(vm.id):
                if not force:
                    raise Conflict(f"VM {name} is {vm.state}: stop it first, or pass --force to stop and delete it")
                self.power.halt(vm, progress, force=True)
                vm = self.records.by_id(vm_id)
            crash_point("delete:halted")
            progress.step("removing disks")
            snapshot = info(vm)
            self._forget(vm)
        self.locks.discard(vm.id)
        self._changed()
        progress.step(f"{name} deleted")
        self.rt.pm.call_event("banger_vm_deleted", vm=snapshot)
        return Deleted(name=name)

    # -- reconcile ---------------------------------------------------------

    def reconcile(self) -> dict[str, list[str]]:
        """At daemon start: finish what a crash interrupted, adopt live VMs, demote dead ones (keeping their disks)."""
        self.templates.finish_interrupted()
        return self.reconciler.reconcile()

    def check_alive(self) -> list[str]:
        """Mark running VMs whose VMM died (guest powered off, crash) as stopped; return their names."""
        return self.reconciler.check_alive()
