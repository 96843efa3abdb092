"""The CLI shell: version lines, help, and what start-up may import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from banger_core.common.buildinfo import BuildInfo, build_info, commit_from_checkout
from banger_core.testing import invoke_cli

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VERSION_LINE = re.compile(r"^(banger|bangerd) (v\d+\.\d+\.\d+|dev) \(commit ([0-9a-f]{8}|unknown), built (\S+)\)$")
HEAVY = ("sqlmodel", "pydantic", "sqlalchemy", "pyroute2", "dnslib", "sigstore", "zstandard", "httpx", "rich")


def test_version_line_format(banger_env: dict[str, str]) -> None:
    out = subprocess.run([BIN / "banger", "--version"], capture_output=True, text=True, env=banger_env, check=True)
    match = VERSION_LINE.match(out.stdout.strip())
    assert match, out.stdout
    # A development checkout reports the commit HEAD points at.
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    if head.strip():
        assert match.group(3) == head.strip()[:8]
    assert out.stdout.count("\n") == 1


def test_bangerd_version_line(banger_env: dict[str, str]) -> None:
    out = subprocess.run([BIN / "bangerd", "--version"], capture_output=True, text=True, env=banger_env, check=True)
    match = VERSION_LINE.match(out.stdout.strip())
    assert match and match.group(1) == "bangerd", out.stdout
    assert out.stdout == subprocess.run(
        [BIN / "banger", "--version"], capture_output=True, text=True, env=banger_env, check=True
    ).stdout.replace("banger ", "bangerd ", 1)


def test_version_line_of_a_release_build() -> None:
    info = BuildInfo("v0.1.0", "abcd1234ef567890", "2026-04-28T20:45:50Z")
    assert info.line("banger") == "banger v0.1.0 (commit abcd1234, built 2026-04-28T20:45:50Z)"
    assert BuildInfo("dev", "unknown", "unknown").line("bangerd") == "bangerd dev (commit unknown, built unknown)"


def test_commit_from_checkout_reads_packed_refs_and_worktrees(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=n",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert commit_from_checkout(str(repo)) == sha
    subprocess.run(["git", "-C", str(repo), "pack-refs", "--all"], check=True)
    assert commit_from_checkout(str(repo)) == sha
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(tmp_path / "wt")], check=True)
    assert commit_from_checkout(str(tmp_path / "wt")) == sha
    assert commit_from_checkout(str(tmp_path)) is None


def test_version_command_prints_three_lines(banger_env: dict[str, str]) -> None:
    result = invoke_cli(["version"], banger_env)
    info = build_info()
    assert result.stdout.splitlines() == [
        f"version: {info.version}",
        f"commit:  {info.commit}",
        f"built:   {info.built}",
    ]


def test_help_lists_the_command_groups(banger_env: dict[str, str]) -> None:
    result = invoke_cli(["--help"], banger_env)
    commands = re.findall(r"^  ([a-z-]+)\s", result.stdout.split("Commands:")[1], re.MULTILINE)
    assert {"config", "doctor", "plugins", "version"} <= set(commands)


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--help"],
        ["plugins", "list"],
        ["plugins", "list", "--json"],
        ["vm", "--help"],
        ["vm", "run", "--help"],
    ],
)
def test_startup_path_imports_nothing_heavy(argv: list[str], banger_env: dict[str, str]) -> None:
    probe = (
        "import sys\n"
        f"sys.argv = ['banger', *{argv!r}]\n"
        "from banger_core.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY:' + ','.join(heavy), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=banger_env)
    assert "HEAVY:\n" in out.stderr, out.stderr
