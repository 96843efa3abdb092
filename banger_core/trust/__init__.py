"""Sigstore verification for what banger downloads and then runs or boots (releases, catalog bundles).

A signature for a file ``F`` is published beside it as ``F.sigstore.json`` (a Sigstore bundle).
Verification is offline: banger pins the trusted root (:data:`PINNED_TRUSTED_ROOT`) unless a
policy names another one (``sigstore_trusted_root`` in config, for forks and tests).

Example::

    from banger_core.trust import SigningPolicy, SignatureRefused, verify_file

    policy = SigningPolicy(
        identity="https://github.com/banger-dev/banger/.github/workflows/release.yml@refs/heads/main",
        issuer="https://token.actions.githubusercontent.com",
        trusted_root=policy_root_from_config(config),
    )
    verify_file(path, bundle_bytes, policy)   # raises SignatureRefused (one line) or returns

The trust model, step by step: docs/updating.md, "Trust model".
"""

from __future__ import annotations

from banger_core.common.errors import SignatureRefused
from banger_core.trust.policy import (
    PINNED_TRUSTED_ROOT,
    SIGNATURE_SUFFIX,
    TRUSTED_ROOT_KEY,
    SigningPolicy,
    policy_root_from_config,
)
from banger_core.trust.verify import MAX_BUNDLE_BYTES, verify_bytes, verify_file

__all__ = [
    "MAX_BUNDLE_BYTES",
    "PINNED_TRUSTED_ROOT",
    "SIGNATURE_SUFFIX",
    "TRUSTED_ROOT_KEY",
    "SignatureRefused",
    "SigningPolicy",
    "policy_root_from_config",
    "verify_bytes",
    "verify_file",
]
