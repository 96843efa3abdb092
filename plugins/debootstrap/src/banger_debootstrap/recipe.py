"""Golden image recipes: ``<recipes dir>/<name>/recipe.toml`` plus a ``files/`` directory.

A recipe is data: the Debian suite and packages, files to drop in, and
post-install steps from a small closed set of actions. Switches (``[options.X]``)
turn parts on or off; an image reference picks them: ``debian-bookworm``
(defaults), ``debian-bookworm.docker``, ``debian-bookworm.no-lean-boot``
(``.`` joins switches: image names are ``a-z 0-9 . _ -`` in banger). A recipe
may also name a set of switches (``[variants]``: ``debian-bookworm-docker`` is
``debian-bookworm.docker`` under the name the catalog publishes it as).
Programs Debian lacks come from npm packages pinned by version and integrity
(``[[npm_binaries]]``). See docs/images.md for the format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

#: Bump when the build changes in a way that changes images made from the same recipe.
BUILDER_VERSION = 1
SCHEMA = 1
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
OPTION_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|target|timer|mount|path|slice|scope|device|swap)$")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
NPM_PACKAGE_RE = re.compile(r"^(@[a-z0-9][a-z0-9._-]{0,100}/)?[a-z0-9][a-z0-9._-]{0,100}$")
NPM_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,63}$")
VARIANTS = ("minbase", "buildd", "-")
UNIT_ACTIONS = ("mask", "unmask", "enable", "disable")
ACTIONS = (*UNIT_ACTIONS, "remove", "run", "symlink")


class RecipeError(ValueError):
    """A recipe or image reference is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class FileSpec:
    """A file to write into the root filesystem."""

    dest: str
    content: bytes
    mode: int


@dataclass(frozen=True)
class Step:
    """A post-install step; which fields matter depends on ``action``."""

    action: str
    units: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    target: str = ""


@dataclass(frozen=True)
class NpmBinary:
    """One program taken from an npm package's tarball and installed 0755 root:root at ``dest``."""

    package: str
    version: str
    #: The registry's ``dist.integrity`` for this version (``sha512-<base64>``), pinned in the recipe.
    integrity: str
    #: Path of the program inside the tarball, e.g. ``package/bin/mise``.
    member: str
    dest: str

    @property
    def sha512(self) -> str:
        """Hex sha512 the tarball must have (from :attr:`integrity`)."""
        return base64.b64decode(self.integrity.removeprefix("sha512-")).hex()


