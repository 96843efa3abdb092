"""A banger release as published under ``update_release_url``: the index, the manifest, their layout.

This is the one model of a release: ``banger update`` reads it, ``scripts/release`` writes it.
Layout (docs/updating.md)::

    {base}/index.json                              {"schema": 1, "releases": ["v0.1.0", "v0.2.0"]}
    {base}/{version}/manifest.json                 a Manifest (to_json's exact bytes are what is signed)
    {base}/{version}/manifest.json.sigstore.json   the Sigstore bundle over manifest.json
    {base}/{version}/{artifact name}               e.g. banger-v0.2.0-wheelhouse.tar

Everything here arrives from the network, the index never signed and the manifest parsed
before its contents can be trusted (the signature covers its bytes, not their meaning): parsing
is strict (no unknown, duplicate or mistyped keys, bounded sizes and counts) and every refusal
is one line naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from banger_core.common.errors import BangerError

SCHEMA = 1
NAME = "banger"
INDEX_NAME = "index.json"
MANIFEST_NAME = "manifest.json"
#: A signature for FILE is published beside it as FILE + this suffix (a Sigstore bundle, JSON).
SIGNATURE_SUFFIX = ".sigstore.json"
#: The artifact kind ``banger update`` installs: a tar of top-level ``*.whl`` files only.
WHEELHOUSE = "wheelhouse"

MAX_INDEX_BYTES = 256 * 1024
MAX_MANIFEST_BYTES = 64 * 1024
MAX_RELEASES = 4096
MAX_ARTIFACTS = 16
#: banger, its plugins and every dependency as wheels weigh tens of MiB; 2 GiB bounds a hostile size.
MAX_ARTIFACT_BYTES = 2 * 1024**3

_VERSION = re.compile(r"v(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BUILT_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_PYTHON = re.compile(r"cp3[0-9]{1,2}")
_PLATFORM = re.compile(r"[a-z][a-z0-9_]{0,63}")
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
#: An artifact name is one path component (it is joined to URLs and to the cache directory).
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")

MALFORMED = "the release is malformed: ask its publisher to fix it, or point update_release_url at another"


def _show(value: object) -> str:
    """``value`` for an error line: repr'd, at most 60 characters (hostile input can be long or multi-line)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, order=True)
class Version:
    """A release version ``vMAJOR.MINOR.PATCH``; ordered numerically (v0.10.0 > v0.9.0)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: object, *, what: str = "version") -> Version:
        """``text`` as a version; anything else is one line naming ``what`` and the expected form."""
        match = _VERSION.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise BangerError(f"{what} {_show(text)} is not a release version: use vMAJOR.MINOR.PATCH, e.g. v0.2.0")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    @staticmethod
    def is_release(text: str) -> bool:
        """Whether ``text`` is a release version (a build stamped ``dev`` is not)."""
        return _VERSION.fullmatch(text) is not None

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def manifest_path(version: Version) -> str:
    """The manifest's path below the release URL."""
    return f"{version}/{MANIFEST_NAME}"


def signature_path(version: Version) -> str:
    """The manifest's Sigstore bundle's path below the release URL."""
    return f"{version}/{MANIFEST_NAME}{SIGNATURE_SUFFIX}"


def artifact_path(version: Version, name: str) -> str:
    """An artifact's path below the release URL."""
    return f"{version}/{name}"


def host_python() -> str:
    """This interpreter's wheel tag (``cp311``): a release's compiled wheels only run on it."""
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def host_platform() -> str:
    """This host's platform family (``manylinux_x86_64``): a release's compiled wheels only run on it."""
    libc = "manylinux" if platform.libc_ver()[0] == "glibc" else "musllinux"
    return f"{libc}_{platform.machine().lower()}"


