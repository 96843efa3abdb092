"""The daemon's VM domain: :class:`VmService` and the small modules it is made of.

``service`` (the public operations), ``views`` (the API's VM views),
``spec`` (spec resolution), ``alloc`` (IP/MAC allocation), ``records`` (SQL
rows, state transitions, per-VM locks), ``handles`` (``handles.json``),
``disks`` (VM files), ``boot`` (boot, readiness, halt) and ``reconcile``.
"""

from banger_core.api.requests import CreateRequest
from banger_core.daemon.vm.service import VmService

__all__ = ["CreateRequest", "VmService"]
