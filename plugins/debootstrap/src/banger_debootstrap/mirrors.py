"""Find the Debian mirror the host's apt already uses, from ``sources.list`` and ``sources.list.d``.

Both formats apt reads are understood: one-line ``deb [opts] URI SUITE COMPONENT...``
(``*.list``) and deb822 paragraphs (``*.sources``). Files are read in apt's
order: ``sources.list`` first, then ``sources.list.d`` sorted by name; other
file names there (``*.disabled``, backups) are ignored, as apt ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

APT_DIR = Path("/etc/apt")
_SCHEMES = ("http://", "https://", "file:/")


class MirrorError(LookupError):
    """No usable mirror; the message says how to configure one."""


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` line (or one URI and suite of a deb822 paragraph)."""

    uri: str
    suite: str
    components: tuple[str, ...]
    origin: str


def parse_one_line(text: str, origin: str) -> list[AptSource]:
    """Sources from a one-line-style ``.list`` file (``deb-src`` and comments skipped)."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        rest = line[3:].strip()
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                continue  # malformed options: apt rejects the line too
            rest = rest[end + 1 :].strip()
        fields = rest.split()
        if len(fields) >= 2:
            sources.append(AptSource(fields[0].rstrip("/"), fields[1], tuple(fields[2:]), origin))
    return sources


def _deb822_paragraphs(text: str) -> Iterable[dict[str, str]]:
    paragraph: dict[str, str] = {}
    last: str | None = None
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if paragraph:
                yield paragraph
            paragraph, last = {}, None
        elif raw[0] in " \t" and last is not None:
            paragraph[last] += " " + raw.strip()  # continuation line
        elif ":" in raw:
            key, value = raw.split(":", 1)
            last = key.strip().lower()
            paragraph[last] = value.strip()


def parse_deb822(text: str, origin: str) -> list[AptSource]:
    """Sources from a deb822 ``.sources`` file (``Enabled: no`` and non-``deb`` types skipped)."""
    sources = []
    for fields in _deb822_paragraphs(text):
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                sources.append(AptSource(uri.rstrip("/"), suite, components, origin))
    return sources


def host_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """Every ``deb`` source configured on the host, in apt's order."""
    files: list[Path] = []
    if (apt_dir / "sources.list").is_file():
        files.append(apt_dir / "sources.list")
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    sources: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        sources += parse_deb822(text, str(path)) if path.suffix == ".sources" else parse_one_line(text, str(path))
    return sources


def find_mirror(
    suite: str, components: Iterable[str] = ("main",), *, override: str | None = None, apt_dir: Path = APT_DIR
) -> str:
    """The mirror URI to debootstrap ``suite`` from.

    Args:
        suite: e.g. ``bookworm``.
        components: components the build needs.
        override: the ``debian_mirror`` config value; used as is when set.
        apt_dir: where apt's config lives (tests point it elsewhere).

    Raises:
        MirrorError: the override is not an http(s)/file URL, or no host
            source serves ``suite`` with ``components``.
    """
    if override:
        if not override.startswith(_SCHEMES) or any(ch.isspace() for ch in override):
            raise MirrorError(f"debian_mirror {override!r} is not an http(s):// or file:/ URL: fix it in config.toml")
        return override.rstrip("/")
    needed = set(components)
    for source in host_sources(apt_dir):
        if source.suite == suite and needed <= set(source.components) and source.uri.startswith(_SCHEMES):
            return source.uri
    raise MirrorError(
        f"no apt source on this host serves Debian {suite} ({' '.join(sorted(needed))}): "
        'set debian_mirror in config.toml, e.g. debian_mirror = "http://deb.debian.org/debian"'
    )


def find_suite_mirror(suite: str, apt_dir: Path = APT_DIR) -> str | None:
    """The host's mirror for ``suite`` (e.g. ``bookworm-security``), or None."""
    for source in host_sources(apt_dir):
        if source.suite == suite and source.uri.startswith(_SCHEMES):
            return source.uri
    return None
