"""Session API models: ``/v1/vms/{name}/sessions`` (see :mod:`banger_core.daemon.sessions`)."""

from __future__ import annotations

from typing import Literal

from banger_core.api.models import ApiModel
from banger_core.api.validation import ApiRequest


class SessionStart(ApiRequest):
    """``POST /v1/vms/{name}/sessions``."""

    name: str
    argv: list[str]
    cwd: str | None = None
    stdin_mode: Literal["pipe", "none"] = "pipe"


class SessionView(ApiModel):
    """One session of a VM."""

    name: str
    vm: str
    argv: list[str]
    cwd: str | None
    stdin_mode: Literal["pipe", "none"]
    state: Literal["running", "exited", "lost"]
    status: int | None
    created_at: str
    stdout_bytes: int
    stderr_bytes: int
    lost_bytes: int


class AttachTarget(ApiModel):
    """``POST /v1/vms/{name}/sessions/{session}/attach``: the Unix socket bridging to the session."""

    socket: str
