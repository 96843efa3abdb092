"""The API: what crosses the daemon's socket, shared by the daemon and the SDK.

* :mod:`~banger_core.api.requests`: request bodies (``CreateRequest``, ``ImagePull``, ...),
  checked strictly by :mod:`~banger_core.api.validation`;
* :mod:`~banger_core.api.models`: responses (``VmView``, ``ImageView``, ``RunPlan``, ``DaemonStatus``, ...);
* :mod:`~banger_core.api.events`: the events a long operation streams (``step``, ``spec``, ``result``, ...).

The daemon builds these, the SDK parses them back, and ``--json`` prints them.
Nothing here imports daemon or host code: only pydantic and ``banger_core.common``.
"""
