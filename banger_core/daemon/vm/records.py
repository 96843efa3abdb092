"""VM records in the state database, state transitions, and the per-VM operation locks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypedDict

from sqlmodel import col, select

from banger_core.api.state import VmState, check_transition
from banger_core.common.errors import NotFound
from banger_core.common.names import validate_vm_name
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Vm


class VmChanges(TypedDict, total=False):
    """Fields a state change may set besides the state itself."""

    last_error: str | None
    started_at: datetime | None


class VmRecords:
    """Reads and state changes of ``Vm`` rows; every change is reported to ``changed``."""

    def __init__(self, rt: Runtime, changed: Callable[[], None]) -> None:
        self.rt = rt
        self.changed = changed

    def by_name(self, name: str) -> Vm:
        validate_vm_name(name)
        with self.rt.database.read() as s:
            vm = s.exec(select(Vm).where(Vm.name == name)).first()
        if vm is None:
            raise NotFound(f"no VM named {name!r}: `banger vm list` shows the VMs")
        return vm

    def by_id(self, vm_id: str) -> Vm:
        with self.rt.database.session() as s:
            vm = s.get(Vm, vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} no longer exists")
        return vm

    def all(self) -> Sequence[Vm]:
        with self.rt.database.read() as s:
            return s.exec(select(Vm).order_by(col(Vm.created_at))).all()

    def in_states(self, *states: VmState) -> Sequence[Vm]:
        with self.rt.database.read() as s:
            return s.exec(select(Vm).where(col(Vm.state).in_(states))).all()

    def set_state(self, vm_id: str, state: VmState, changes: VmChanges | None = None) -> Vm:
        """Move VM ``vm_id`` to ``state`` (checked against the transition table) and apply ``changes``."""
        changes = changes or {}
        with self.rt.database.session() as s:
            vm = s.get(Vm, vm_id)
            if vm is None:
                raise NotFound(f"VM {vm_id} vanished")
            check_transition(vm.name, vm.state, state)
            vm.state = state
            if "last_error" in changes:
                vm.last_error = changes["last_error"]
            if "started_at" in changes:
                vm.started_at = changes["started_at"]
            s.add(vm)
        self.changed()
        return vm

    def keep_for_inspection(self, vm_id: str) -> None:
        """A ``--rm`` VM that failed to boot loses its remove-on-exit mark."""
        with self.rt.database.session() as s:
            row = s.get(Vm, vm_id)
            if row is not None and row.state == VmState.ERROR:
                row.remove_on_exit = False
                s.add(row)

    def delete(self, vm_id: str) -> None:
        with self.rt.database.session() as s:
            row = s.get(Vm, vm_id)
            if row is not None:
                s.delete(row)


class VmLocks:
    """Operations on one VM serialize on its lock; operations on different VMs run in parallel."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, vm_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(vm_id, threading.Lock())

    @contextmanager
    def hold(self, vm_id: str) -> Iterator[None]:
        with self.lock(vm_id):
            yield

    def discard(self, vm_id: str) -> None:
        with self._guard:
            self._locks.pop(vm_id, None)
