"""banger_core.trust: sigstore-python's real verification path against the offline TrustLab, no network.

Each refusal is one line naming the failed check; the good case is accepted by the same code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from banger_core.common.config import load_config
from banger_core.common.errors import ConfigError
from banger_core.common.plugins import get_plugin_manager
from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from banger_core.trust import (
    MAX_BUNDLE_BYTES,
    PINNED_TRUSTED_ROOT,
    SignatureRefused,
    SigningPolicy,
    policy_root_from_config,
    verify_bytes,
    verify_file,
)

DATA = b'{"schema": 1, "name": "banger", "version": "v0.2.0"}\n'


def refusal(call: Callable[[], None]) -> str:
    """The one line ``call`` is refused with."""
    with pytest.raises(SignatureRefused) as caught:
        call()
    line = str(caught.value)
    assert "\n" not in line and len(line) < 600, line
    return line


def edited(bundle: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(bundle)
    edit(document)
    return json.dumps(document).encode()


def entry(document: dict[str, Any]) -> dict[str, Any]:
    tlog_entry: dict[str, Any] = document["verificationMaterial"]["tlogEntries"][0]
    return tlog_entry


@pytest.fixture(scope="module")
def signed(trust_lab: TrustLab) -> bytes:
    return trust_lab.sign(DATA)


# -- accepted ------------------------------------------------------------------------------------


def test_a_good_signature_is_accepted(trust_lab: TrustLab, signed: bytes) -> None:
    verify_bytes(DATA, signed, trust_lab.policy())


def test_a_signed_file_is_verified_in_chunks(trust_lab: TrustLab, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "banger-v0.2.0-wheelhouse.tar"
    wheelhouse.write_bytes(bytes(range(256)) * (12 * 1024))  # 3 MiB: several read chunks
    bundle = trust_lab.sign_file(wheelhouse)
    assert bundle == tmp_path / "banger-v0.2.0-wheelhouse.tar.sigstore.json"
    verify_file(wheelhouse, bundle.read_bytes(), trust_lab.policy())


def test_an_email_identity_is_matched_too(trust_lab: TrustLab) -> None:
    bundle = trust_lab.sign(DATA, identity="release@banger.dev", issuer="https://accounts.google.com")
    verify_bytes(DATA, bundle, trust_lab.policy("release@banger.dev", "https://accounts.google.com"))


# -- the artifact ----------------------------------------------------------------------------------


def test_a_tampered_file_is_refused_as_a_digest_mismatch(trust_lab: TrustLab, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(DATA)
    bundle = trust_lab.sign_file(manifest).read_bytes()
    manifest.write_bytes(DATA.replace(b"v0.2.0", b"v0.2.1"))
    line = refusal(lambda: verify_file(manifest, bundle, trust_lab.policy()))
    assert line.startswith("manifest.json: signature refused: artifact digest mismatch: its sha256 is ")
    assert "download both again" in line


def test_a_tampered_file_with_the_bundle_digest_rewritten_fails_the_signature(
    trust_lab: TrustLab, signed: bytes
) -> None:
    forged = DATA.replace(b"v0.2.0", b"v9.9.9")

    def rewrite_digest(document: dict[str, Any]) -> None:
        document["messageSignature"]["messageDigest"]["digest"] = base64.b64encode(
            hashlib.sha256(forged).digest()
        ).decode()

    line = refusal(lambda: verify_bytes(forged, edited(signed, rewrite_digest), trust_lab.policy(), subject="manifest"))
    assert line.startswith("manifest: signature refused: artifact signature mismatch: ")


def test_an_unreadable_file_is_refused(trust_lab: TrustLab, tmp_path: Path, signed: bytes) -> None:
    line = refusal(lambda: verify_file(tmp_path / "gone.tar", signed, trust_lab.policy()))
    assert line == f"gone.tar: cannot read {tmp_path / 'gone.tar'} to check its signature: No such file or directory"


# -- the bundle ------------------------------------------------------------------------------------


def test_a_signature_swapped_in_from_another_bundle_is_inconsistent_with_the_log(
    trust_lab: TrustLab, signed: bytes
) -> None:
    other = json.loads(trust_lab.sign(DATA))

    def swap(document: dict[str, Any]) -> None:
        document["verificationMaterial"]["certificate"] = other["verificationMaterial"]["certificate"]
        document["messageSignature"] = other["messageSignature"]

    line = refusal(lambda: verify_bytes(DATA, edited(signed, swap), trust_lab.policy()))
    assert "signature refused: the bundle's log entry records another signature or file than the bundle" in line


def test_an_altered_log_entry_fails_its_inclusion_proof(trust_lab: TrustLab, signed: bytes) -> None:
    def alter(document: dict[str, Any]) -> None:
        body = json.loads(base64.b64decode(entry(document)["canonicalizedBody"]))
        body["spec"]["data"]["hash"]["value"] = "0" * 64
        entry(document)["canonicalizedBody"] = base64.b64encode(json.dumps(body).encode()).decode()

    line = refusal(lambda: verify_bytes(DATA, edited(signed, alter), trust_lab.policy()))
    assert "signature refused: its transparency log entry is not proven by a Rekor log key of the trusted root" in line
    assert "(inclusion proof contains invalid root hash)" in line


def test_an_altered_log_time_fails_the_signed_entry_timestamp(trust_lab: TrustLab, signed: bytes) -> None:
    def later(document: dict[str, Any]) -> None:
        entry(document)["integratedTime"] = str(int(entry(document)["integratedTime"]) + 1)

    line = refusal(lambda: verify_bytes(DATA, edited(signed, later), trust_lab.policy()))
    assert "its transparency log entry is not proven by a Rekor log key" in line
    assert "(SET: invalid inclusion promise: keyring: invalid signature)" in line


def test_a_bundle_without_signed_time_is_refused(trust_lab: TrustLab, signed: bytes) -> None:
    def drop_promise(document: dict[str, Any]) -> None:
        del entry(document)["inclusionPromise"]

    line = refusal(lambda: verify_bytes(DATA, edited(signed, drop_promise), trust_lab.policy()))
    assert "its Sigstore bundle is malformed (bundle must contain an inclusion promise or signed timestamp(s))" in line


def test_a_signature_logged_after_the_certificate_expired_is_refused(trust_lab: TrustLab) -> None:
    bundle = trust_lab.sign(DATA, log_delay=timedelta(minutes=20))
    line = refusal(lambda: verify_bytes(DATA, bundle, trust_lab.policy()))
    assert "signature refused: the signing certificate was not valid when the log recorded the signature" in line


def test_a_certificate_sigstore_cannot_read_is_refused_not_a_traceback(trust_lab: TrustLab) -> None:
    bundle = trust_lab.sign(DATA, code_signing=False)  # no key usage: sigstore's lookup raises outside its errors
    line = refusal(lambda: verify_bytes(DATA, bundle, trust_lab.policy()))
    assert "signature refused: the bundle's certificate or log entry is unusable (No <class" in line
    assert line.endswith("it was not made by a Sigstore signer; do not use this file")


@pytest.mark.parametrize(
    "bundle",
    [
        b"",
        b"{",
        b"[]",
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}',
        b"\xff\xfe not json",
    ],
    ids=["empty", "truncated", "a-list", "no-material", "not-utf8"],
)
def test_a_malformed_bundle_is_refused(trust_lab: TrustLab, bundle: bytes) -> None:
    line = refusal(lambda: verify_bytes(DATA, bundle, trust_lab.policy(), subject="manifest.json"))
    assert line.startswith("manifest.json: signature refused: its Sigstore bundle is malformed (")
    assert line.endswith("download it again; if it stays so, the publisher must re-sign the file")


def test_a_bundle_with_a_garbage_certificate_is_refused(trust_lab: TrustLab, signed: bytes) -> None:
    def garbage(document: dict[str, Any]) -> None:
        document["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(b"not DER").decode()

    line = refusal(lambda: verify_bytes(DATA, edited(signed, garbage), trust_lab.policy()))
    assert "its Sigstore bundle is malformed" in line


def _leaves(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path into a JSON document (its containers' too)."""
    found = [path] if path else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += _leaves(child, (*path, key))
    return found


