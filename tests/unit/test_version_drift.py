"""``banger doctor``'s version row: the running CLI, the running daemon and install.toml, compared."""

from __future__ import annotations

from banger_core.common.buildinfo import BuildInfo
from banger_core.common.doctor import version_row

RELEASE = BuildInfo("v0.2.0", "abcd1234" + "0" * 32, "2026-11-30T10:00:00Z")


def test_match() -> None:
    row = version_row(RELEASE, RELEASE._replace(built="unknown"), RELEASE)
    assert (row["status"], row["hint"]) == ("ok", None)
    assert row["summary"] == "CLI = daemon = install.toml: banger v0.2.0 (commit abcd1234)"
    alone = version_row(RELEASE, None, None)
    assert (alone["status"], alone["summary"]) == ("ok", "CLI: banger v0.2.0 (commit abcd1234) (no daemon running)")


def test_version_differs() -> None:
    old = BuildInfo("v0.1.0", "1234abcd" + "0" * 32, "2026-10-01T10:00:00Z")
    row = version_row(RELEASE, old, RELEASE)
    assert row["status"] == "warn" and not row["blocks_vm_run"]
    assert row["summary"] == (
        "version drift: CLI v0.2.0 (commit abcd1234), daemon v0.1.0 (commit 1234abcd), "
        "install.toml v0.2.0 (commit abcd1234)"
    )
    assert "\n" not in row["summary"]
    assert (
        row["hint"]
        == "`sudo banger system restart` runs the installed build; `sudo banger system install` installs this CLI's"
    )
    user_mode = version_row(RELEASE, old, None)
    assert user_mode["hint"] == "`banger daemon restart` starts the daemon of this CLI's build"


def test_commit_differs() -> None:
    rebuilt = RELEASE._replace(commit="ffff0000" + "0" * 32)
    row = version_row(RELEASE, RELEASE, rebuilt)
    assert row["status"] == "warn"
    assert row["summary"] == (
        "version drift: CLI v0.2.0 (commit abcd1234), daemon v0.2.0 (commit abcd1234), "
        "install.toml v0.2.0 (commit ffff0000)"
    )


def test_dev_suppresses() -> None:
    dev = BuildInfo("dev", "abcd1234" + "0" * 32, "unknown")
    for cli, daemon, installed, who in (
        (dev, RELEASE, RELEASE, "CLI"),
        (RELEASE, dev, RELEASE, "daemon"),
        (RELEASE, RELEASE, dev, "install.toml"),
        (RELEASE, RELEASE._replace(commit="unknown"), None, "daemon"),
    ):
        row = version_row(cli, daemon, installed)
        assert (row["status"], row["summary"]) == ("info", f"version drift not checked: development build ({who})")
