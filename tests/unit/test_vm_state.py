"""VmState: one transition table, a clear refusal for an illegal move, the same text in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlmodel import select

from banger_core.api.state import ACTIVE, STARTABLE, TRANSITIONS, VmState, can_transition, check_transition
from banger_core.common.errors import Conflict
from banger_core.daemon.state.db import MIGRATIONS, Database
from banger_core.daemon.state.models import Vm

pytestmark = pytest.mark.unit


def test_every_state_has_a_row_and_targets_only_known_states() -> None:
    assert set(TRANSITIONS) == set(VmState)
    assert all(targets <= set(VmState) for targets in TRANSITIONS.values())
    assert {VmState.CREATED, VmState.STOPPED, VmState.ERROR} == STARTABLE
    assert {VmState.STARTING, VmState.RUNNING, VmState.STOPPING} == ACTIVE


@pytest.mark.parametrize("state", list(VmState))
def test_staying_in_a_state_is_allowed(state: VmState) -> None:
    check_transition("dev", state, state)


def test_an_illegal_transition_names_the_vm_both_states_and_the_way_out() -> None:
    assert not can_transition(VmState.CREATED, VmState.RUNNING)
    with pytest.raises(Conflict) as caught:
        check_transition("dev", VmState.CREATED, VmState.RUNNING)
    assert str(caught.value) == "VM dev is created; it cannot become running (from created: starting)"


def test_states_are_the_strings_clients_and_old_code_compare_with() -> None:
    assert [str(s) for s in VmState] == ["created", "starting", "running", "stopping", "stopped", "error"]
    assert VmState.RUNNING == "running" and f"{VmState.ERROR}" == "error"


def test_a_database_written_before_the_enum_loads_and_keeps_its_text(tmp_path: Path) -> None:
    """Rows hold plain state strings (as every banger wrote them); they load as VmState and are written back as text."""
    path = tmp_path / "banger.db"
    Database(path, migrations=MIGRATIONS[:1]).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO vms (id, name, image, kernel, backend, network, vcpus, memory_mib, disk_size, mac, state,"
            " created_at) VALUES ('ab', 'old', 'img', 'k', 'qemu', 'usernet', 1, 512, 1, 'm', 'running', '2026-01-01')"
        )
    db = Database(path)
    with db.session() as s:
        vm = s.exec(select(Vm).where(Vm.name == "old")).one()
        assert type(vm.state) is VmState and vm.state is VmState.RUNNING
        vm.state = VmState.STOPPED
        s.add(vm)
    with db.read() as s:
        assert s.exec(select(Vm).where(Vm.state == VmState.STOPPED)).one().name == "old"
    db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT state FROM vms WHERE name = 'old'").fetchone() == ("stopped",)