CORRUPTIONS: list[Any] = [None, 0, -1, 2**70, "", "x", [], {}, True, "!!not base64!!", "Z2FyYmFnZQ==", "MAMCAQE="]


def test_every_single_field_corruption_of_a_bundle_is_refused_in_one_line(trust_lab: TrustLab, signed: bytes) -> None:
    """Each field replaced by a wrong type, garbage, garbage base64 or DER: a refusal line, never a traceback.

    The one change that verifies is dropping the optional message digest: the signature itself is over the
    digest, and the log entry records it.
    """
    original = json.loads(signed)
    accepted = []
    for path in _leaves(original):
        for corruption in CORRUPTIONS:
            document = json.loads(signed)
            parent = document
            for key in path[:-1]:
                parent = parent[key]
            if parent[path[-1]] == corruption:
                continue
            parent[path[-1]] = corruption
            try:
                verify_bytes(DATA, json.dumps(document).encode(), trust_lab.policy())
            except SignatureRefused as exc:
                assert "\n" not in str(exc)
            else:
                accepted.append((path, corruption))
    assert accepted == [(("messageSignature", "messageDigest"), None)]


def test_an_oversized_bundle_is_refused_before_parsing(trust_lab: TrustLab, signed: bytes) -> None:
    huge = signed + b" " * MAX_BUNDLE_BYTES
    line = refusal(lambda: verify_bytes(DATA, huge, trust_lab.policy()))
    assert f"its Sigstore bundle is malformed ({len(huge)} bytes, more than {MAX_BUNDLE_BYTES})" in line


