"""vm run pieces that need no VM: dry runs, guest paths, the remote command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from banger_core.cli import run_cmd
from banger_core.cli.run_cmd import guest_workdir, remote_command
from banger_core.common.errors import BangerError
from banger_core.testing import invoke_cli


def make_repo(root: Path) -> Path:
    repo = root / "fixture-repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "README.md").write_text("hi\n")
    (repo / "src").mkdir()
    (repo / "src" / "a file with spaces.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("*.log\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    (repo / "untracked.txt").write_text("u\n")
    (repo / "debug.log").write_text("ignored\n")
    return repo


@pytest.mark.builtins
def test_dry_run_prints_exactly_the_tracked_files_and_creates_nothing(
    banger_env: dict[str, str], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path)
    result = invoke_cli(["vm", "run", "--dry-run", str(repo)], banger_env)
    assert result.exit_code == 0, result.output
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split("\n")
    assert result.stdout.splitlines() == sorted(t for t in tracked if t)
    assert "(dry run: nothing created)" in result.stderr
    with_untracked = invoke_cli(["vm", "run", "--dry-run", "--include-untracked", str(repo)], banger_env)
    assert "untracked.txt" in with_untracked.stdout.splitlines()
    assert "debug.log" not in with_untracked.stdout
    state = Path(banger_env["XDG_DATA_HOME"]) / "banger"
    assert not state.exists()  # no daemon, no database, no VM


@pytest.mark.builtins
def test_not_a_git_repo_is_one_clear_line(banger_env: dict[str, str], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = invoke_cli(["vm", "run", "--dry-run", str(plain)], banger_env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"banger: error: {plain} is not a git repository: "
        "pass a git repository (`git init` makes one), or omit PATH for a bare VM"
    )


def test_branch_and_from_are_exclusive(banger_env: dict[str, str], tmp_path: Path) -> None:
    result = invoke_cli(["vm", "run", "--branch", "a", "--from", "b", "--dry-run", str(tmp_path)], banger_env)
    assert result.exit_code == 2 and "--branch and --from both pick a ref" in result.stderr


def test_guest_workdir() -> None:
    assert guest_workdir(None, Path("/home/u/my-repo")) == "/root/my-repo"
    assert guest_workdir("~/src/x", Path("/r")) == "/root/src/x"
    assert guest_workdir("/srv/app/../app2", Path("/r")) == "/srv/app2"
    for bad in ("relative/dir", "/", "/root", "~"):
        with pytest.raises(BangerError, match="--guest-path"):
            guest_workdir(bad, Path("/r"))


def test_remote_command_quotes_and_keeps_the_exit_status() -> None:
    argv = remote_command(["sh", "-c", "exit 7"], "/root/my repo")
    assert argv[:2] == ["sh", "-c"]
    assert argv[2] == "cd '/root/my repo' && sh -c 'exit 7'; exit $?"
    # Run it for real: status and signals come through as the shell reports them.
    assert subprocess.run(remote_command(["sh", "-c", "exit 7"], None)).returncode == 7
    assert subprocess.run(remote_command(["sh", "-c", "kill -TERM $$"], None)).returncode == 128 + 15


class _StuckSsh:
    """An ssh target whose connection hangs (a guest too busy to answer)."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def command_argv(self, command: list[str]) -> list[str]:
        self.commands.append(command)
        return ["sleep", "90"]


def test_starting_mise_install_that_hangs_does_not_fail_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_cmd, "TOOLING_START_TIMEOUT", 0.2)
    target = _StuckSsh()
    run_cmd._start_tooling(target, "/root/my repo", "my repo")  # returns instead of raising TimeoutExpired
    ((shell, flag, script),) = target.commands
    assert (shell, flag) == ("sh", "-c")
    assert "cd '/root/my repo' && nohup mise install >'/root/.cache/banger/vm-run-tooling-my repo.log'" in script
    assert capsys.readouterr().err == "banger: starting `mise install` took over 0.2 s; skipped it\n"


def test_pull_back_needs_a_workspace(banger_env: dict[str, str]) -> None:
    result = invoke_cli(["vm", "run", "--pull-back", "--", "true"], banger_env)
    assert result.exit_code == 2
    assert "--pull-back brings a workspace back: pass the repository PATH too" in result.stderr


@pytest.mark.builtins
@pytest.mark.parametrize("command", ["pull", "diff"])
def test_workspace_pull_and_diff_refuse_a_non_repository_in_one_line(
    banger_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = invoke_cli(["vm", "workspace", command, "some-vm", str(plain)], banger_env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"banger: error: {plain} is not a git repository: pass the repository the workspace was shipped from"
    )
    assert not (Path(banger_env["XDG_DATA_HOME"]) / "banger").exists()  # refused before reaching the daemon
