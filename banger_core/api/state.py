"""A VM's lifecycle states and the one table of legal transitions between them.

``created -> starting -> running -> stopping -> stopped``, and ``error`` (with
``last_error``) when a start fails. The daemon checks every state change
against :data:`TRANSITIONS` (reconcile included); the CLI and the SDK read the
same enum. The values are the strings stored in the database and sent over
the API, so old databases and clients read them unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from banger_core.common.errors import Conflict


class VmState(enum.StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


#: Where each state may go next. Staying in a state is always allowed (a no-op).
TRANSITIONS: Mapping[VmState, frozenset[VmState]] = {
    VmState.CREATED: frozenset({VmState.STARTING}),
    VmState.STARTING: frozenset({VmState.RUNNING, VmState.ERROR, VmState.STOPPED}),
    VmState.RUNNING: frozenset({VmState.STOPPING, VmState.STOPPED, VmState.ERROR}),
    VmState.STOPPING: frozenset({VmState.STOPPED, VmState.ERROR}),
    VmState.STOPPED: frozenset({VmState.STARTING}),
    VmState.ERROR: frozenset({VmState.STARTING, VmState.STOPPED}),
}

#: States in which a VMM process may exist (its handles are worth reading, reconcile checks it).
ACTIVE: frozenset[VmState] = frozenset({VmState.STARTING, VmState.RUNNING, VmState.STOPPING})
#: States from which ``start`` boots the VM: exactly those that may become ``starting``.
STARTABLE: frozenset[VmState] = frozenset(s for s, targets in TRANSITIONS.items() if VmState.STARTING in targets)


def can_transition(current: VmState, target: VmState) -> bool:
    """Whether a VM in ``current`` may become ``target``."""
    return target == current or target in TRANSITIONS[current]


def check_transition(name: str, current: VmState, target: VmState) -> None:
    """Raise :class:`Conflict` naming the VM and both states when ``current -> target`` is illegal."""
    if not can_transition(current, target):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        raise Conflict(f"VM {name} is {current}; it cannot become {target} (from {current}: {allowed})")