# -- who signed ------------------------------------------------------------------------------------


def test_another_identity_is_refused(trust_lab: TrustLab) -> None:
    fork = "https://github.com/someone/banger/.github/workflows/release.yml@refs/heads/main"
    line = refusal(lambda: verify_bytes(DATA, trust_lab.sign(DATA, identity=fork), trust_lab.policy()))
    assert line.startswith(f"the signed data: signature refused: signed by identity {fork!r}, ")
    assert f"the policy requires {TEST_IDENTITY!r}" in line


def test_an_identity_is_matched_exactly_not_as_a_prefix(trust_lab: TrustLab) -> None:
    longer = TEST_IDENTITY + "-evil"
    line = refusal(lambda: verify_bytes(DATA, trust_lab.sign(DATA, identity=longer), trust_lab.policy()))
    assert f"signed by identity {longer!r}" in line


def test_another_issuer_is_refused(trust_lab: TrustLab) -> None:
    line = refusal(
        lambda: verify_bytes(DATA, trust_lab.sign(DATA, issuer="https://accounts.google.com"), trust_lab.policy())
    )
    assert "signed through OIDC issuer 'https://accounts.google.com', " in line
    assert f"the policy requires {TEST_ISSUER!r}" in line


def test_a_bundle_from_another_root_is_refused(trust_lab: TrustLab, tmp_path: Path) -> None:
    stranger = TrustLab(tmp_path / "stranger", name="stranger")
    line = refusal(lambda: verify_bytes(DATA, stranger.sign(DATA), trust_lab.policy()))
    assert (
        "signature refused: the signing certificate does not chain to a certificate authority of "
        f"the trusted root {trust_lab.trusted_root} at the time it was logged" in line
    )
    assert "point sigstore_trusted_root at its trusted_root.json" in line


def test_a_log_key_missing_from_the_root_is_refused(tmp_path: Path) -> None:
    lab = TrustLab(tmp_path / "lab", trust_log_key=False)
    line = refusal(lambda: verify_bytes(DATA, lab.sign(DATA), lab.policy()))
    assert f"its transparency log entry is not proven by a Rekor log key of the trusted root {lab.trusted_root}" in line


def test_a_ct_key_missing_from_the_root_is_refused(tmp_path: Path) -> None:
    lab = TrustLab(tmp_path / "lab", trust_ct_key=False)
    line = refusal(lambda: verify_bytes(DATA, lab.sign(DATA), lab.policy()))
    assert (
        "the signing certificate's timestamp (SCT) is not signed by a certificate transparency log of "
        f"the trusted root {lab.trusted_root}" in line
    )


# -- the trusted root ------------------------------------------------------------------------------


