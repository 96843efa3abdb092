#!/usr/bin/env python3
"""Add or update catalog.json entries for bundles that are about to be uploaded.

Each bundle is verified in full (manifest, every member's size and sha256)
before its entry is written, so a broken bundle never gets published. The
entry's ``url`` is ``BASE_URL/<bundle file name>``; ``sha256`` and ``size`` are
the bundle file's own. Existing entries of the same kind and name are replaced
(keeping their description unless ``--description`` gives a new one); others
are kept. The catalog is rewritten atomically.

Usage (at release time, before uploading the bundles to the release)::

    scripts/publish_catalog.py \\
        --base-url https://github.com/banger-dev/banger/releases/download/v0.1.0 \\
        dist/debian-bookworm.tar.zst dist/debian-bookworm-docker.tar.zst dist/generic-6.1.tar.zst

Every bundle is signed with Sigstore, its signature uploaded beside it as
``<bundle>.sigstore.json`` (readers refuse unsigned bundles). The catalog's
top-level ``signing`` policy says who signs: ``--signing-identity`` and
``--signing-issuer`` set it (the embedded catalog already names the release
workflow). The script lists the files to sign; ``--sign-with sigstore`` signs
them itself with ``python -m sigstore sign --bundle FILE.sigstore.json FILE``
(in CI: the workflow's ambient OIDC identity, which must be the policy's),
before the catalog is written, so a failed signing leaves the catalog as it was::

    scripts/publish_catalog.py --base-url ... --sign-with sigstore dist/*.tar.zst
    # uploads: dist/NAME.tar.zst and dist/NAME.tar.zst.sigstore.json for each bundle

Or publish through an OCI registry instead (``--registry REGISTRY/NAMESPACE
--tag TAG``): each verified bundle is pushed as banger's OCI artifact to
``REGISTRY/NAMESPACE/<name>:TAG`` (credentials from the Docker-style
``config.json``, as for pulls) and its entry's ``url`` becomes
``oci://REGISTRY/NAMESPACE/<name>@sha256:<manifest digest>``, pinned. The
catalog itself is then pushed too, as a catalog artifact, to
``REGISTRY/NAMESPACE/banger-catalog:TAG``, and its pinned reference printed: put
``catalog_url = "oci://REGISTRY/NAMESPACE/banger-catalog@sha256:..."`` in
config.toml and nothing but the registry is needed to share the images.

Default catalog: the embedded ``plugins/catalog/src/banger_catalog/catalog.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from banger_catalog.catalog import (
    CATALOG_ARTIFACT_TYPE,
    CATALOG_FORMAT,
    CATALOG_MEDIA_TYPE,
    SIGNATURE_SUFFIX,
    parse_catalog,
)
from banger_catalog.errors import BundleError, CatalogError
from banger_core.common.progress import NullProgress
from banger_hookspecs import SourceUnavailable
from banger_hookspecs.bundle import BundleManifest
from banger_hookspecs.bundle_reader import extract_bundle, read_manifest
from banger_oci.auth import default_auth_file, find_credentials
from banger_oci.push import publish_bundle, publish_document
from banger_oci.reference import OciError, parse_reference

EMBEDDED_CATALOG = Path(__file__).resolve().parent.parent / "plugins/catalog/src/banger_catalog/catalog.json"
#: Repository (under ``--registry``) the catalog itself is pushed to; no bundle may take this name.
CATALOG_REPOSITORY = "banger-catalog"


def verified_manifest(bundle: Path) -> BundleManifest:
    """Check ``bundle`` completely (what every pull checks) and return its manifest."""
    label = f"bundle {bundle}"
    manifest = read_manifest(bundle, label)
    extract_bundle(bundle, manifest.kind, None, NullProgress(), label)
    return manifest


def bundle_entry(bundle: Path, base_url: str, description: str | None) -> dict[str, Any]:
    """Verify ``bundle`` and return its catalog entry (``description`` may be filled in later)."""
    manifest = verified_manifest(bundle)
    digest = hashlib.sha256()
    with open(bundle, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    entry: dict[str, Any] = {
        "name": manifest.name,
        "kind": manifest.kind,
        "description": description or manifest.metadata.get("description"),
        "url": f"{base_url.rstrip('/')}/{quote(bundle.name)}",
        "sha256": digest.hexdigest(),
        "size": bundle.stat().st_size,
    }
    if manifest.kind == "image":
        entry["kernel_ref"] = manifest.kernel_ref
    return entry


def registry_entry(bundle: Path, namespace: str, tag: str, description: str | None) -> dict[str, Any]:
    """Verify ``bundle``, push it to ``NAMESPACE/<name>:TAG`` as banger's OCI artifact, return its pinned entry."""
    manifest = verified_manifest(bundle)
    target = f"{namespace.rstrip('/')}/{manifest.name}:{tag}"
    credentials = find_credentials(parse_reference(target).registry, default_auth_file())
    published = publish_bundle(bundle, manifest, target, credentials, NullProgress())
    entry: dict[str, Any] = {
        "name": manifest.name,
        "kind": manifest.kind,
        "description": description or manifest.metadata.get("description"),
        "url": f"oci://{published.reference}",
    }
    if manifest.kind == "image":
        entry["kernel_ref"] = manifest.kernel_ref
    return entry


