"""The ``debootstrap`` image source: build a recipe locally, cache it by recipe hash."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from banger_debootstrap import build, mirrors, npm
from banger_debootstrap.fsutil import remove_tree
from banger_debootstrap.recipe import (
    NAME_RE,
    NpmBinary,
    Plan,
    RecipeError,
    find_image,
    load_recipe,
    parse_ref,
    recipe_dirs,
)
from banger_hookspecs import ImageArtifact, ImageListing, PluginContext, Progress, SourceUnavailable

PLUGIN = "debootstrap"
ROOTFS = "rootfs.ext4"
MANIFEST = "manifest.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (two pulls of one recipe build it once)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def place(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (instant), or copy it when linking is impossible."""
    try:
        os.link(src, dest)
    except OSError:  # other filesystem, or protected_hardlinks
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.chmod(0o444)
        os.replace(tmp, dest)


class DebootstrapSource:
    """Image source driver; see :mod:`banger_debootstrap`."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        extra = [Path(os.path.expanduser(str(d))) for d in ctx.config.get("debootstrap_recipe_dirs") or []]
        for directory in extra:
            if not directory.is_absolute():
                ctx.logger.warning("debootstrap_recipe_dirs: ignoring %s: use an absolute path", directory)
        self.dirs = recipe_dirs([d for d in extra if d.is_absolute()])

    # -- lookup -----------------------------------------------------------

    def claims(self, ref: str) -> bool:
        """True if ``ref`` names a recipe or one of its variants (options are checked by :meth:`pull`)."""
        try:
            name, _ = parse_ref(ref)
        except RecipeError:
            return False
        try:
            return find_image(name, self.dirs) is not None
        except RecipeError:
            return True  # a recipe of that name exists but is invalid: pull() says what is wrong

    def available(self) -> list[ImageListing]:
        """Every recipe and variant in the recipe directories (first one wins on a name clash)."""
        listings: dict[str, ImageListing] = {}
        for directory in self.dirs:
            for candidate in sorted(directory.iterdir()):
                if candidate.name in listings or not NAME_RE.match(candidate.name):
                    continue
                if (candidate / "recipe.toml").is_file():
                    try:
                        recipe = load_recipe(candidate)
                    except RecipeError as exc:
                        self.ctx.logger.warning("skipping recipe: %s", exc)
                        continue
                    listings[recipe.name] = ImageListing(recipe.name, recipe.description, PLUGIN)
                    for variant, values in recipe.variants.items():
                        switches = ", ".join(name if on else f"no {name}" for name, on in values.items())
                        listings.setdefault(
                            variant, ImageListing(variant, f"{recipe.description} ({switches})", PLUGIN)
                        )
        return list(listings.values())

    def plan(self, ref: str) -> Plan:
        """The build plan for ``ref``.

        Raises:
            RecipeError: unknown image, unknown option, or an invalid recipe.
        """
        name, choices = parse_ref(ref)
        found = find_image(name, self.dirs)
        if found is None:
            raise RecipeError(f"no recipe named {name!r} in {', '.join(map(str, self.dirs)) or 'any recipe directory'}")
        recipe, variant = found
        return recipe.plan(choices, variant)

    # -- cache ------------------------------------------------------------

    @property
    def cache_dir(self) -> Path:
        return self.ctx.plugin_dir(PLUGIN, cache=True)

    def cached(self, plan: Plan) -> dict[str, Any] | None:
        """The cached manifest for ``plan``, if a complete build is cached."""
        entry = self.cache_dir / "images" / plan.recipe_hash()
        try:
            manifest: dict[str, Any] = json.loads((entry / MANIFEST).read_text())
            if (entry / ROOTFS).stat().st_size == manifest["size"]:
                return manifest
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _prune_superseded(self, plan: Plan, keep: str, progress: Progress) -> None:
        """Drop cached builds of ``plan``'s recipe with the same switches made from older recipes (~600 MB each).

        Builds are matched by recipe and switches, not by name: ``debian-bookworm.docker``
        and ``debian-bookworm-docker`` share one build. Images already pulled are hard
        links into the store and keep their data.
        """
        for entry in (self.cache_dir / "images").iterdir():
            if entry.name == keep:
                continue
            try:
                manifest = json.loads((entry / MANIFEST).read_text())
                same = (manifest.get("recipe"), manifest.get("options")) == (plan.name, dict(plan.options))
            except (OSError, ValueError, AttributeError):
                continue
            if not same:
                continue
            with _locked(self.cache_dir / "locks" / f"{entry.name}.lock"):
                remove_tree(entry)
            progress.log(f"removed the cached build {entry.name[:12]} of an older {plan.ref} recipe")

    def _fetch_npm(self, plan: Plan, progress: Progress) -> dict[NpmBinary, Path]:
        """The verified tarball of each npm binary the plan installs (before debootstrap: fail early)."""
        if not plan.npm_binaries:
            return {}
        registry = npm.registry_url(self.ctx.config.get("npm_registry"))
        progress.step(f"fetching {', '.join(f'{b.package}@{b.version}' for b in plan.npm_binaries)}")
        return {binary: npm.fetch(binary, registry, self.cache_dir / "npm", progress) for binary in plan.npm_binaries}

    def _clean_stale_builds(self, tmp_root: Path) -> None:
        for stale in tmp_root.glob("*.*.*"):
            pid = stale.name.split(".")[1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                remove_tree(stale)

    def _build(self, plan: Plan, entry: Path, progress: Progress) -> None:
        if os.geteuid() != 0:
            raise SourceUnavailable(
                f"building image {plan.ref} with debootstrap needs root: run the pull as root once "
                "(the result is cached), or use an image from the catalog"
            )
        if not Path(build.DEBOOTSTRAP).exists():
            raise SourceUnavailable("debootstrap is not installed: apt-get install debootstrap")
        try:
            mirror = mirrors.find_mirror(plan.suite, plan.components, override=self.ctx.config.get("debian_mirror"))
        except mirrors.MirrorError as exc:
            raise SourceUnavailable(str(exc)) from None
        updates: dict[str, str] = {}
        for suite in plan.update_suites:
            uri = mirrors.find_suite_mirror(suite) or (mirror if suite.endswith("-updates") else None)
            if uri:
                updates[suite] = uri
            else:
                progress.log(f"no apt source on this host serves {suite}: building without its updates")
        tarballs = self._fetch_npm(plan, progress)
        tmp_root = self.cache_dir / "tmp"
        tmp_root.mkdir(mode=0o700, exist_ok=True)
        self._clean_stale_builds(tmp_root)
        scratch = tmp_root / f"{plan.recipe_hash()[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
        (scratch / "out").mkdir(mode=0o700, parents=True)
        (scratch / "work").mkdir(mode=0o700)
        debs = self.cache_dir / "debs"
        debs.mkdir(mode=0o700, exist_ok=True)
        try:
            build.build_image(
                plan,
                scratch / "out",
                scratch / "work",
                mirror=mirror,
                update_mirrors=updates,
                deb_cache=debs,
                progress=progress,
                npm_tarballs=tarballs,
            )
            entry.parent.mkdir(mode=0o700, exist_ok=True)
            remove_tree(entry)  # an incomplete leftover of the same hash
            os.rename(scratch / "out", entry)
        finally:
            remove_tree(scratch)

    # -- pull -------------------------------------------------------------

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Build (or take from the cache) the image for ``ref`` into ``dest``.

        Raises:
            SourceUnavailable: not root, debootstrap or a mirror missing (another source may serve ``ref``).
            RecipeError: bad reference or recipe.
            BuildError: the build failed.
        """
        progress.step(f"resolving recipe for {ref}")
        plan = self.plan(ref)
        recipe_hash = plan.recipe_hash()
        entry = self.cache_dir / "images" / recipe_hash
        with _locked(self.cache_dir / "locks" / f"{recipe_hash}.lock"):
            manifest = self.cached(plan)
            if manifest is None:
                self._build(plan, entry, progress)
                manifest = self.cached(plan)
                if manifest is None:
                    raise build.BuildError(f"the build of {plan.ref} left no usable image in {entry}")
                self._prune_superseded(plan, keep=recipe_hash, progress=progress)
            else:
                progress.log(f"using cached build {recipe_hash[:12]} from {manifest.get('built')}")
            progress.step(f"placing {ROOTFS}")
            place(entry / ROOTFS, dest / ROOTFS)
            # under the name asked for: one build serves `NAME.switch` and the variant that means the same
            (dest / MANIFEST).write_text(json.dumps({**manifest, "name": plan.ref}, indent=2) + "\n")
        return ImageArtifact(
            name=plan.ref,
            version=str(manifest["version"]),
            rootfs=dest / ROOTFS,
            kernel_ref=plan.kernel_ref,
            sha256=str(manifest["sha256"]),
            size=int(manifest["size"]),
            metadata={
                key: manifest[key]
                for key in ("recipe", "recipe_hash", "options", "built", "mirror", "description")
                if key in manifest
            },
        )
