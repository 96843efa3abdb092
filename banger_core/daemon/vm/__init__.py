"""The daemon's VM domain: :class:`VmService` and the small modules it is made of.

``service`` (the public operations), ``views`` (create request, VM views),
``spec`` (spec resolution), ``alloc`` (IP/MAC allocation), ``records`` (SQL
rows, state transitions, per-VM locks), ``handles`` (``handles.json``),
``disks`` (VM files), ``boot`` (boot, readiness, halt) and ``reconcile``.
"""

from banger_core.daemon.vm.service import VmService
from banger_core.daemon.vm.views import CreateRequest

__all__ = ["CreateRequest", "VmService"]
