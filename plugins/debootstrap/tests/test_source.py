"""The debootstrap image source: claims, cache hits, refusal without root, clean failures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger_core.testing import RecordingProgress, make_plugin_context
from banger_debootstrap import source as source_module
from banger_debootstrap.build import BuildError
from banger_debootstrap.plugin import banger_image_sources
from banger_debootstrap.recipe import RecipeError
from banger_debootstrap.source import DebootstrapSource
from banger_hookspecs import PluginContext, SourceUnavailable


@pytest.fixture
def recipes(tmp_path: Path, kit: SimpleNamespace) -> Path:
    directory = tmp_path / "recipes"
    kit.write_recipe(directory)
    return directory


@pytest.fixture
def context(banger_env: dict[str, str], recipes: Path) -> PluginContext:
    return make_plugin_context(banger_env, {"debootstrap_recipe_dirs": [str(recipes)]})


@pytest.mark.unit
def test_registration() -> None:
    (registered,) = banger_image_sources()
    assert registered.name == "debootstrap"


@pytest.mark.unit
def test_claims_names_that_have_a_recipe(context: PluginContext) -> None:
    source = DebootstrapSource(context)
    assert source.claims("tiny") and source.claims("tiny.extra") and source.claims("debian-bookworm")
    assert not source.claims("alpine") and not source.claims("docker.io/library/debian:12")
    assert not source.claims("../tiny")
    names = {listing.name: listing for listing in source.available()}
    assert {"tiny", "debian-bookworm"} <= set(names)
    assert names["tiny"].source == "debootstrap"


@pytest.mark.unit
def test_unknown_option_is_a_recipe_error(context: PluginContext, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="has no option 'docker'"):
        DebootstrapSource(context).pull("tiny.docker", tmp_path, RecordingProgress())


def seed_cache(source: DebootstrapSource, ref: str) -> tuple[Path, dict[str, object]]:
    plan = source.plan(ref)
    entry = source.cache_dir / "images" / plan.recipe_hash()
    entry.mkdir(parents=True)
    (entry / "rootfs.ext4").write_bytes(b"\0" * 8192)
    manifest = {
        "name": plan.ref,
        "version": "bookworm-test",
        "recipe": plan.name,
        "recipe_hash": plan.recipe_hash(),
        "options": dict(plan.options),
        "size": 8192,
        "sha256": "ab" * 32,
        "kernel_ref": None,
        "built": "2026-01-01T00:00:00Z",
    }
    (entry / "manifest.json").write_text(json.dumps(manifest))
    return entry, manifest


@pytest.mark.unit
def test_cache_hit_is_a_hard_link_and_builds_nothing(
    context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = DebootstrapSource(context)
    entry, manifest = seed_cache(source, "tiny.extra")

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached recipe must not be built again")

    monkeypatch.setattr(source_module.build, "build_image", no_build)
    dest = tmp_path / "dest"
    dest.mkdir()
    progress = RecordingProgress()
    artifact = source.pull("tiny.extra", dest, progress)
    assert artifact.name == "tiny.extra" and artifact.version == "bookworm-test"
    assert artifact.rootfs == dest / "rootfs.ext4" and artifact.size == 8192 and artifact.sha256 == "ab" * 32
    assert artifact.metadata["recipe_hash"] == manifest["recipe_hash"]
    assert os.path.samefile(artifact.rootfs, entry / "rootfs.ext4")
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert any(line.startswith("using cached build") for line in progress.lines)


@pytest.mark.unit
def test_incomplete_cache_entry_is_not_used(context: PluginContext, monkeypatch: pytest.MonkeyPatch) -> None:
    source = DebootstrapSource(context)
    entry, _ = seed_cache(source, "tiny")
    (entry / "rootfs.ext4").write_bytes(b"short")
    assert source.cached(source.plan("tiny")) is None


@pytest.mark.unit
def test_not_root_is_source_unavailable(
    context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module.os, "geteuid", lambda: 1000)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SourceUnavailable, match="needs root"):
        DebootstrapSource(context).pull("tiny", dest, RecordingProgress())
    assert list(dest.iterdir()) == []


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap needs root")
@pytest.mark.skipif(not shutil.which("debootstrap"), reason="debootstrap is not installed")
def test_failed_build_leaves_nothing_behind(banger_env: dict[str, str], recipes: Path, tmp_path: Path) -> None:
    context = make_plugin_context(
        banger_env, {"debootstrap_recipe_dirs": [str(recipes)], "debian_mirror": f"file://{tmp_path}/no-mirror"}
    )
    source = DebootstrapSource(context)
    stale = source.cache_dir / "tmp" / "0123.999999999.dead"  # a crashed build of a process that is gone
    (stale / "work/root/etc").mkdir(parents=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    progress = RecordingProgress()
    with pytest.raises(BuildError, match="debootstrap bookworm from file://"):
        source.pull("tiny", dest, progress)
    assert list(dest.iterdir()) == []
    assert list((source.cache_dir / "tmp").iterdir()) == []
    assert not (source.cache_dir / "images").exists() or list((source.cache_dir / "images").iterdir()) == []
    assert progress.lines, "debootstrap's output is passed on as log lines"


@pytest.mark.unit
def test_a_new_build_prunes_older_builds_of_the_same_image_only(
    context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = DebootstrapSource(context)
    images = source.cache_dir / "images"
    for old_hash, name, extra in (("0" * 64, "tiny", False), ("1" * 64, "tiny.extra", True)):
        (images / old_hash).mkdir(parents=True)
        manifest = {"name": name, "recipe": "tiny", "options": {"extra": extra}}
        (images / old_hash / "manifest.json").write_text(json.dumps(manifest))
        (images / old_hash / "rootfs.ext4").write_bytes(b"old")
    plan = source.plan("tiny")

    def fake_build(plan_: object, entry: Path, progress: object) -> None:
        seed_cache(source, "tiny")

    monkeypatch.setattr(source, "_build", fake_build)
    dest = tmp_path / "dest"
    dest.mkdir()
    progress = RecordingProgress()
    source.pull("tiny", dest, progress)
    assert sorted(p.name for p in images.iterdir()) == sorted([plan.recipe_hash(), "1" * 64])
    assert any("older tiny recipe" in line for line in progress.lines)

    # The variant that means tiny.extra replaces the older tiny.extra build: same recipe, same switches.
    monkeypatch.setattr(source, "_build", lambda *args: seed_cache(source, "tiny-extra"))
    (tmp_path / "dest2").mkdir()
    source.pull("tiny-extra", tmp_path / "dest2", RecordingProgress())
    assert sorted(p.name for p in images.iterdir()) == sorted(
        [plan.recipe_hash(), source.plan("tiny-extra").recipe_hash()]
    )


@pytest.mark.unit
def test_variant_name_is_claimed_and_built_as_its_switches(
    context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = DebootstrapSource(context)
    assert source.claims("tiny-extra") and source.claims("tiny-extra.no-extra")
    assert not source.claims("tiny-other") and not source.claims("tiny-")
    variant = source.plan("tiny-extra")
    assert variant.ref == "tiny-extra" and variant.options == {"extra": True}
    assert variant.recipe_hash() == source.plan("tiny.extra").recipe_hash()  # one build serves both names
    assert source.plan("tiny-extra.no-extra").ref == "tiny-extra.no-extra"
    listings = {listing.name: listing.description for listing in source.available()}
    assert listings["tiny-extra"] == "a tiny image (extra)"
    assert {"debian-bookworm", "debian-bookworm-docker"} <= set(listings)

    # A build cached under the other name is reused; the artifact and manifest carry the name asked for.
    entry, _ = seed_cache(source, "tiny.extra")
    monkeypatch.setattr(source, "_build", lambda *args: pytest.fail("the cached build must be reused"))
    dest = tmp_path / "dest"
    dest.mkdir()
    artifact = source.pull("tiny-extra", dest, RecordingProgress())
    assert artifact.name == "tiny-extra" and os.path.samefile(artifact.rootfs, entry / "rootfs.ext4")
    assert json.loads((dest / "manifest.json").read_text())["name"] == "tiny-extra"


@pytest.mark.unit
def test_golden_docker_variant_resolves_to_the_docker_option(banger_env: dict[str, str]) -> None:
    source = DebootstrapSource(make_plugin_context(banger_env, {}))
    assert source.claims("debian-bookworm-docker")
    plan = source.plan("debian-bookworm-docker")
    assert plan.ref == "debian-bookworm-docker" and plan.options == {"lean-boot": True, "docker": True}
    assert "docker.io" in plan.packages and plan.late_packages == ("linux-image-cloud-amd64",)
