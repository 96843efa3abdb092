"""Who must have signed, and under which root of trust: the inputs of :mod:`banger_core.trust`.

Kept free of sigstore imports: building a policy (the CLI, config validation) costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger_core.common.errors import ConfigError

#: banger's own copy of the Sigstore public-good instance's trusted_root.json (Fulcio CAs, Rekor and
#: CT log keys), shipped in the package: verification never reads sigstore-python's TUF cache and never
#: fetches a root, so what banger trusts changes only with a banger release. Taken from sigstore-python
#: 4.5.1's embedded copy (sha256 6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66).
PINNED_TRUSTED_ROOT = Path(__file__).resolve().parent / "public_good_trusted_root.json"

#: A signature for file ``F`` is published as ``F`` + this suffix: a Sigstore bundle (JSON).
SIGNATURE_SUFFIX = ".sigstore.json"

#: The config key naming another trusted_root.json (a fork's own Sigstore instance, a test lab).
TRUSTED_ROOT_KEY = "sigstore_trusted_root"


@dataclass(frozen=True)
class SigningPolicy:
    """What a signature must prove: the signer's identity and OIDC issuer, under a trusted root.

    Attributes:
        identity: the signing certificate's SAN, matched exactly (a URI such as a GitHub Actions
            workflow ``https://github.com/OWNER/REPO/.github/workflows/release.yml@refs/heads/main``,
            or an email address).
        issuer: the OIDC issuer recorded in the certificate, matched exactly
            (``https://token.actions.githubusercontent.com``).
        trusted_root: a Sigstore ``trusted_root.json``; ``None`` means banger's pinned public-good root
            (:data:`PINNED_TRUSTED_ROOT`).
    """

    identity: str
    issuer: str
    trusted_root: Path | None = None

    def __post_init__(self) -> None:
        if not self.identity.strip() or not self.issuer.strip():
            raise ValueError("a signing policy needs both an identity and an issuer (an empty one would match nothing)")

    def root_description(self) -> str:
        """How error lines name the root: the pinned one, or the configured file."""
        if self.trusted_root is None:
            return "banger's pinned Sigstore public-good root"
        return f"the trusted root {self.trusted_root}"


def check_trusted_root_path(path: Path, *, where: str) -> Path:
    """``path`` if it can be a trusted_root.json (absolute, a regular file), else ``ValueError`` with one line.

    ``where`` names the path's origin in the message (``sigstore_trusted_root``, ``trusted root``).
    """
    if not path.is_absolute():
        raise ValueError(f"{where} {path} is not an absolute path: give the full path of a Sigstore trusted_root.json")
    if not path.is_file():
        state = "does not exist" if not path.exists() else "is not a regular file"
        raise ValueError(f"{where} {path} {state}: point it at a Sigstore trusted_root.json")
    return path


def policy_root_from_config(config: Mapping[str, Any]) -> Path | None:
    """The trusted root configured by ``sigstore_trusted_root``, or ``None`` for banger's pinned root.

    Every verifier (updater, catalog) reads the key through this, so a fork or a test points all of
    them at its own Sigstore instance with one line of config.

    Raises:
        ConfigError: the key names something that is not a regular file (one line, with the fix).
    """
    value = config.get(TRUSTED_ROOT_KEY)
    if value is None:
        return None
    try:
        return check_trusted_root_path(Path(value), where=TRUSTED_ROOT_KEY)
    except ValueError as exc:
        raise ConfigError(f"{exc}, or remove the key to use banger's pinned root") from None
