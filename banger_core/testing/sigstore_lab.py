"""An offline Sigstore instance for tests: a trust root and bundles sigstore-python verifies for real.

:class:`TrustLab` mints what the public-good instance runs as services: a private CA standing in
for Fulcio, a certificate transparency (CT) log key and a Rekor log key, published together in a
``trusted_root.json``. :meth:`TrustLab.sign` then plays the whole signing flow for one artifact:

* an ephemeral P-256 key and a short-lived leaf certificate from the CA, with the code-signing
  EKU, the identity as SAN and the OIDC issuer in Fulcio's extensions (``1.3.6.1.4.1.57264.1.1``,
  raw, and ``.1.8``, a DER UTF8String);
* an SCT embedded in the certificate, signed by the CT key over the precertificate (the leaf's
  TBS without the SCT extension, after the issuer's key hash), as RFC 6962 describes;
* a ``hashedrekord`` 0.0.1 log entry holding the signature and the certificate, with a signed
  entry timestamp (the Rekor key's signature over the RFC 8785 JSON of body, integrated time,
  log id and index) and an inclusion proof in a one-leaf tree whose checkpoint the Rekor key signs;
* a v0.3 bundle (JSON) of all that.

Nothing here talks to a network. The refusal cases come from parameters: another identity or
issuer in :meth:`TrustLab.sign`, a second lab (another root), or a lab whose published root does
not hold the Rekor or CT key it signs with (``trust_log_key=False``, ``trust_ct_key=False``).

Tests get a session-wide lab from the ``trust_lab`` fixture (registered by the repository's
``conftest.py``; elsewhere add ``pytest_plugins = ["banger_core.testing.sigstore_lab"]``)::

    def test_signed_manifest(trust_lab, tmp_path):
        manifest = tmp_path / "manifest.json"
        manifest.write_text("{}")
        bundle = trust_lab.sign_file(manifest)          # manifest.json.sigstore.json
        verify_file(manifest, bundle.read_bytes(), trust_lab.policy())
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from banger_core.trust import SIGNATURE_SUFFIX, SigningPolicy

TEST_IDENTITY = "https://github.com/banger-dev/banger/.github/workflows/release.yml@refs/heads/main"
TEST_ISSUER = "https://token.actions.githubusercontent.com"

_TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"
_OIDC_ISSUER = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_SCT_VERSION_V1 = 0
_SCT_PRECERT_ENTRY = 1
_TLS_HASH_SHA256 = 4
_TLS_SIGNATURE_ECDSA = 3
#: Fulcio's certificates live ten minutes; the lab's do too, from a minute before signing.
_LEAF_LIFETIME = timedelta(minutes=10)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    """RFC 6962's log id: sha256 of the key's DER SubjectPublicKeyInfo (Sigstore's ``logId.keyId``)."""
    return hashlib.sha256(_spki(key)).digest()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _u24(data: bytes) -> bytes:
    return struct.pack("!I", len(data))[1:] + data


def _u16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


class TrustLab:
    """A private Sigstore instance: CA, CT log key and Rekor key, its ``trusted_root.json``, and a signer.

    Args:
        directory: where ``trusted_root.json`` (and :meth:`sign_file`'s default bundles) go; created.
        name: names the lab in its CA subject and log origins (tells two labs apart in failures).
        trust_log_key: ``False`` publishes an unrelated Rekor key in the root: this lab's log entries
            are then signed by a key the root does not trust.
        trust_ct_key: the same for the CT log key (the SCT in each certificate).
    """

    def __init__(
        self, directory: Path, *, name: str = "banger-lab", trust_log_key: bool = True, trust_ct_key: bool = True
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        now = datetime.now(UTC)
        self._ca_key = _new_key()
        self.ca_certificate = self._mint_ca(now)
        self._ct_key = _new_key()
        self._rekor_key = _new_key()
        self._log_index = 0
        published_ct = self._ct_key if trust_ct_key else _new_key()
        published_rekor = self._rekor_key if trust_log_key else _new_key()
        self.trusted_root = directory / "trusted_root.json"
        self.trusted_root.write_text(json.dumps(self._root_document(now, published_ct, published_rekor), indent=2))

    def policy(self, identity: str = TEST_IDENTITY, issuer: str = TEST_ISSUER) -> SigningPolicy:
        """A signing policy for ``identity``/``issuer`` under this lab's root."""
        return SigningPolicy(identity=identity, issuer=issuer, trusted_root=self.trusted_root)

    def sign(
        self,
        data: bytes,
        *,
        identity: str = TEST_IDENTITY,
        issuer: str = TEST_ISSUER,
        log_delay: timedelta = timedelta(0),
        code_signing: bool = True,
    ) -> bytes:
        """A Sigstore bundle (JSON bytes) over ``data``, signed as ``identity`` logged in through ``issuer``.

        ``log_delay`` makes the log record the signature that long after the certificate was issued:
        past the certificate's ten minutes, it stands for a signature made with an expired certificate.
        ``code_signing=False`` leaves the key usage extensions out of the certificate (what Fulcio never does).
        """
        now = datetime.now(UTC).replace(microsecond=0)
        digest = hashlib.sha256(data).digest()
        signing_key = _new_key()
        certificate = self._issue_leaf(signing_key.public_key(), identity, issuer, now, code_signing)
        signature = signing_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        bundle = {
            "mediaType": _BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(certificate.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [self._log_entry(certificate, signature, digest, now + log_delay)],
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                "signature": _b64(signature),
            },
        }
        return json.dumps(bundle, indent=2).encode()

    def sign_file(self, path: Path, **kw: Any) -> Path:
        """Sign ``path``'s bytes; writes the bundle to ``path`` + ``.sigstore.json`` and returns that path.

        Keyword arguments go to :meth:`sign` (``identity``, ``issuer``, ``log_delay``).
        """
        bundle = path.with_name(path.name + SIGNATURE_SUFFIX)
        bundle.write_bytes(self.sign(path.read_bytes(), **kw))
        return bundle

    # -- the instance's services --------------------------------------------------------------

    def _mint_ca(self, now: datetime) -> x509.Certificate:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "banger test lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} CA"),
            ]
        )
        public = self._ca_key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )

    def _root_document(
        self, now: datetime, ct_key: ec.EllipticCurvePrivateKey, rekor_key: ec.EllipticCurvePrivateKey
    ) -> dict[str, Any]:
        ca_der = self.ca_certificate.public_bytes(serialization.Encoding.DER)
        valid_for = {"start": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}

        def log(url: str, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
            public = key.public_key()
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": _b64(_spki(public)), "keyDetails": _KEY_DETAILS, "validFor": valid_for},
                "logId": {"keyId": _b64(_key_id(public))},
            }

        return {
            "mediaType": _TRUSTED_ROOT_MEDIA_TYPE,
            # .invalid (RFC 2606): sigstore builds a Rekor client from the URL but never calls it to verify.
            "tlogs": [log(f"https://rekor.{self.name}.invalid", rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "banger test lab", "commonName": f"{self.name} CA"},
                    "uri": f"https://fulcio.{self.name}.invalid",
                    "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]},
                    "validFor": valid_for,
                }
            ],
            "ctlogs": [log(f"https://ctfe.{self.name}.invalid", ct_key)],
            "timestampAuthorities": [],
        }

    def _issue_leaf(
        self, public: ec.EllipticCurvePublicKey, identity: str, issuer: str, now: datetime, code_signing: bool
    ) -> x509.Certificate:
        """Fulcio's issuance: a precertificate, an SCT for it from the CT log, the final certificate."""
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(identity) if "://" in identity else x509.RFC822Name(identity)
        )
        ca_public = self._ca_key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + _LEAF_LIFETIME)
        )
        if code_signing:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
            # The subject is empty, so the SAN carries the identity and is critical (RFC 5280 4.2.1.6).
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(_OIDC_ISSUER, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(_OIDC_ISSUER_V2, asn1.encode_der(issuer)), critical=False)
        )
        # The CT log signs the precertificate: the TBS without the SCT list, which must therefore be the
        # final certificate's last extension (what `tbs_precertificate_bytes` strips).
        precertificate_tbs = builder.sign(self._ca_key, hashes.SHA256()).tbs_certificate_bytes
        timestamp_ms = int(now.timestamp()) * 1000  # whole seconds: sigstore rebuilds it through a float
        signed = struct.pack(
            "!BBQH", _SCT_VERSION_V1, 0, timestamp_ms, _SCT_PRECERT_ENTRY
        )  # version, signature_type certificate_timestamp, timestamp, entry_type
        signed += _key_id(ca_public) + _u24(precertificate_tbs) + _u16(b"")  # issuer key hash, TBS, no extensions
        sct_signature = self._ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (
            struct.pack("!B", _SCT_VERSION_V1)
            + _key_id(self._ct_key.public_key())
            + struct.pack("!Q", timestamp_ms)
            + _u16(b"")
            + struct.pack("!BB", _TLS_HASH_SHA256, _TLS_SIGNATURE_ECDSA)
            + _u16(sct_signature)
        )
        sct_list = asn1.encode_der(_u16(_u16(sct)))
        certificate = builder.add_extension(x509.UnrecognizedExtension(_SCT_LIST, sct_list), critical=False).sign(
            self._ca_key, hashes.SHA256()
        )
        if certificate.tbs_precertificate_bytes != precertificate_tbs:
            raise AssertionError("the lab's SCT does not cover the certificate's precertificate TBS")
        return certificate

    def _log_entry(
        self, certificate: x509.Certificate, signature: bytes, digest: bytes, logged: datetime
    ) -> dict[str, Any]:
        """Rekor's answer for a hashedrekord upload: the entry, its signed timestamp, its inclusion proof."""
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                    "signature": {"content": _b64(signature), "publicKey": {"content": _b64(pem)}},
                },
            }
        )
        rekor_public = self._rekor_key.public_key()
        log_id = _key_id(rekor_public)
        log_index = self._log_index
        self._log_index += 1
        integrated_time = int(logged.timestamp())
        promise = rfc8785.dumps(
            {"body": _b64(body), "integratedTime": integrated_time, "logID": log_id.hex(), "logIndex": log_index}
        )
        # Each entry is alone in a tree of its own (one leaf: the root is the leaf hash, the proof empty).
        root_hash = hashlib.sha256(b"\x00" + body).digest()
        origin = f"{self.name}-rekor"
        note = f"{origin} - {log_index}\n1\n{_b64(root_hash)}\n"
        note_signature = self._rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = f"{note}\n\u2014 {origin} {_b64(log_id[:4] + note_signature)}\n"
        return {
            "logIndex": str(log_index),
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {
                "signedEntryTimestamp": _b64(self._rekor_key.sign(promise, ec.ECDSA(hashes.SHA256())))
            },
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(root_hash),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }


@pytest.fixture(scope="session")
def trust_lab(tmp_path_factory: pytest.TempPathFactory) -> TrustLab:
    """One :class:`TrustLab` for the test session: its root trusts its own log and CT keys."""
    return TrustLab(tmp_path_factory.mktemp("trust-lab"))
