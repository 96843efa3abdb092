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

from banger_debootstrap import build, mirrors
from banger_debootstrap.fsutil import remove_tree
from banger_debootstrap.recipe import NAME_RE, Plan, RecipeError, find_recipe, load_recipe, parse_ref, recipe_dirs
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
        """True if ``ref`` names a recipe (options are checked by :meth:`pull`)."""
        try:
            name, _ = parse_ref(ref)
        except RecipeError:
            return False
        return find_recipe(name, self.dirs) is not None

    def available(self) -> list[ImageListing]:
        """Every recipe in the recipe directories (first one wins on a name clash)."""
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
        return list(listings.values())

    def plan(self, ref: str) -> Plan:
        """The build plan for ``ref``.

        Raises:
            RecipeError: unknown image, unknown option, or an invalid recipe.
        """
        name, choices = parse_ref(ref)
        recipe_dir = find_recipe(name, self.dirs)
        if recipe_dir is None:
            raise RecipeError(f"no recipe named {name!r} in {', '.join(map(str, self.dirs)) or 'any recipe directory'}")
        return load_recipe(recipe_dir).plan(choices)

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

    def _prune_superseded(self, ref: str, keep: str, progress: Progress) -> None:
        """Drop cached builds of ``ref`` made from older recipes (~600 MB each).

        Images already pulled are hard links into the store and keep their data.
        """
        for entry in (self.cache_dir / "images").iterdir():
            if entry.name == keep:
                continue
            try:
                name = json.loads((entry / MANIFEST).read_text()).get("name")
            except (OSError, ValueError, AttributeError):
                continue
            if name != ref:
                continue
            with _locked(self.cache_dir / "locks" / f"{entry.name}.lock"):
                remove_tree(entry)
            progress.log(f"removed the cached build {entry.name[:12]} of an older {ref} recipe")

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
                self._prune_superseded(plan.ref, keep=recipe_hash, progress=progress)
            else:
                progress.log(f"using cached build {recipe_hash[:12]} from {manifest.get('built')}")
            progress.step(f"placing {ROOTFS}")
            place(entry / ROOTFS, dest / ROOTFS)
            shutil.copyfile(entry / MANIFEST, dest / MANIFEST)
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