@dataclass(frozen=True)
class Option:
    """A switch of the recipe."""

    name: str
    default: bool
    description: str
    packages: tuple[str, ...] = ()
    late_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """A recipe with its switches decided: exactly what a build does."""

    name: str
    ref: str
    description: str
    kernel_ref: str | None
    suite: str
    variant: str
    components: tuple[str, ...]
    packages: tuple[str, ...]
    late_packages: tuple[str, ...]
    update_suites: tuple[str, ...]
    files: tuple[FileSpec, ...]
    npm_binaries: tuple[NpmBinary, ...]
    steps: tuple[Step, ...]
    options: Mapping[str, bool]
    headroom_mib: int

    def recipe_hash(self) -> str:
        """sha256 over everything that shapes the image (switch values included)."""
        doc = {
            "builder": BUILDER_VERSION,
            "suite": self.suite,
            "variant": self.variant,
            "components": self.components,
            "packages": sorted(self.packages),
            "late_packages": self.late_packages,
            "update_suites": self.update_suites,
            "files": [(f.dest, f.mode, hashlib.sha256(f.content).hexdigest()) for f in self.files],
            "npm_binaries": [(n.package, n.version, n.integrity, n.member, n.dest) for n in self.npm_binaries],
            "steps": [(s.action, s.units, s.paths, s.argv, s.target) for s in self.steps],
            "headroom_mib": self.headroom_mib,
            "kernel_ref": self.kernel_ref,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated recipe (switches not yet decided)."""

    name: str
    description: str
    kernel_ref: str | None
    suite: str
    variant: str
    components: tuple[str, ...]
    packages: tuple[str, ...]
    late_packages: tuple[str, ...]
    update_suites: tuple[str, ...]
    headroom_mib: int
    options: Mapping[str, Option]
    files: tuple[tuple[FileSpec, str | None], ...]
    npm_binaries: tuple[tuple[NpmBinary, str | None], ...]
    steps: tuple[tuple[Step, str | None], ...]
    #: Named switch sets: ``{"debian-bookworm-docker": {"docker": True}}``.
    variants: Mapping[str, Mapping[str, bool]]
    path: Path = field(compare=False)

    def plan(self, choices: Mapping[str, bool] | None = None, variant: str | None = None) -> Plan:
        """Decide the switches and return the build plan.

        Args:
            choices: switch values that differ from the defaults (or from ``variant``'s).
            variant: a name from ``[variants]``: its switches replace the defaults and
                the plan's reference starts with it.
        """
        values = {name: option.default for name, option in self.options.items()}
        if variant is not None:
            if variant not in self.variants:
                raise RecipeError(f"image {self.name} has no variant {variant!r}")
            values.update(self.variants[variant])
        base = dict(values)
        for name, value in (choices or {}).items():
            if name not in self.options:
                known = ", ".join(self.options) or "none"
                raise RecipeError(f"image {self.name} has no option {name!r}; it has: {known}")
            values[name] = value

        def active(when: str | None) -> bool:
            if when is None:
                return True
            return not values[when[1:]] if when.startswith("!") else values[when]

        packages = list(self.packages)
        late = list(self.late_packages)
        for name, option in self.options.items():
            if values[name]:
                packages += [p for p in option.packages if p not in packages]
                late += [p for p in option.late_packages if p not in late]
        ref = (variant or self.name) + "".join(
            f".{name}" if values[name] else f".no-{name}" for name in sorted(self.options) if values[name] != base[name]
        )
        return Plan(
            name=self.name,
            ref=ref,
            description=self.description,
            kernel_ref=self.kernel_ref,
            suite=self.suite,
            variant=self.variant,
            components=self.components,
            packages=tuple(packages),
            late_packages=tuple(late),
            update_suites=self.update_suites,
            files=tuple(spec for spec, when in self.files if active(when)),
            npm_binaries=tuple(spec for spec, when in self.npm_binaries if active(when)),
            steps=tuple(step for step, when in self.steps if active(when)),
            options=values,
            headroom_mib=self.headroom_mib,
        )


def parse_ref(ref: str) -> tuple[str, dict[str, bool]]:
    """``debian-bookworm.docker.no-lean-boot`` → ``("debian-bookworm", {"docker": True, "lean-boot": False})``."""
    name, *switches = ref.split(".")
    if not NAME_RE.match(name):
        raise RecipeError(f"invalid image name {name!r}: use a-z, 0-9 and '-', starting with a letter")
    choices: dict[str, bool] = {}
    for switch in switches:
        option, value = _switch(switch)
        if option is None or option in choices:
            raise RecipeError(
                f"invalid option {switch!r} in image reference {ref!r}: write NAME.option or NAME.no-option"
            )
        choices[option] = value
    return name, choices


def _switch(switch: str) -> tuple[str | None, bool]:
    """``"docker"`` → ``("docker", True)``, ``"no-docker"`` → ``("docker", False)``; None for a bad name."""
    value = not switch.startswith("no-")
    option = switch if value else switch[3:]
    return (option if OPTION_RE.match(option) else None), value


# --------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------


class _Checker:
    """Field accessors that raise :class:`RecipeError` naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> RecipeError:
        return RecipeError(f"{self.path}: {where}: {message}")

    def get(self, table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                raise self.error(where, f"missing required key {key!r}")
            return default
        value = table[key]
        if kind is int and isinstance(value, bool):
            raise self.error(where, f"{key!r} must be an integer")
        if not isinstance(value, kind):
            raise self.error(where, f"{key!r} must be {kind.__name__}, got {type(value).__name__}")
        return value

    def strings(self, table: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
        values = self.get(table, key, list, where, [])
        for value in values:
            if not isinstance(value, str) or not pattern.match(value):
                raise self.error(where, f"{key!r} has an invalid entry {value!r}")
        return tuple(values)

    def unknown(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise self.error(where, f"unknown key(s) {', '.join(extra)}; allowed: {', '.join(allowed)}")


def guest_path(value: object, check: _Checker, where: str, *, glob: bool = False) -> str:
    """Validate an absolute, normalized path inside the guest (no ``..``)."""
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise check.error(where, f"{value!r} is not an absolute guest path")
    parts = PurePosixPath(value).parts
    if ".." in parts or str(PurePosixPath(value)) != value.rstrip("/") or value == "/":
        raise check.error(where, f"{value!r} must be normalized, not '/', and contain no '..'")
    if not glob and any(ch in value for ch in "*?["):
        raise check.error(where, f"{value!r} may not contain wildcards here")
    return value


def _when(table: Mapping[str, Any], options: Mapping[str, Option], check: _Checker, where: str) -> str | None:
    when: str | None = check.get(table, "when", str, where, None)
    if when is not None and when.lstrip("!") not in options:
        raise check.error(where, f"'when' names unknown option {when.lstrip('!')!r}")
    return when


def _file(table: Mapping[str, Any], files_dir: Path, check: _Checker, where: str) -> FileSpec:
    check.unknown(table, ("dest", "src", "content", "mode", "when"), where)
    dest = guest_path(check.get(table, "dest", str, where), check, where)
    mode_text = check.get(table, "mode", str, where, "0644")
    if not re.match(r"^0?[0-7]{3,4}$", mode_text):
        raise check.error(where, f'mode {mode_text!r} must be octal like "0644"')
    mode = int(mode_text, 8)
    if mode & 0o6000:
        raise check.error(where, "setuid/setgid modes are not allowed")
    if ("src" in table) == ("content" in table):
        raise check.error(where, "give exactly one of 'src' (a file under files/) or 'content'")
    if "content" in table:
        return FileSpec(dest, check.get(table, "content", str, where).encode(), mode)
    src = check.get(table, "src", str, where)
    relative = PurePosixPath(src)
    if relative.is_absolute() or ".." in relative.parts or not src:
        raise check.error(where, f"src {src!r} must be a relative path under files/")
    source = files_dir / relative
    if source.is_symlink() or not source.is_file():
        raise check.error(where, f"src {src!r} is not a regular file under {files_dir}")
    return FileSpec(dest, source.read_bytes(), mode)


def _npm_binary(table: Mapping[str, Any], check: _Checker, where: str) -> NpmBinary:
    check.unknown(table, ("package", "version", "integrity", "member", "dest", "when"), where)
    package = check.get(table, "package", str, where)
    if not NPM_PACKAGE_RE.match(package):
        raise check.error(where, f"package {package!r} is not an npm package name like @scope/name")
    version = check.get(table, "version", str, where)
    if not NPM_VERSION_RE.match(version):
        raise check.error(where, f"version {version!r} must be one exact version like 2026.9.15 (no ranges)")
    integrity = check.get(table, "integrity", str, where)
    try:
        digest = base64.b64decode(integrity.removeprefix("sha512-"), validate=True)
    except binascii.Error:
        digest = b""
    if not integrity.startswith("sha512-") or len(digest) != 64:
        raise check.error(where, f"integrity {integrity!r} must be the registry's sha512 dist.integrity")
    member = check.get(table, "member", str, where)
    relative = PurePosixPath(member)
    if not member or relative.is_absolute() or ".." in relative.parts or str(relative) != member:
        raise check.error(where, f"member {member!r} must be a normalized relative path inside the tarball")
    dest = guest_path(check.get(table, "dest", str, where), check, where)
    return NpmBinary(package, version, integrity, member, dest)


def _variants(
    table: Mapping[str, Any], name: str, options: Mapping[str, Option], check: _Checker
) -> dict[str, dict[str, bool]]:
    variants: dict[str, dict[str, bool]] = {}
    for variant, switches in table.items():
        where = f"[variants] {variant}"
        if not NAME_RE.match(variant) or not variant.startswith(f"{name}-"):
            raise check.error(where, f"a variant's name is '{name}-' plus a-z, 0-9 and '-'")
        if not isinstance(switches, list) or not switches:
            raise check.error(where, 'must be a non-empty list of switches like ["docker", "no-lean-boot"]')
        values: dict[str, bool] = {}
        for switch in switches:
            option, value = _switch(switch) if isinstance(switch, str) else (None, False)
            if option is None or option not in options or option in values:
                raise check.error(where, f"{switch!r} is not a switch of an option of this recipe")
            values[option] = value
        variants[variant] = values
    return variants


def _step(table: Mapping[str, Any], check: _Checker, where: str) -> Step:
    action = check.get(table, "action", str, where)
    if action not in ACTIONS:
        raise check.error(where, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action in UNIT_ACTIONS:
        check.unknown(table, ("action", "units", "when"), where)
        units = check.strings(table, "units", where, UNIT_RE)
        if not units:
            raise check.error(where, f"{action} needs a non-empty 'units' list of unit file names")
        return Step(action, units=units)
    if action == "remove":
        check.unknown(table, ("action", "paths", "when"), where)
        paths = tuple(guest_path(p, check, where, glob=True) for p in check.get(table, "paths", list, where))
        if not paths:
            raise check.error(where, "remove needs a non-empty 'paths' list")
        return Step(action, paths=paths)
    if action == "run":
        check.unknown(table, ("action", "argv", "when"), where)
        argv = check.get(table, "argv", list, where)
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]:
            raise check.error(where, "run needs 'argv', a list of strings naming a program first (no shell)")
        return Step(action, argv=tuple(argv))
    check.unknown(table, ("action", "paths", "target", "when"), where)
    paths = tuple(guest_path(p, check, where) for p in check.get(table, "paths", list, where))
    if not paths:
        raise check.error(where, "symlink needs a non-empty 'paths' list")
    target = check.get(table, "target", str, where)
    if not target or "\0" in target:
        raise check.error(where, "symlink needs a non-empty 'target'")
    return Step(action, paths=paths, target=target)


def load_recipe(recipe_dir: Path) -> Recipe:
    """Parse and validate ``recipe_dir/recipe.toml``.

    Raises:
        RecipeError: the first problem found, naming the file and field.
    """
    path = recipe_dir / "recipe.toml"
    check = _Checker(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    check.unknown(
        data,
        (
            "schema",
            "name",
            "description",
            "kernel_ref",
            "suite",
            "variant",
            "components",
            "packages",
            "late_packages",
            "update_suites",
            "headroom_mib",
            "options",
            "variants",
            "files",
            "npm_binaries",
            "steps",
        ),
        "top level",
    )
    if check.get(data, "schema", int, "top level") != SCHEMA:
        raise check.error("top level", f"schema must be {SCHEMA}")
    name = check.get(data, "name", str, "top level")
    if not NAME_RE.match(name) or name != recipe_dir.name:
        raise check.error("top level", f"name {name!r} must be a-z, 0-9, '-' and equal the directory name")
    suite = check.get(data, "suite", str, "top level")
    if not SUITE_RE.match(suite):
        raise check.error("top level", f"suite {suite!r} is not a Debian suite name")
    variant = check.get(data, "variant", str, "top level", "minbase")
    if variant not in VARIANTS:
        raise check.error("top level", f"variant must be one of {', '.join(VARIANTS)}")
    headroom = check.get(data, "headroom_mib", int, "top level", 64)
    if not 0 <= headroom <= 65536:
        raise check.error("top level", "headroom_mib must be between 0 and 65536")
    kernel_ref = check.get(data, "kernel_ref", str, "top level", None)

    options: dict[str, Option] = {}
    for option_name, table in check.get(data, "options", dict, "top level", {}).items():
        where = f"[options.{option_name}]"
        if not OPTION_RE.match(option_name) or option_name.startswith("no-"):
            raise check.error(where, "option names are a-z, 0-9, '-' and may not start with 'no-'")
        if not isinstance(table, dict):
            raise check.error(where, "must be a table")
        check.unknown(table, ("default", "description", "packages", "late_packages"), where)
        options[option_name] = Option(
            option_name,
            check.get(table, "default", bool, where),
            check.get(table, "description", str, where),
            check.strings(table, "packages", where, PACKAGE_RE),
            check.strings(table, "late_packages", where, PACKAGE_RE),
        )

    files_dir = recipe_dir / "files"
    files = []
    for index, table in enumerate(check.get(data, "files", list, "top level", []), start=1):
        where = f"[[files]] #{index}"
        if not isinstance(table, dict):
            raise check.error(where, "must be a table")
        files.append((_file(table, files_dir, check, where), _when(table, options, check, where)))
    npm_binaries = []
    for index, table in enumerate(check.get(data, "npm_binaries", list, "top level", []), start=1):
        where = f"[[npm_binaries]] #{index}"
        if not isinstance(table, dict):
            raise check.error(where, "must be a table")
        npm_binaries.append((_npm_binary(table, check, where), _when(table, options, check, where)))
    steps = []
    for index, table in enumerate(check.get(data, "steps", list, "top level", []), start=1):
        where = f"[[steps]] #{index}"
        if not isinstance(table, dict):
            raise check.error(where, "must be a table")
        steps.append((_step(table, check, where), _when(table, options, check, where)))

    return Recipe(
        name=name,
        description=check.get(data, "description", str, "top level"),
        kernel_ref=kernel_ref,
        suite=suite,
        variant=variant,
        components=check.strings(data, "components", "top level", SUITE_RE) or ("main",),
        packages=check.strings(data, "packages", "top level", PACKAGE_RE),
        late_packages=check.strings(data, "late_packages", "top level", PACKAGE_RE),
        update_suites=check.strings(data, "update_suites", "top level", SUITE_RE),
        headroom_mib=headroom,
        options=options,
        files=tuple(files),
        npm_binaries=tuple(npm_binaries),
        steps=tuple(steps),
        variants=_variants(check.get(data, "variants", dict, "top level", {}), name, options, check),
        path=recipe_dir,
    )


def recipe_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Directories holding recipes: configured ones, then the packaged or checked-out ``images/golden``."""
    dirs = list(extra)
    here = Path(__file__).resolve()
    packaged = here.parent / "golden"  # a wheel: force-included by pyproject.toml
    # an editable checkout: <repo>/plugins/debootstrap/src/banger_debootstrap/recipe.py
    checkout = here.parents[4] / "images" / "golden" if len(here.parents) > 4 else packaged
    dirs += [d for d in dict.fromkeys((packaged, checkout)) if d.is_dir()]
    return dirs


def find_recipe(name: str, dirs: Sequence[Path]) -> Path | None:
    """The first ``<dir>/<name>`` holding a ``recipe.toml``, or None."""
    if not NAME_RE.match(name):
        return None
    for directory in dirs:
        candidate = directory / name
        if (candidate / "recipe.toml").is_file():
            return candidate
    return None


def find_image(name: str, dirs: Sequence[Path]) -> tuple[Recipe, str | None] | None:
    """The recipe that builds image ``name``, and the variant it names (None for the recipe's own name).

    A recipe named ``name`` wins; otherwise a recipe whose name is a ``-``-prefix of
    ``name`` and lists ``name`` under ``[variants]``.

    Raises:
        RecipeError: the recipe found is invalid.
    """
    if not NAME_RE.match(name):
        return None
    exact = find_recipe(name, dirs)
    if exact is not None:
        return load_recipe(exact), None
    parts = name.split("-")
    for end in range(len(parts) - 1, 0, -1):
        candidate = find_recipe("-".join(parts[:end]), dirs)
        if candidate is not None:
            recipe = load_recipe(candidate)
            if name in recipe.variants:
                return recipe, name
    return None
