"""Finding the host's Debian mirror in one-line and deb822 apt sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger_debootstrap.mirrors import (
    AptSource,
    MirrorError,
    find_mirror,
    find_suite_mirror,
    host_sources,
    parse_deb822,
    parse_one_line,
)

pytestmark = pytest.mark.unit


def test_one_line_format() -> None:
    text = """\
# a comment
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian.gpg] http://mirror.example/debian/ bookworm main contrib
deb http://security.example/debian-security bookworm-security main # trailing comment
deb [broken http://x/ bookworm main
deb http://incomplete.example/
"""
    assert parse_one_line(text, "f") == [
        AptSource("http://mirror.example/debian", "bookworm", ("main", "contrib"), "f"),
        AptSource("http://security.example/debian-security", "bookworm-security", ("main",), "f"),
    ]


def test_deb822_format() -> None:
    text = """\
Types: deb deb-src
URIs: http://deb.debian.org/debian
 http://second.example/debian
Suites: bookworm bookworm-updates
Components: main
# comment inside
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""
    assert [(s.uri, s.suite) for s in parse_deb822(text, "f")] == [
        ("http://deb.debian.org/debian", "bookworm"),
        ("http://deb.debian.org/debian", "bookworm-updates"),
        ("http://second.example/debian", "bookworm"),
        ("http://second.example/debian", "bookworm-updates"),
    ]


def apt_dir(tmp_path: Path) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    (root / "sources.list.d/zz-debian.sources").write_text(
        "Types: deb\nURIs: http://deb822.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    (root / "sources.list.d/aa-other.list").write_text("deb https://repo.example/apt stable main\n")
    (root / "sources.list.d/security.sources.disabled-by-admin").write_text(
        "Types: deb\nURIs: http://ignored.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    (root / "sources.list.d/sec.list").write_text("deb http://sec.example/debian-security bookworm-security main\n")
    return root


def test_host_sources_in_apt_order(tmp_path: Path) -> None:
    root = apt_dir(tmp_path)
    (root / "sources.list").write_text("deb http://first.example/debian bookworm contrib\n")
    uris = [s.uri for s in host_sources(root)]
    assert uris == [
        "http://first.example/debian",
        "https://repo.example/apt",
        "http://sec.example/debian-security",
        "http://deb822.example/debian",
        "http://deb822.example/debian",
    ]


def test_find_mirror_picks_the_source_serving_suite_and_components(tmp_path: Path) -> None:
    root = apt_dir(tmp_path)
    # the first source lacks "main": skipped
    (root / "sources.list").write_text("deb http://first.example/debian bookworm contrib\n")
    assert find_mirror("bookworm", ["main"], apt_dir=root) == "http://deb822.example/debian"
    assert find_suite_mirror("bookworm-security", root) == "http://sec.example/debian-security"
    assert find_suite_mirror("trixie-security", root) is None


def test_override_wins_and_is_validated(tmp_path: Path) -> None:
    root = apt_dir(tmp_path)
    assert find_mirror("bookworm", override="http://local:3142/debian/", apt_dir=root) == "http://local:3142/debian"
    for bad in ("ftp://x/debian", "deb.debian.org/debian", "http://x/ debian"):
        with pytest.raises(MirrorError, match="debian_mirror"):
            find_mirror("bookworm", override=bad, apt_dir=root)


def test_no_mirror_tells_how_to_configure_one(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match=r"set debian_mirror in config\.toml"):
        find_mirror("bookworm", apt_dir=tmp_path / "empty")
    with pytest.raises(MirrorError, match="trixie"):
        find_mirror("trixie", apt_dir=apt_dir(tmp_path))


def test_this_hosts_sources_parse() -> None:
    # whatever the host has, reading it never raises
    assert isinstance(host_sources(), list)
