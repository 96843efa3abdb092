"""Test-only crash points: the daemon SIGKILLs itself at a named step.

The crash-recovery suite (``tests/integration/test_crash_recovery.py``) starts
bangerd with ``BANGER_TESTING=1`` and ``BANGER_TEST_CRASH_AT=<step>`` to die at
exactly that step of a create, pull, delete or ``--rm`` session, then checks
what the next daemon makes of the leftovers. Without both variables this is a
no-op; nothing outside the tests sets them.

Steps: ``create:recorded``, ``create:disks``, ``start:launched``,
``pull:staged``, ``pull:swapping``, ``pull:replaced``, ``delete:halted``,
``delete:files-removed``, ``session:held``, ``agent:token-rotated`` (the guest
took a new agent token, the host has not renamed it into place yet).
"""

from __future__ import annotations

import os
import signal


def crash_point(step: str) -> None:
    """SIGKILL this process if the test environment asks for a crash at ``step``."""
    if os.environ.get("BANGER_TESTING") == "1" and os.environ.get("BANGER_TEST_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
