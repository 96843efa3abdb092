"""Bookkeeping against reality: at daemon start (reconcile) and periodically (check_alive)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from banger_core.api.state import ACTIVE, STARTABLE, VmState
from banger_core.common.progress import NullProgress
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Vm
from banger_core.daemon.vm.boot import Power
from banger_core.daemon.vm.disks import WORK_DISK, finish_removals
from banger_core.daemon.vm.handles import HandleStore
from banger_core.daemon.vm.records import VmLocks, VmRecords
from banger_core.daemon.vm.views import info

log = logging.getLogger("banger.vms")


class Reconciler:
    """Adopts live VMs, demotes dead ones (keeping their disks), removes what no one can want."""

    def __init__(
        self,
        rt: Runtime,
        store: Store,
        records: VmRecords,
        handles: HandleStore,
        power: Power,
        locks: VmLocks,
        forget: Callable[[Vm], None],
    ) -> None:
        self.rt = rt
        self.store = store
        self.records = records
        self.handles = handles
        self.power = power
        self.locks = locks
        self.forget = forget

    def reconcile(self) -> dict[str, list[str]]:
        """At daemon start: finish what a crash interrupted, adopt live VMs, demote dead ones (keeping their disks)."""
        self.store.recover()
        removed = self._remove_leftovers()
        adopted: list[str] = []
        demoted: list[str] = []
        for vm in self.records.in_states(*ACTIVE):
            handles = self.handles.read(vm.id)
            proc = handles.vmm if handles is not None else None
            alive = False
            if proc is not None:
                try:
                    alive = bool(self.rt.vmm(vm.backend).is_running(proc))
                except Exception as exc:
                    log.warning("cannot inspect %s: %s", vm.name, exc)
            if proc is not None and alive and vm.state == VmState.RUNNING:
                adopted.append(vm.name)
                log.info("adopted running VM %s (pid %s)", vm.name, proc.pid)
                continue
            pid = proc.pid if proc is not None else None
            reason = (
                f"its {vm.backend} process (pid {pid}) was gone when the daemon started"
                if pid
                else "the daemon stopped while it was starting"
            )
            if proc is not None and alive:  # starting/stopping when the daemon died: finish the job cleanly
                try:
                    self.rt.vmm(vm.backend).kill(proc)
                except Exception as exc:
                    log.warning("killing %s: %s", vm.name, exc)
                reason = f"the daemon stopped while it was {vm.state}; the VM was stopped"
            self.power.release_network(vm)
            self.records.set_state(vm.id, VmState.STOPPED, {"last_error": reason})
            demoted.append(vm.name)
            log.warning("VM %s marked stopped: %s", vm.name, reason)
            self.rt.pm.call_event("banger_vm_stopped", vm=info(self.records.by_name(vm.name)))
        self.records.changed()
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
        finish_removals(self.rt)
        removed: list[str] = []
        for vm in self.records.all():
            vm_dir = self.rt.layout.vm_dir(vm.id)
            if vm.remove_on_exit:
                why = "it was a --rm VM whose session ended with the previous daemon"
            elif vm.state in STARTABLE and not vm_dir.exists():
                why = "its directory is gone: a create or a delete was interrupted"
            elif vm.state == VmState.CREATED and not (vm_dir / WORK_DISK).exists():
                why = "its create was interrupted before its disks were complete"
            else:
                continue
            handles = self.handles.read(vm.id)
            if handles is not None and handles.vmm is not None:
                try:
                    self.rt.vmm(vm.backend).kill(handles.vmm)
                except Exception as exc:
                    log.warning("killing %s: %s", vm.name, exc)
            self.power.release_network(vm)
            self.forget(vm)
            log.warning("VM %s (id %s) deleted: %s", vm.name, vm.id, why)
            removed.append(vm.name)
            self.rt.pm.call_event("banger_vm_deleted", vm=info(vm))
        return removed

    def check_alive(self) -> list[str]:
        """Mark running VMs whose VMM died (guest powered off, crash) as stopped; return their names."""
        gone: list[str] = []
        for vm in self.records.in_states(VmState.RUNNING):
            handles = self.handles.read(vm.id)
            proc = handles.vmm if handles is not None else None
            if proc is None:
                continue
            lock = self.locks.lock(vm.id)
            if not lock.acquire(blocking=False):
                continue  # an operation on it is in progress; it will settle the state
            try:
                current = self.records.by_name(vm.name)
                if current.state != VmState.RUNNING:
                    continue
                if self.rt.vmm(vm.backend).is_running(proc):
                    continue
                reason = f"its VMM process exited (guest power-off or crash): {self.power.why_dead(current, proc)}"
                self.power.halt(current, NullProgress(), force=True, reason=reason)
                gone.append(vm.name)
            except Exception:
                log.exception("checking %s", vm.name)
            finally:
                lock.release()
        return gone
