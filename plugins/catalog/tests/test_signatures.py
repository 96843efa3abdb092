"""Signed bundles from local catalogs: real sigstore-python verification under the test lab's trust root.

The lab (``trust_lab``) mints a private Fulcio CA, CT log key and Rekor key and
signs like the release workflow; banger is pointed at its root with
``sigstore_trusted_root``, as a fork would be. Bundles here are ``file:`` URLs
(HTTP is in tests/integration/test_catalog_http.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from banger_catalog import plugin
from banger_catalog.catalog import EMBEDDED, SigningPolicy, load_catalog, parse_catalog
from banger_catalog.drivers import CatalogImageSource, CatalogKernelProvider
from banger_catalog.errors import BundleError, CatalogError
from banger_core.common.errors import ConfigError
from banger_core.testing import RecordingProgress, make_plugin_context
from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from banger_hookspecs import CheckResult, PluginContext, SignatureRefused, SourceUnavailable
from plugins.catalog.tests.entries import catalog_entry

pytestmark = pytest.mark.unit

SIGNER = {"identity": TEST_IDENTITY, "issuer": TEST_ISSUER}
OTHER_IDENTITY = "https://github.com/someone-else/banger/.github/workflows/release.yml@refs/heads/main"


def _context(
    banger_env: dict[str, str],
    tmp_path: Path,
    lab: TrustLab,
    *entries: dict[str, Any],
    signing: dict[str, str] | None = SIGNER,
    **config: object,
) -> PluginContext:
    catalog = tmp_path / "catalog.json"
    document: dict[str, Any] = {"format": 1, "entries": list(entries)}
    if signing is not None:
        document["signing"] = signing
    catalog.write_text(json.dumps(document))
    return make_plugin_context(
        banger_env,
        {"catalog_url": str(catalog), "sigstore_trusted_root": str(lab.trusted_root), **config},
    )


def _dest(tmp_path: Path) -> Path:
    dest = tmp_path / "dest"
    dest.mkdir()
    return dest


def _refused(ctx: PluginContext, dest: Path, *matches: str) -> str:
    with pytest.raises(BundleError) as info:
        CatalogImageSource(ctx).pull("test-image", dest, RecordingProgress())
    message = str(info.value)
    assert not isinstance(info.value, SourceUnavailable), "a bad signature must not fall back silently"
    assert "\n" not in message
    assert message.startswith("catalog image test-image: test-image.tar.zst: signature refused: ")
    assert message.endswith("test-image.tar.zst was unpacked or kept")
    for match in matches:
        assert match in message, message
    assert list(dest.iterdir()) == [], "nothing may be unpacked"
    return message


# -- accepted ----------------------------------------------------------------------------------------------------


def test_signed_image_is_checked_then_unpacked(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    trust_lab.sign_file(bundle)
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "image", "test-image"))
    progress = RecordingProgress()

    artifact = CatalogImageSource(ctx).pull("test-image", _dest(tmp_path), progress)

    assert artifact.rootfs.read_bytes() == craft.image_files["rootfs.ext4"]
    assert artifact.metadata["signed_by"] == TEST_IDENTITY
    checked = f"checking the signature of catalog image test-image ({TEST_IDENTITY})"
    assert progress.steps.index(checked) < progress.steps.index("unpacking catalog image test-image")
    assert not any("warning" in step for step in progress.steps)


def test_signed_kernel_is_accepted(banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path) -> None:
    bundle = craft.good("kernel", name="k.tar.zst")
    trust_lab.sign_file(bundle)
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "kernel", "generic-6.1"))
    artifact = CatalogKernelProvider(ctx).pull("generic-6.1", _dest(tmp_path), RecordingProgress())
    assert artifact.vmlinux.read_bytes() == craft.kernel_files["vmlinux"]
    assert artifact.metadata["signed_by"] == TEST_IDENTITY


def test_an_entry_policy_wins_over_the_catalog_policy(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    trust_lab.sign_file(bundle, identity=OTHER_IDENTITY)
    entry = catalog_entry(bundle, "image", "test-image", signing={"identity": OTHER_IDENTITY, "issuer": TEST_ISSUER})
    ctx = _context(banger_env, tmp_path, trust_lab, entry)
    artifact = CatalogImageSource(ctx).pull("test-image", _dest(tmp_path), RecordingProgress())
    assert artifact.metadata["signed_by"] == OTHER_IDENTITY


# -- refused: mis-signed (BundleError, nothing unpacked) -----------------------------------------------------------


def test_signature_by_another_identity_is_refused(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    trust_lab.sign_file(bundle, identity=OTHER_IDENTITY)
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "image", "test-image"))
    _refused(ctx, _dest(tmp_path), OTHER_IDENTITY)
    assert bundle.exists(), "the user's own file is never deleted"


def test_signature_from_another_trust_root_is_refused(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    TrustLab(tmp_path / "other-lab").sign_file(bundle)  # same identity and issuer, a CA banger does not trust
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "image", "test-image"))
    _refused(ctx, _dest(tmp_path), str(trust_lab.trusted_root))


def test_signature_over_other_bytes_is_refused(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    trust_lab.sign_file(bundle)
    tampered = craft.good("image", name="test-image.tar.zst", version="2025.2")  # the catalog lists these bytes
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(tampered, "image", "test-image"))
    _refused(ctx, _dest(tmp_path))


def test_garbage_signature_is_refused(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    (tmp_path / "test-image.tar.zst.sigstore.json").write_text("<html>not found</html>")
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "image", "test-image"))
    _refused(ctx, _dest(tmp_path))


# -- refused: unsigned (SourceUnavailable: the core falls back to a local build) ----------------------------------


def test_unsigned_bundle_is_unavailable(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "image", "test-image"))
    dest = _dest(tmp_path)
    with pytest.raises(SourceUnavailable) as info:
        CatalogImageSource(ctx).pull("test-image", dest, RecordingProgress())
    assert str(info.value) == (
        f"catalog image test-image is not signed: no signature at {bundle.as_uri()}.sigstore.json; ask the "
        "catalog's publisher to sign it (scripts/publish_catalog.py --sign-with sigstore), or accept this "
        "catalog's unsigned bundles with catalog_allow_unsigned"
    )
    assert list(dest.iterdir()) == []


def test_a_catalog_naming_no_signer_is_unavailable(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    trust_lab.sign_file(bundle)  # signed, but nobody says by whom it must be
    ctx = _context(banger_env, tmp_path, trust_lab, catalog_entry(bundle, "image", "test-image"), signing=None)
    with pytest.raises(SourceUnavailable, match='names no signer for it \\(no "signing" policy\\)') as info:
        CatalogImageSource(ctx).pull("test-image", _dest(tmp_path), RecordingProgress())
    assert "\n" not in str(info.value)


# -- opting out ------------------------------------------------------------------------------------------------------


def test_opted_out_catalog_accepts_unsigned_with_a_warning(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    catalog_url = str(tmp_path / "catalog.json")
    ctx = _context(
        banger_env,
        tmp_path,
        trust_lab,
        catalog_entry(bundle, "image", "test-image"),
        signing=None,
        catalog_allow_unsigned=[catalog_url],
    )
    progress = RecordingProgress()
    artifact = CatalogImageSource(ctx).pull("test-image", _dest(tmp_path), progress)
    assert artifact.rootfs.read_bytes() == craft.image_files["rootfs.ext4"]
    assert artifact.metadata["signed_by"] is None
    warnings = [step for step in progress.steps if step.startswith("warning: ")]
    assert warnings == [
        f"warning: catalog image test-image: signature not checked, catalog_allow_unsigned lists catalog "
        f"{catalog_url}; anyone who can change that catalog or its bundles chooses what your VMs boot"
    ]


def test_opting_out_another_catalog_changes_nothing(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    entry = catalog_entry(bundle, "image", "test-image")
    ctx = _context(banger_env, tmp_path, trust_lab, entry, catalog_allow_unsigned=["https://example.org/c.json"])
    with pytest.raises(SourceUnavailable, match="is not signed"):
        CatalogImageSource(ctx).pull("test-image", _dest(tmp_path), RecordingProgress())


def test_doctor_row_says_whether_signatures_are_checked(banger_env: dict[str, str], tmp_path: Path) -> None:
    def rows(**config: object) -> list[CheckResult]:
        (check,) = plugin.banger_doctor_checks()
        return list(check.run(make_plugin_context(banger_env, config)))

    catalog_url = str(tmp_path / "catalog.json")
    assert rows() == [
        CheckResult(
            "catalog-signatures", "ok", "bundles from the embedded catalog must carry a valid Sigstore signature"
        )
    ]
    assert rows(catalog_url=catalog_url, catalog_allow_unsigned=[catalog_url]) == [
        CheckResult(
            "catalog-signatures",
            "warn",
            f"signature checks are off for catalog {catalog_url} (catalog_allow_unsigned): its bundles are "
            "unpacked unsigned",
            hint="remove it from catalog_allow_unsigned once its publisher signs the bundles",
        )
    ]
    assert rows(catalog_url=catalog_url, catalog_allow_unsigned=["/elsewhere.json"])[0].status == "ok"


# -- the policy in catalog.json ------------------------------------------------------------------------------------


def test_embedded_catalog_names_the_release_workflow_as_signer() -> None:
    release = SigningPolicy(
        "https://github.com/banger-dev/banger/.github/workflows/release.yml@refs/heads/main",
        "https://token.actions.githubusercontent.com",
    )
    catalog = load_catalog(None)
    assert catalog.location == EMBEDDED
    assert {entry.signing for entry in catalog.entries} == {release}


@pytest.mark.parametrize(
    ("signing", "match"),
    [
        ("release.yml", "'signing' that is not an object"),
        ({"issuer": TEST_ISSUER}, "invalid signing identity None"),
        ({"identity": "", "issuer": TEST_ISSUER}, "invalid signing identity ''"),
        ({"identity": "a b", "issuer": TEST_ISSUER}, "invalid signing identity 'a b'"),
        ({"identity": TEST_IDENTITY, "issuer": "http://issuer.example"}, "not an https:// URL"),
        ({"identity": TEST_IDENTITY, "issuer": "x" * 1025}, "invalid signing issuer"),
    ],
)
def test_malformed_signing_policy_is_refused(signing: object, match: str) -> None:
    for document in (
        {"format": 1, "signing": signing, "entries": []},
        {"format": 1, "entries": [{"name": "x", "kind": "kernel", "url": "https://h/x", "signing": signing}]},
    ):
        with pytest.raises(CatalogError, match=match) as info:
            parse_catalog(json.dumps(document).encode(), "catalog test", base=None)
        assert "\n" not in str(info.value)


def test_signature_url_is_beside_the_bundle() -> None:
    raw = json.dumps(
        {"format": 1, "entries": [{"name": "k", "kind": "kernel", "url": "https://h.example/r/k.tar.zst"}]}
    ).encode()
    (entry,) = parse_catalog(raw, "catalog test", base=None).entries
    assert entry.signature_url == "https://h.example/r/k.tar.zst.sigstore.json"
    assert entry.signing is None


def test_a_context_built_outside_the_core_refuses_to_vouch(tmp_path: Path, plugin_context: PluginContext) -> None:
    bare = PluginContext(
        config={},
        state_dir=tmp_path,
        cache_dir=tmp_path,
        runtime_dir=tmp_path,
        host_ops=plugin_context.host_ops,
        logger=plugin_context.logger,
        owner_uid=0,
        owner_gid=0,
        host=plugin_context.host,
    )
    with pytest.raises(SignatureRefused, match="can be checked only by banger's core"):
        bare.verify_signature(tmp_path, b"{}", identity=TEST_IDENTITY, issuer=TEST_ISSUER)


def test_a_trusted_root_that_is_not_a_file_fails_the_pull_and_keeps_nothing(
    banger_env: dict[str, str], craft: Any, trust_lab: TrustLab, tmp_path: Path
) -> None:
    bundle = craft.good("image", name="test-image.tar.zst")
    trust_lab.sign_file(bundle)
    ctx = _context(
        banger_env,
        tmp_path,
        trust_lab,
        catalog_entry(bundle, "image", "test-image"),
        sigstore_trusted_root=str(tmp_path / "missing-root.json"),
    )
    dest = _dest(tmp_path)
    with pytest.raises(ConfigError, match=r"missing-root\.json does not exist") as info:
        CatalogImageSource(ctx).pull("test-image", dest, RecordingProgress())
    assert "\n" not in str(info.value)
    assert list(dest.iterdir()) == []
    assert list((ctx.cache_dir / "plugins" / "catalog" / "downloads").iterdir()) == []