def test_the_pinned_public_good_root_loads_and_refuses_a_lab_bundle(signed: bytes) -> None:
    from sigstore.models import TrustedRoot

    # A change of what banger trusts is deliberate: this digest, docs/updating.md and policy.py change with it.
    pinned_digest = "6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66"
    assert hashlib.sha256(PINNED_TRUSTED_ROOT.read_bytes()).hexdigest() == pinned_digest
    pinned = TrustedRoot.from_file(str(PINNED_TRUSTED_ROOT))
    assert any(cert.subject.rfc4514_string() == "CN=sigstore,O=sigstore.dev" for cert in pinned.get_fulcio_certs())
    production_rekor = base64.b64decode("wNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0=")
    assert production_rekor in {log.log_id.key_id for log in pinned._inner.tlogs}

    line = refusal(lambda: verify_bytes(DATA, signed, SigningPolicy(TEST_IDENTITY, TEST_ISSUER)))
    assert "does not chain to a certificate authority of banger's pinned Sigstore public-good root" in line


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: Path("relative/trusted_root.json"), "is not an absolute path: give the full path of a Sigstore"),
        (lambda d: d / "missing.json", "does not exist: point it at a Sigstore trusted_root.json"),
        (lambda d: d, "is not a regular file: point it at a Sigstore trusted_root.json"),
        (
            lambda d: (d / "bad.json").write_text("{}") and d / "bad.json",
            "is not a usable Sigstore trusted_root.json (mediaType: Field required)",
        ),
        (
            lambda d: (d / "bin.json").write_bytes(b"\x00\xff") and d / "bin.json",
            "is not a usable Sigstore trusted_root.json (Invalid JSON: expected value at line 1 column 1)",
        ),
    ],
    ids=["relative", "missing", "a-directory", "not-a-root", "binary"],
)
def test_an_unusable_trusted_root_refuses_with_the_fix(
    tmp_path: Path, signed: bytes, make: Callable[[Path], Path], expected: str
) -> None:
    root = make(tmp_path)
    line = refusal(lambda: verify_bytes(DATA, signed, SigningPolicy(TEST_IDENTITY, TEST_ISSUER, root)))
    assert line.startswith(f"cannot verify signatures: trusted root {root} ")
    assert expected in line and line.endswith("fix sigstore_trusted_root (or remove it to use banger's pinned root)")


@pytest.mark.parametrize("emptied", ["ctlogs", "tlogs", "certificateAuthorities"])
def test_a_root_without_logs_or_authorities_is_an_unusable_root_not_a_bad_bundle(
    trust_lab: TrustLab, tmp_path: Path, signed: bytes, emptied: str
) -> None:
    document = json.loads(trust_lab.trusted_root.read_text())
    document[emptied] = []
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(document))
    line = refusal(lambda: verify_bytes(DATA, signed, SigningPolicy(TEST_IDENTITY, TEST_ISSUER, root)))
    assert line.startswith(
        f"cannot verify signatures: trusted root {root} is not a usable Sigstore trusted_root.json ("
    )
    assert line.endswith("fix sigstore_trusted_root (or remove it to use banger's pinned root)")


def test_a_policy_needs_an_identity_and_an_issuer() -> None:
    with pytest.raises(ValueError, match="needs both an identity and an issuer"):
        SigningPolicy(identity="", issuer=TEST_ISSUER)
    with pytest.raises(ValueError, match="needs both an identity and an issuer"):
        SigningPolicy(identity=TEST_IDENTITY, issuer=" ")


# -- configuration ---------------------------------------------------------------------------------


def test_the_trusted_root_comes_from_config(banger_env: dict[str, str], trust_lab: TrustLab) -> None:
    config_file = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    assert policy_root_from_config(load_config(get_plugin_manager(banger_env), banger_env)) is None

    config_file.write_text(f'sigstore_trusted_root = "{trust_lab.trusted_root}"\n')
    config = load_config(get_plugin_manager(banger_env), banger_env)
    assert policy_root_from_config(config) == trust_lab.trusted_root

    config_file.write_text('sigstore_trusted_root = "trusted_root.json"\n')
    with pytest.raises(ConfigError, match="sigstore_trusted_root"):
        load_config(get_plugin_manager(banger_env), banger_env)


def test_a_configured_root_that_is_not_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        policy_root_from_config({"sigstore_trusted_root": tmp_path / "nope.json"})
    assert str(caught.value) == (
        f"sigstore_trusted_root {tmp_path / 'nope.json'} does not exist: point it at a Sigstore trusted_root.json, "
        "or remove the key to use banger's pinned root"
    )


def test_importing_the_trust_api_does_not_import_sigstore() -> None:
    probe = "import sys, banger_core.trust; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sigstore'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