def registry_catalog(path: Path, namespace: str, tag: str) -> str:
    """Push the catalog at ``path`` to ``NAMESPACE/banger-catalog:TAG``; return its pinned ``oci://`` reference.

    A catalog read from a registry has no location to resolve relative entry URLs against:
    such a catalog is refused here, before anything is pushed, as every reader would refuse it.
    """
    raw = path.read_bytes()
    target = f"{namespace.rstrip('/')}/{CATALOG_REPOSITORY}:{tag}"
    parse_catalog(raw, f"catalog {path} (to be pushed to {target})", base=None)
    credentials = find_credentials(parse_reference(target).registry, default_auth_file())
    published = publish_document(raw, CATALOG_ARTIFACT_TYPE, CATALOG_MEDIA_TYPE, target, credentials, NullProgress())
    return f"oci://{published.reference}"


def update_catalog(catalog: dict[str, Any], entry: dict[str, Any]) -> str:
    """Put ``entry`` into ``catalog`` (replacing one of the same kind and name); return ``added``/``updated``."""
    for index, old in enumerate(catalog["entries"]):
        if old.get("kind") == entry["kind"] and old.get("name") == entry["name"]:
            if not entry["description"]:
                entry["description"] = old.get("description", "")
            catalog["entries"][index] = entry
            return "updated"
    if not entry["description"]:
        raise SystemExit(f"{entry['kind']} {entry['name']} is new: give --description {entry['name']}=TEXT")
    catalog["entries"].append(entry)
    return "added"


def signature_of(bundle: Path) -> Path:
    """Where the Sigstore bundle of ``bundle`` goes: beside it, uploaded with it."""
    return bundle.with_name(bundle.name + SIGNATURE_SUFFIX)


def sign_with_sigstore(bundle: Path) -> Path:
    """Sign ``bundle`` with sigstore-python's CLI (ambient OIDC identity in CI, a browser flow elsewhere)."""
    signature = signature_of(bundle)
    argv = [sys.executable, "-m", "sigstore", "sign", "--overwrite", "--bundle", str(signature), str(bundle)]
    result = subprocess.run(argv, check=False)
    if result.returncode != 0 or not signature.is_file():
        raise SigningFailed(f"sigstore could not sign {bundle} (exit status {result.returncode}): see its output above")
    return signature


class SigningFailed(Exception):
    """``python -m sigstore sign`` failed; the message says for which bundle."""


