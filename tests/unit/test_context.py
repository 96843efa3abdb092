"""Plugin contexts: only the daemon gets privileged host ops."""

from __future__ import annotations

import os

import pytest

from banger_core.cli.app import App
from banger_core.common.context import UnprivilegedHostOps
from banger_core.common.errors import NotPrivileged


def test_the_cli_never_gets_privileged_host_ops(banger_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Even run by root, the CLI's context refuses bridge/tap/NAT work: that belongs to the daemon.

    geteuid is faked so the test means the same under any user; nothing here touches netlink.
    """
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    ctx = App(banger_env).plugin_context()
    assert isinstance(ctx.host_ops, UnprivilegedHostOps)
    with pytest.raises(NotPrivileged, match=r"^creating bridge banger0 needs root: run the daemon as root"):
        ctx.host_ops.ensure_bridge("banger0", "172.16.0.1/24")
