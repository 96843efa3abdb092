"""Plugin contexts: only the daemon gets privileged host ops; every context checks signatures the core's way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banger_core.cli.app import App
from banger_core.common.context import UnprivilegedHostOps
from banger_core.common.errors import NotPrivileged
from banger_core.common.errors import SignatureRefused as CoreSignatureRefused
from banger_core.testing import make_plugin_context
from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from banger_hookspecs import SignatureRefused


def test_the_cli_never_gets_privileged_host_ops(banger_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Even run by root, the CLI's context refuses bridge/tap/NAT work: that belongs to the daemon.

    geteuid is faked so the test means the same under any user; nothing here touches netlink.
    """
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    ctx = App(banger_env).plugin_context()
    assert isinstance(ctx.host_ops, UnprivilegedHostOps)
    with pytest.raises(NotPrivileged, match=r"^creating bridge banger0 needs root: run the daemon as root"):
        ctx.host_ops.ensure_bridge("banger0", "172.16.0.1/24")


def test_plugins_verify_signatures_through_the_core_under_the_configured_root(
    banger_env: dict[str, str], trust_lab: TrustLab, tmp_path: Path
) -> None:
    """``ctx.verify_signature`` is banger_core.trust's check, its refusal raised as the contract's exception."""
    artifact = tmp_path / "bundle.tar.zst"
    artifact.write_bytes(b"what VMs boot")
    signature = trust_lab.sign_file(artifact).read_bytes()
    ctx = make_plugin_context(banger_env, {"sigstore_trusted_root": str(trust_lab.trusted_root)})

    ctx.verify_signature(artifact, signature, identity=TEST_IDENTITY, issuer=TEST_ISSUER)

    artifact.write_bytes(b"what an attacker wants VMs to boot")
    with pytest.raises(SignatureRefused, match=r"^the bundle: signature refused: artifact digest mismatch") as info:
        ctx.verify_signature(artifact, signature, identity=TEST_IDENTITY, issuer=TEST_ISSUER, subject="the bundle")
    assert not isinstance(info.value, CoreSignatureRefused), "plugins can only catch the contract's exception"