def catalog_text(path: Path, catalog: dict[str, Any]) -> str:
    """``catalog`` as the text to write to ``path``; raises ``CatalogError`` for what readers would refuse."""
    text = json.dumps(catalog, indent=2) + "\n"
    parse_catalog(text.encode(), f"catalog {path}", base=path.resolve().as_uri())
    return text


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` (from :func:`catalog_text`) to ``path`` via a temp file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle files (.tar.zst) to list")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--base-url", help="URL the bundles will be downloadable under")
    where.add_argument(
        "--registry", metavar="REGISTRY/NAMESPACE", help="push the bundles there as OCI artifacts (needs --tag)"
    )
    parser.add_argument("--tag", help="tag of the pushed artifacts (with --registry)")
    parser.add_argument("--signing-identity", help="the catalog's signer: the signing certificate's identity")
    parser.add_argument("--signing-issuer", help="the catalog's signer: the OIDC issuer of that identity")
    parser.add_argument(
        "--sign-with",
        choices=["sigstore"],
        help="sign each bundle (BUNDLE.sigstore.json beside it) with `python -m sigstore sign`",
    )
    parser.add_argument("--catalog", type=Path, default=EMBEDDED_CATALOG, help="catalog.json to update")
    parser.add_argument(
        "--description", action="append", default=[], metavar="NAME=TEXT", help="one-line description for NAME"
    )
    args = parser.parse_args(argv)

    if args.registry is not None and not args.tag:
        parser.error("--registry needs --tag TAG (the tag each bundle is pushed under)")
    if args.registry is not None and args.sign_with is not None:
        parser.error("--sign-with signs bundles published with --base-url; a registry entry is pinned by digest")
    if (args.signing_identity is None) != (args.signing_issuer is None):
        parser.error("give --signing-identity and --signing-issuer together")
    if args.base_url is not None and (
        urlsplit(args.base_url).scheme not in ("https", "http") or not urlsplit(args.base_url).hostname
    ):
        parser.error(f"--base-url {args.base_url!r} must be an http(s) URL")
    descriptions = dict(item.split("=", 1) for item in args.description if "=" in item)
    if len(descriptions) != len(args.description):
        parser.error("--description takes NAME=TEXT")

    if args.catalog.exists():
        raw = args.catalog.read_bytes()
        try:
            parse_catalog(raw, f"catalog {args.catalog}", base=args.catalog.resolve().as_uri())
        except CatalogError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        catalog = json.loads(raw)
    else:
        catalog = {"format": CATALOG_FORMAT, "entries": []}
    if args.signing_identity is not None:
        catalog["signing"] = {"identity": args.signing_identity, "issuer": args.signing_issuer}

    for bundle in args.bundles:
        try:
            if args.registry is not None:
                if read_manifest(bundle, f"bundle {bundle}").name == CATALOG_REPOSITORY:
                    print(f"error: {bundle}: the name {CATALOG_REPOSITORY!r} is the catalog's own", file=sys.stderr)
                    return 1
                entry = registry_entry(bundle, args.registry, args.tag, None)
            else:
                entry = bundle_entry(bundle, args.base_url, None)
        except (BundleError, OSError, OciError, SourceUnavailable) as exc:  # OciError: the registry refused
            print(f"error: {exc}", file=sys.stderr)
            return 1
        entry["description"] = descriptions.get(entry["name"]) or entry["description"]
        action = update_catalog(catalog, entry)
        pinned = entry["url"] if args.registry is not None else f"{entry['size']} bytes, sha256 {entry['sha256']}"
        print(f"{action} {entry['kind']} {entry['name']}: {pinned}")
    try:
        text = catalog_text(args.catalog, catalog)  # never write what readers refuse
    except CatalogError as exc:  # e.g. a --signing-issuer that is not an https:// URL
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Signed before the catalog is written: it never lists a bundle whose signing failed.
    if args.base_url is not None and sign_or_list(args.bundles, catalog, args.sign_with) != 0:
        return 1
    write_atomically(args.catalog, text)
    print(f"wrote {args.catalog}")
    if args.registry is not None:
        try:
            pinned_catalog = registry_catalog(args.catalog, args.registry, args.tag)
        except (CatalogError, OciError, SourceUnavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f'pushed the catalog: catalog_url = "{pinned_catalog}"')
    return 0


def sign_or_list(bundles: list[Path], catalog: dict[str, Any], sign_with: str | None) -> int:
    """Sign each bundle (``--sign-with``) or list the files to sign; returns the exit status (1: signing failed)."""
    signing = catalog.get("signing")
    if signing is None:
        print(
            "warning: the catalog has no signing policy (--signing-identity/--signing-issuer): readers refuse "
            "its bundles unless they set catalog_allow_unsigned",
            file=sys.stderr,
        )
    else:
        print(f"signer: {signing['identity']} (issuer {signing['issuer']})")
    for bundle in bundles:
        if sign_with is None:
            print(f"to sign: {bundle} -> {signature_of(bundle)}")
            continue
        try:
            print(f"signed: {bundle} -> {sign_with_sigstore(bundle)}")
        except SigningFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
