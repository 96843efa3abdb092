"""The same guest commands through a real ssh hop: the remote shell's parsing must not change them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from banger_core.testing import RecordingProgress
from banger_git.syncer import GitSyncer
from banger_hookspecs import WorkspaceOptions

pytestmark = pytest.mark.integration

NAMES = {
    "a b": "1",
    "new\nline": "2",
    "q'uote\"s $(touch /tmp/pwned) `x` ;|&": "3",
    "-dash": "4",
    "dir/x": "5",
    "ünï": "6",
    "*": "7",
}


def test_full_and_incremental_sync_over_ssh(
    ssh_shell: Any, tmp_path: Path, make_repo: Callable[..., Path], git: Callable[..., str]
) -> None:
    repo = make_repo(tmp_path / "repo", NAMES)
    dest = tmp_path / "guest dir it's $HOME"
    syncer = GitSyncer()

    def sync() -> int:
        plan = syncer.plan(repo, WorkspaceOptions())
        return syncer.sync(plan, ssh_shell, str(dest), RecordingProgress(), incremental=True)

    assert sync() == len(NAMES)
    assert {n: (dest / n).read_text() for n in NAMES} == NAMES
    assert sync() == 0
    git(repo, "rm", "-q", "--", "q'uote\"s $(touch /tmp/pwned) `x` ;|&", "dir/x")
    (repo / "*").write_text("star")
    assert sync() == 1
    assert sorted(os.listdir(dest)) == sorted([".git", "*", "-dash", "a b", "new\nline", "ünï"])
    assert (dest / "*").read_text() == "star"
    assert not Path("/tmp/pwned").exists()


def test_round_trip_over_ssh(
    ssh_shell: Any, tmp_path: Path, make_repo: Callable[..., Path], git: Callable[..., str]
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n"})
    (repo / "app.py").write_text("host edit\n")
    dest = str(tmp_path / "guest repo")
    syncer = GitSyncer()
    syncer.sync(syncer.plan(repo, WorkspaceOptions()), ssh_shell, dest, RecordingProgress())
    assert ssh_shell.run(["git", "-C", dest, "status", "--porcelain"]).stdout == b" M app.py\n"
    identity = ["-c", "user.name=guest", "-c", "user.email=guest@example.invalid"]
    committed = ssh_shell.run(["git", "-C", dest, *identity, "commit", "-q", "-am", "in the guest"])
    assert committed.returncode == 0, committed.stderr
    (Path(dest) / "later.txt").write_text("uncommitted\n")

    index = (repo / ".git" / "index").read_bytes()
    summary = syncer.pull(repo, ssh_shell, dest, "banger/ssh", RecordingProgress(), force=False)
    assert summary.startswith("branch banger/ssh is at ")
    assert git(repo, "log", "--format=%s", "main..banger/ssh").splitlines() == [
        f"banger: uncommitted changes in {dest}",
        "in the guest",
    ]
    assert git(repo, "show", "banger/ssh:later.txt") == "uncommitted\n"
    assert (repo / "app.py").read_text() == "host edit\n"
    assert (repo / ".git" / "index").read_bytes() == index
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main\n"
