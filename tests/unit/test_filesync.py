"""file_sync: validating entries against the rules, then staging them for the work disk."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from banger_core.common.errors import BangerError
from banger_core.daemon.filesync import FileSyncError, SyncEntry, stage, validate_entries

pytestmark = pytest.mark.unit


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home" / "user"
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text("[user]\n\tname = me\n")
    (home / "dotfiles" / "nvim").mkdir(parents=True)
    (home / "dotfiles" / "nvim" / "init.lua").write_text("-- nvim")
    (home / "dotfiles" / "bashrc").write_text("alias ll='ls -l'")
    (tmp_path / "outside").write_text("not yours")
    return home


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    staging = tmp_path / "staging"
    staging.mkdir()
    return staging


@pytest.fixture(params=[0o022, 0o077, 0o000], ids=["umask022", "umask077", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def one(home: Path, **entry: Any) -> SyncEntry:
    (validated,) = validate_entries([entry], home)
    return validated


def error(home: Path, *entries: dict[str, Any]) -> str:
    with pytest.raises(FileSyncError) as info:
        validate_entries(list(entries), home)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, BangerError) and isinstance(info.value, ValueError)
    return message


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --------------------------------------------------------------------------
# validate_entries
# --------------------------------------------------------------------------


def test_a_file_entry(home: Path) -> None:
    entry = one(home, host="~/.gitconfig", guest="~/.gitconfig")
    assert entry == SyncEntry(
        index=1,
        host="~/.gitconfig",
        guest="~/.gitconfig",
        source=home / ".gitconfig",
        dest=PurePosixPath(".gitconfig"),
        mode=None,
        is_dir=False,
    )
    assert entry.label == 'file_sync entry 1 (host "~/.gitconfig")'
    assert entry.file_mode == 0o600


def test_absolute_host_path_and_directory(home: Path) -> None:
    entry = one(home, host=str(home / "dotfiles"), guest="/root/.dotfiles")
    assert entry.is_dir
    assert entry.source == home / "dotfiles"
    assert entry.dest == PurePosixPath(".dotfiles")


@pytest.mark.parametrize(
    ("guest", "dest"),
    [
        ("~/x", "x"),
        ("/root/x", "x"),
        ("~/a/./b//c/", "a/b/c"),
        ("~/a/../b", "b"),
        ("/root/.config/app/conf.toml", ".config/app/conf.toml"),
    ],
)
def test_guest_paths_are_normalized(home: Path, guest: str, dest: str) -> None:
    assert one(home, host="~/.gitconfig", guest=guest).dest == PurePosixPath(dest)


@pytest.mark.parametrize(
    ("guest", "message"),
    [
        ("x", 'guest path must start with "~/" or "/root/", got \'x\''),
        ("/etc/passwd", 'guest path must start with "~/" or "/root/", got \'/etc/passwd\''),
        ("/rootkit/x", 'guest path must start with "~/" or "/root/", got \'/rootkit/x\''),
        ("~", 'guest path must start with "~/" or "/root/", got \'~\''),
        (42, 'guest path must start with "~/" or "/root/", got 42'),
        ("~/", "guest path '~/' names the home directory itself; name a file under it"),
        ("/root/a/..", "guest path '/root/a/..' names the home directory itself; name a file under it"),
        ("~/../etc/passwd", "guest path '~/../etc/passwd' leaves the home directory; keep it under ~/"),
        ("/root/a/../../x", "guest path '/root/a/../../x' leaves the home directory; keep it under ~/"),
        ("~/a\0b", "guest path '~/a\\x00b' contains a NUL byte"),
    ],
)
def test_bad_guest_paths(home: Path, guest: object, message: str) -> None:
    got = error(home, {"host": "~/.gitconfig", "guest": "~/ok"}, {"host": "~/.gitconfig", "guest": guest})
    assert got == f'file_sync entry 2 (host "~/.gitconfig"): {message}'


@pytest.mark.parametrize(("mode", "value"), [("0644", 0o644), ("644", 0o644), ("0o755", 0o755), ("0400", 0o400)])
def test_modes(home: Path, mode: str, value: int) -> None:
    entry = one(home, host="~/.gitconfig", guest="~/g", mode=mode)
    assert entry.mode == entry.file_mode == value


@pytest.mark.parametrize("mode", ["4755", "0x1a4", "rw-r--r--", "08", "", "0644 ", 420])
def test_bad_modes(home: Path, mode: object) -> None:
    assert error(home, {"host": "~/.gitconfig", "guest": "~/g", "mode": mode}) == (
        f'file_sync entry 1 (host "~/.gitconfig"): mode must be an octal string of permission bits like "0644", '
        f"got {mode!r}"
    )


def test_host_rules(home: Path, tmp_path: Path) -> None:
    os.symlink(home / ".gitconfig", home / "link-inside")
    os.symlink(tmp_path / "outside", home / "link-outside")
    os.symlink(tmp_path, home / "dir-outside")
    os.mkfifo(home / "fifo")
    assert one(home, host="~/link-inside", guest="~/g").source == home / ".gitconfig"

    def bad(host: object) -> str:
        return error(home, {"host": host, "guest": "~/g"})

    label = 'file_sync entry 1 (host "{}")'
    assert bad("~/missing") == label.format("~/missing") + ": ~/missing does not exist; create it or remove the entry"
    assert bad("~/.gitconfig/x").endswith(": ~/.gitconfig/x does not exist; create it or remove the entry")
    assert bad("/etc/passwd") == (
        label.format("/etc/passwd")
        + f": /etc/passwd is not under your home ({home}); only files under it can be synced"
    )
    assert bad("~/../../outside").endswith(f"is not under your home ({home}); only files under it can be synced")
    assert bad("~/link-outside") == (
        label.format("~/link-outside") + f": ~/link-outside is a symlink to {tmp_path / 'outside'}, outside your home; "
        "symlinks are followed only inside it"
    )
    assert "is a symlink to" in bad("~/dir-outside/outside")
    assert bad("~") == label.format("~") + ": ~ is your whole home directory; name a file or directory under it"
    assert bad(str(home) + "/").endswith("is your whole home directory; name a file or directory under it")
    assert bad("~root/.ssh/id_rsa").endswith(": only your own home (~/...) can be synced, not ~root")
    assert bad("relative/path") == (
        label.format("relative/path") + ": host path must be absolute or start with \"~/\", got 'relative/path'"
    )
    assert bad("~/fifo").endswith(": ~/fifo is neither a regular file nor a directory")
    assert bad(None) == 'file_sync entry 1: host must be a path under your home, like "~/.gitconfig", got None'


def test_home_reached_through_a_symlink(tmp_path: Path, home: Path) -> None:
    alias = tmp_path / "home-alias"
    os.symlink(home, alias)
    entry = one(alias, host=str(alias / ".gitconfig"), guest="~/g")
    assert entry.source == home / ".gitconfig"
    assert one(alias, host="~/.gitconfig", guest="~/g").source == home / ".gitconfig"


def test_unknown_keys_and_non_tables(home: Path) -> None:
    assert error(home, {"host": "~/.gitconfig", "guest": "~/g", "owner": "me"}) == (
        "file_sync entry 1 (host \"~/.gitconfig\"): unknown key 'owner' (known: guest, host, mode)"
    )
    assert error(home, ["~/.gitconfig"]) == "file_sync entry 1 must be a table with host and guest keys"  # type: ignore[arg-type]


def test_duplicate_and_overlapping_guest_paths(home: Path) -> None:
    assert (
        error(
            home,
            {"host": "~/.gitconfig", "guest": "~/same"},
            {"host": "~/dotfiles/bashrc", "guest": "/root/same"},
        )
        == 'file_sync entry 2 (host "~/dotfiles/bashrc"): guest path /root/same is also the target of entry 1'
    )
    assert error(
        home,
        {"host": "~/dotfiles", "guest": "~/.config"},
        {"host": "~/.gitconfig", "guest": "~/.config/git/config"},
    ) == (
        'file_sync entry 2 (host "~/.gitconfig"): guest path ~/.config/git/config overlaps entry 1\'s ~/.config; '
        "sync the parent directory once or pick separate paths"
    )


def test_the_first_bad_entry_is_reported(home: Path) -> None:
    message = error(
        home,
        {"host": "~/.gitconfig", "guest": "~/a"},
        {"host": "~/dotfiles", "guest": "~/b"},
        {"host": "~/nope", "guest": "~/c"},
        {"host": "/etc/shadow", "guest": "~/d"},
    )
    assert message.startswith('file_sync entry 3 (host "~/nope"): ')


# --------------------------------------------------------------------------
# stage
# --------------------------------------------------------------------------


def test_stage_files_with_default_and_explicit_modes(home: Path, staging: Path, umask: int) -> None:
    (home / ".gitconfig").chmod(0o644)
    os.utime(home / ".gitconfig", ns=(1_000_000_000, 1_234_567_890_123_456_789))
    entries = validate_entries(
        [
            {"host": "~/.gitconfig", "guest": "~/.gitconfig"},
            {"host": "~/dotfiles/bashrc", "guest": "/root/.config/shell/bashrc", "mode": "0640"},
        ],
        home,
    )
    warnings: list[str] = []
    assert stage(entries, staging, warnings.append) == [".gitconfig", ".config/shell/bashrc"]
    assert warnings == []
    assert (staging / ".gitconfig").read_text() == "[user]\n\tname = me\n"
    assert mode_of(staging / ".gitconfig") == 0o600, "the host's 0644 does not leak through"
    assert (staging / ".gitconfig").stat().st_mtime_ns == 1_234_567_890_123_456_789
    assert mode_of(staging / ".config/shell/bashrc") == 0o640
    assert mode_of(staging / ".config") == mode_of(staging / ".config/shell") == 0o700
    assert sorted(p.name for p in staging.rglob(".banger-file-sync-*")) == []


def test_stage_a_directory_skips_symlinks_and_special_files(
    home: Path, staging: Path, tmp_path: Path, umask: int
) -> None:
    dotfiles = home / "dotfiles"
    os.symlink(tmp_path / "outside", dotfiles / "escape")
    os.symlink("bashrc", dotfiles / "nvim" / "inside-link")
    os.mkfifo(dotfiles / "pipe")
    (dotfiles / "empty-dir").mkdir()
    (dotfiles / "run.sh").write_text("#!/bin/sh")
    (dotfiles / "run.sh").chmod(0o755)
    entries = validate_entries([{"host": "~/dotfiles/", "guest": "~/.dotfiles", "mode": "0644"}], home)
    warnings: list[str] = []
    staged = stage(entries, staging, warnings.append)

    assert staged == [".dotfiles/bashrc", ".dotfiles/nvim/init.lua", ".dotfiles/run.sh"]
    label = 'file_sync entry 1 (host "~/dotfiles/")'
    assert warnings == [
        f"{label}: skipped symlink ~/dotfiles/escape (not followed inside a synced directory)",
        f"{label}: skipped symlink ~/dotfiles/nvim/inside-link (not followed inside a synced directory)",
        f"{label}: skipped ~/dotfiles/pipe (not a regular file or directory)",
    ]
    root = staging / ".dotfiles"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "bashrc",
        "empty-dir",
        "nvim",
        "nvim/init.lua",
        "run.sh",
    ]
    assert {mode_of(root / f) for f in ("bashrc", "nvim/init.lua", "run.sh")} == {0o644}
    assert {mode_of(d) for d in (root, root / "nvim", root / "empty-dir")} == {0o700}
    assert (root / "nvim" / "init.lua").read_text() == "-- nvim"


def test_stage_follows_a_top_level_symlink_inside_home(home: Path, staging: Path) -> None:
    os.symlink("dotfiles", home / "current")
    os.symlink(".gitconfig", home / "gitconfig-link")
    entries = validate_entries(
        [{"host": "~/current", "guest": "~/d"}, {"host": "~/gitconfig-link", "guest": "~/g"}], home
    )
    stage(entries, staging, pytest.fail)
    assert (staging / "d" / "bashrc").read_text() == "alias ll='ls -l'"
    assert not (staging / "g").is_symlink()
    assert (staging / "g").read_text().startswith("[user]")


def test_stage_merges_into_existing_directories_but_never_overwrites(home: Path, staging: Path) -> None:
    (staging / ".ssh").mkdir(mode=0o700)
    (staging / ".ssh" / "authorized_keys").write_text("banger's key")
    ok = validate_entries([{"host": "~/.gitconfig", "guest": "~/.ssh/config"}], home)
    assert stage(ok, staging, pytest.fail) == [".ssh/config"]

    clash = validate_entries([{"host": "~/dotfiles/bashrc", "guest": "~/.ssh/authorized_keys"}], home)
    with pytest.raises(FileSyncError) as info:
        stage(clash, staging, pytest.fail)
    assert str(info.value) == (
        'file_sync entry 1 (host "~/dotfiles/bashrc"): ~/.ssh/authorized_keys is already staged by banger; '
        "pick another guest path"
    )
    assert (staging / ".ssh" / "authorized_keys").read_text() == "banger's key"
    assert sorted(os.listdir(staging / ".ssh")) == ["authorized_keys", "config"], "no temporary file left behind"

    (staging / "file").write_text("x")
    under_file = validate_entries([{"host": "~/.gitconfig", "guest": "~/file/inner"}], home)
    with pytest.raises(FileSyncError, match=r"~/file is already staged by banger; pick another guest path$"):
        stage(under_file, staging, pytest.fail)
