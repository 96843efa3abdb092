"""Verify a Sigstore bundle over a file or bytes with sigstore-python, as one refusal line or nothing.

sigstore is imported inside the functions: the CLI's start-up path imports this package's
names (cheap) but pays for sigstore (pydantic, cryptography, requests) only when it verifies.

The order of checks is sigstore-python's ``Verifier.verify_artifact``: bundle parse, a signed time
(the Rekor inclusion promise), the certificate chain to a CA of the trusted root at that time, the
certificate's SCT by a CT log key of the root, code-signing usage, the policy (issuer, then
identity), the log entry (inclusion proof, signed checkpoint and promise by a Rekor key of the
root), the certificate's validity at the logged time, the artifact's digest and signature, and
the log entry's consistency with them. Each failure becomes one :class:`SignatureRefused` line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from banger_core.common.errors import SignatureRefused
from banger_core.trust.policy import PINNED_TRUSTED_ROOT, SigningPolicy, check_trusted_root_path

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

#: Far above a real bundle (a certificate, a signature, one log entry: under 10 KiB); a bigger one
#: is refused before parsing, since it comes from the same host as the artifact.
MAX_BUNDLE_BYTES = 1 << 20
_READ_CHUNK = 1 << 20
_SHOWN_CHARS = 160

_OIDC_ISSUER_OID = "1.3.6.1.4.1.57264.1.1"


class _PolicyMismatch(Exception):
    """The certificate is fine but names another signer; carries the finished refusal text.

    Raised from inside sigstore's verification (which calls the policy without wrapping what it
    raises), so the identity and issuer lines need no parsing of sigstore's messages.
    """


def verify_bytes(data: bytes, bundle: bytes, policy: SigningPolicy, *, subject: str = "the signed data") -> None:
    """Accept ``data`` if ``bundle`` (Sigstore bundle JSON) proves ``policy``'s signer signed exactly it.

    ``subject`` names the data in the refusal line (``manifest.json``).

    Raises:
        SignatureRefused: one line naming the check that failed and the fix.
    """
    _verify_digest(hashlib.sha256(data).digest(), bundle, policy, subject)


def verify_file(path: Path, bundle: bytes, policy: SigningPolicy, *, subject: str | None = None) -> None:
    """Like :func:`verify_bytes` for the file at ``path``, read in chunks (a wheelhouse need not fit in memory).

    ``subject`` defaults to the file's name.

    Raises:
        SignatureRefused: one line naming the check that failed and the fix (also when ``path`` is unreadable).
    """
    subject = subject or path.name
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_READ_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise SignatureRefused(f"{subject}: cannot read {path} to check its signature: {exc.strerror}") from None
    _verify_digest(digest.digest(), bundle, policy, subject)


def _verify_digest(digest: bytes, bundle_json: bytes, policy: SigningPolicy, subject: str) -> None:
    from cryptography.x509 import ExtensionNotFound
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import VerificationError
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    verifier = _load_verifier(policy)
    bundle = _parse_bundle(bundle_json, subject)
    refused = f"{subject}: signature refused:"
    try:
        verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest), bundle, _Policy(policy))
    except _PolicyMismatch as exc:
        raise SignatureRefused(f"{refused} {exc}") from None
    except VerificationError as exc:
        raise SignatureRefused(f"{refused} {_explain(exc, digest, bundle, policy)}") from None
    except (SigstoreError, ExtensionNotFound, ValueError, TypeError) as exc:
        # A hostile bundle can make sigstore fail outside its own error type (a certificate without
        # the extensions it reads, a non-EC key): any failure is a refusal, never a traceback.
        raise SignatureRefused(
            f"{refused} the bundle's certificate or log entry is unusable ({_one_line(exc)}): "
            "it was not made by a Sigstore signer; do not use this file"
        ) from None


def _load_verifier(policy: SigningPolicy) -> Verifier:
    from sigstore._internal.trust import KeyringPurpose
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    path = policy.trusted_root or PINNED_TRUSTED_ROOT
    fix = "fix sigstore_trusted_root (or remove it to use banger's pinned root)"
    try:
        check_trusted_root_path(path, where="trusted root")
    except ValueError as exc:
        raise SignatureRefused(f"cannot verify signatures: {exc}; {fix}") from None
    try:
        root = TrustedRoot.from_file(str(path))
        verifier = Verifier(trusted_root=root)  # needs a Rekor log and a CA
        # The CT keys are only looked up mid-verification, where a root without them would pass for a bad bundle.
        root.ct_keyring(KeyringPurpose.VERIFY)
        return verifier
    except (OSError, ValueError, SigstoreError) as exc:
        unusable = f"trusted root {path} is not a usable Sigstore trusted_root.json ({_one_line(exc)})"
        raise SignatureRefused(f"cannot verify signatures: {unusable}: {fix}") from None


def _parse_bundle(bundle_json: bytes, subject: str) -> Bundle:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    malformed = f"{subject}: signature refused: its Sigstore bundle is malformed"
    fix = "download it again; if it stays so, the publisher must re-sign the file"
    if len(bundle_json) > MAX_BUNDLE_BYTES:
        raise SignatureRefused(f"{malformed} ({len(bundle_json)} bytes, more than {MAX_BUNDLE_BYTES}): {fix}")
    try:
        return Bundle.from_json(bundle_json)
    except (SigstoreError, ValueError, TypeError) as exc:
        raise SignatureRefused(f"{malformed} ({_one_line(exc)}): {fix}") from None


class _Policy:
    """sigstore's ``Identity`` policy, issuer checked first, each mismatch reported with what was found."""

    def __init__(self, policy: SigningPolicy) -> None:
        self.policy = policy

    def verify(self, cert: Certificate) -> None:
        from cryptography.x509 import ExtensionNotFound
        from sigstore.errors import VerificationError
        from sigstore.verify.policy import Identity, OIDCIssuer

        wanted = self.policy
        try:
            OIDCIssuer(wanted.issuer).verify(cert)
        except VerificationError:
            raise _PolicyMismatch(
                f"signed through OIDC issuer {_shown(_issuer_of(cert))}, the policy requires {wanted.issuer!r}: "
                "the signer logged in elsewhere than the release workflow does; do not use this file "
                "(a fork configures its own issuer)"
            ) from None
        try:
            Identity(identity=wanted.identity, issuer=wanted.issuer).verify(cert)
        except (VerificationError, ExtensionNotFound):
            raise _PolicyMismatch(
                f"signed by identity {_shown(_identities_of(cert))}, the policy requires {wanted.identity!r}: "
                "someone else signed this file; do not use it (a fork configures its own identity)"
            ) from None