class _Object:
    """One JSON object of a release file, read key by key with the type and form each must have."""

    def __init__(self, value: object, where: str, keys: tuple[str, ...]) -> None:
        self.where = where
        if not isinstance(value, dict):
            self.fail(f"expected a JSON object, got {type(value).__name__}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            self.fail(f"unknown key {_show(unknown[0])} (schema {SCHEMA} has {', '.join(keys)})")
        missing = [key for key in keys if key not in value]
        if missing:
            self.fail(f"key {missing[0]!r} is missing")
        self.data: dict[str, object] = value

    def fail(self, problem: str, fix: str = MALFORMED) -> NoReturn:
        raise BangerError(f"{self.where}: {problem}: {fix}")

    def text(self, key: str, form: re.Pattern[str], example: str) -> str:
        value = self.data[key]
        if not isinstance(value, str) or form.fullmatch(value) is None:
            self.fail(f"{key!r} is {_show(value)}, expected the form {example}")
        return value

    def number(self, key: str, low: int, high: int) -> int:
        value = self.data[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(f"{key!r} is {_show(value)}, expected an integer from {low} to {high}")
        return value

    def items(self, key: str, limit: int) -> list[object]:
        value = self.data[key]
        if not isinstance(value, list) or len(value) > limit:
            self.fail(f"{key!r} must be a list of at most {limit} entries")
        return value

    def version(self, key: str) -> Version:
        try:
            return Version.parse(self.data[key], what=repr(key))
        except BangerError as exc:
            self.fail(str(exc).split(": use ")[0])

    def schema(self) -> None:
        if self.number("schema", 0, 2**31) != SCHEMA:
            self.fail(
                f"schema {self.data['schema']} is not schema {SCHEMA}",
                "this banger cannot read it: install a newer banger by hand (docs/updating.md)",
            )


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json's object hook: a key given twice is refused (two readers could take different values)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {_show(key)} appears twice")
        out[key] = value
    return out


def _constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def load_json(data: bytes, where: str, limit: int) -> object:
    """``data`` parsed as strict JSON (bounded size, no duplicate keys, no NaN); errors are one line."""
    if len(data) > limit:
        raise BangerError(f"{where}: {len(data)} bytes, more than the {limit} a release file may have: {MALFORMED}")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BangerError(f"{where}: not valid JSON ({detail}): {MALFORMED}") from None


def _dump(value: dict[str, object]) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


@dataclass(frozen=True)
class Artifact:
    """One file of a release: its name below ``{base}/{version}/``, what it is, its digest and size."""

    name: str
    kind: str
    sha256: str
    size: int

    KEYS = ("name", "kind", "sha256", "size")

    @classmethod
    def from_object(cls, value: object, where: str) -> Artifact:
        fields = _Object(value, where, cls.KEYS)
        name = fields.text("name", _ARTIFACT_NAME, "banger-v0.2.0-wheelhouse.tar (one file name)")
        if name == MANIFEST_NAME or name.endswith(SIGNATURE_SUFFIX):
            fields.fail(f"artifact name {name!r} is reserved")
        return cls(
            name=name,
            kind=fields.text("kind", _KIND, "wheelhouse"),
            sha256=fields.text("sha256", _SHA256, "64 lowercase hex digits"),
            size=fields.number("size", 1, MAX_ARTIFACT_BYTES),
        )

    def to_object(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """A release: which build it is, for which interpreter and platform, and its artifacts."""

    version: Version
    commit: str
    built_at: str
    python: str
    platform: str
    artifacts: tuple[Artifact, ...]
    name: str = NAME

    KEYS = ("schema", "name", "version", "commit", "built_at", "python", "platform", "artifacts")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """The manifest in ``data`` (``where`` names it in errors, e.g. its URL)."""
        fields = _Object(load_json(data, where, MAX_MANIFEST_BYTES), where, cls.KEYS)
        fields.schema()
        if fields.data["name"] != NAME:
            fields.fail(f"'name' is {_show(fields.data['name'])}, not {NAME!r}")
        built_at = fields.text("built_at", _BUILT_AT, "2026-12-01T00:00:00Z")
        try:
            datetime.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            fields.fail(f"'built_at' {built_at!r} is not a date and time")
        artifacts = tuple(
            Artifact.from_object(item, f"{where} artifact {index}")
            for index, item in enumerate(fields.items("artifacts", MAX_ARTIFACTS))
        )
        names = [artifact.name for artifact in artifacts]
        if len(set(names)) != len(names):
            fields.fail("two artifacts have the same name")
        if sum(artifact.kind == WHEELHOUSE for artifact in artifacts) != 1:
            fields.fail(f"it must list exactly one artifact of kind {WHEELHOUSE!r}")
        return cls(
            version=fields.version("version"),
            commit=fields.text("commit", _COMMIT, "40 lowercase hex digits"),
            built_at=built_at,
            python=fields.text("python", _PYTHON, "cp311"),
            platform=fields.text("platform", _PLATFORM, "manylinux_x86_64"),
            artifacts=artifacts,
        )

    def to_json(self) -> bytes:
        """The manifest's canonical bytes (what scripts/release writes and signs).

        They are parsed back before they are returned: a manifest built in code obeys the rules a read one does.
        """
        data = _dump(
            {
                "schema": SCHEMA,
                "name": self.name,
                "version": str(self.version),
                "commit": self.commit,
                "built_at": self.built_at,
                "python": self.python,
                "platform": self.platform,
                "artifacts": [artifact.to_object() for artifact in self.artifacts],
            }
        )
        Manifest.from_json(data, f"manifest {self.version}")
        return data

    @property
    def wheelhouse(self) -> Artifact:
        """The wheelhouse artifact (a parsed manifest has exactly one)."""
        return next(artifact for artifact in self.artifacts if artifact.kind == WHEELHOUSE)


@dataclass(frozen=True)
class ReleaseIndex:
    """The list of published versions (unsigned: it only says where to look; each manifest is signed)."""

    releases: tuple[Version, ...]

    KEYS = ("schema", "releases")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ReleaseIndex:
        fields = _Object(load_json(data, where, MAX_INDEX_BYTES), where, cls.KEYS)
        fields.schema()
        releases: list[Version] = []
        for item in fields.items("releases", MAX_RELEASES):
            try:
                releases.append(Version.parse(item, what="release"))
            except BangerError as exc:
                fields.fail(str(exc).split(": use ")[0])
        if len(set(releases)) != len(releases):
            fields.fail("a release is listed twice")
        return cls(tuple(sorted(releases)))

    def to_json(self) -> bytes:
        return _dump({"schema": SCHEMA, "releases": [str(version) for version in sorted(self.releases)]})

    def adding(self, version: Version) -> ReleaseIndex:
        """This index with ``version`` listed (scripts/release publishing it)."""
        return ReleaseIndex(tuple(sorted({*self.releases, version})))

    @property
    def newest(self) -> Version | None:
        return max(self.releases, default=None)
