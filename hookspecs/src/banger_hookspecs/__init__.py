"""banger's plugin contract: hook specifications, the hookimpl marker, value objects.

A plugin depends on this distribution (and pluggy) only::

    from banger_hookspecs import hookimpl, VmmBackend

    @hookimpl
    def banger_vmm_backends():
        return [VmmBackend(name="mine", description="...", factory=make_driver)]

and registers its module under the ``banger`` entry-point group.
"""

from __future__ import annotations

import pluggy

from banger_hookspecs import specs
from banger_hookspecs.specs import PROJECT_NAME, hookspec
from banger_hookspecs.types import *  # noqa: F403 -- the value objects are the API
from banger_hookspecs.types import __all__ as _types_all

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
ENTRY_POINT_GROUP = "banger"

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl", "hookspec", "specs", *_types_all]