def _explain(exc: Exception, digest: bytes, bundle: Bundle, policy: SigningPolicy) -> str:
    """One refusal line for a sigstore ``VerificationError``, by the step that raised it.

    sigstore-python has one error type for every step, so the step is told by its message
    (pinned to sigstore 4.x; every branch has a test in tests/unit/test_trust.py).
    """
    message = str(exc.args[0]) if exc.args else ""
    root = policy.root_description()
    if message.startswith("failed to build timestamp certificate chain") and "not valid at validation time" in message:
        return (
            "the signing certificate was not valid when the log recorded the signature (Sigstore certificates "
            "live minutes): it was used expired or before its time; the publisher must re-sign"
        )
    if message.startswith("failed to build timestamp certificate chain"):
        return (
            f"the signing certificate does not chain to a certificate authority of {root} at the time it was "
            "logged: it was issued by another Sigstore instance (or forged); if you trust that instance, "
            "point sigstore_trusted_root at its trusted_root.json"
        )
    if message.startswith("failed to verify SCT"):
        return (
            f"the signing certificate's timestamp (SCT) is not signed by a certificate transparency log of {root}: "
            "the certificate was never logged where banger looks; do not use this file"
        )
    if message.startswith("invalid log entry"):
        # sigstore appends the whole proof after "expected": the step's name is what helps.
        step = message.removeprefix("invalid log entry: ").split(": expected", 1)[0]
        return (
            f"its transparency log entry is not proven by a Rekor log key of {root} ({_short(step)}): "
            "the signature was not recorded in a log banger trusts; do not use this file"
        )
    if message == "Bundle message digest mismatch":
        signed = bundle._inner.message_signature.message_digest.digest.hex()  # type: ignore[union-attr]
        return (
            f"artifact digest mismatch: its sha256 is {digest.hex()}, the signature is for {signed}: "
            "the file was altered or the signature belongs to another file; download both again"
        )
    if message == "Signature is invalid for input":
        return (
            f"artifact signature mismatch: the signature does not match the file's sha256 {digest.hex()}: "
            "the file or its bundle was altered; download both again"
        )
    if message.startswith("transparency log entry is inconsistent"):
        return (
            "the bundle's log entry records another signature or file than the bundle carries: "
            "the bundle was altered; download it again"
        )
    return f"Sigstore verification failed ({_one_line(exc)}): do not use this file"


def _issuer_of(cert: Certificate) -> str:
    from cryptography.x509 import ExtensionNotFound, ObjectIdentifier, UnrecognizedExtension

    try:
        value = cert.extensions.get_extension_for_oid(ObjectIdentifier(_OIDC_ISSUER_OID)).value
    except ExtensionNotFound:
        return "(none)"
    return value.value.decode(errors="replace") if isinstance(value, UnrecognizedExtension) else "(unreadable)"


def _identities_of(cert: Certificate) -> str:
    from cryptography.x509 import ExtensionNotFound, RFC822Name, SubjectAlternativeName, UniformResourceIdentifier

    try:
        names = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    except ExtensionNotFound:
        return "(none)"
    found = [*names.get_values_for_type(UniformResourceIdentifier), *names.get_values_for_type(RFC822Name)]
    return ", ".join(found) or "(none)"


def _shown(value: str) -> str:
    """A value from a certificate (hostile text) as a short single-line repr."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _one_line(exc: BaseException) -> str:
    """An exception's text on one short line: sigstore and pydantic messages span several.

    A pydantic validation error (sigstore wraps it) is told by its first problem: where and what.
    """
    from pydantic import ValidationError

    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, ValidationError):
            first = cause.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return _short(f"{where + ': ' if where else ''}{first['msg']}")
    return _short(str(exc) or type(exc).__name__)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
