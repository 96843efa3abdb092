"""The git round trip against real repositories: LocalShell runs the guest's git here, in a sandbox.

Shipping makes the guest workspace a checkout of what was shipped; pulling
brings the guest's commits and uncommitted changes back as a branch without
touching the host's checkout; a hostile guest changes nothing on the host.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from banger_core.testing import RecordingProgress
from banger_git import roundtrip
from banger_git.roundtrip import diff_workspace, pull_workspace
from banger_git.syncer import GitSyncer
from banger_hookspecs import GuestResult, WorkspaceOptions, WorkspaceRoundTrip

pytestmark = pytest.mark.unit

Git = Callable[..., str]
MakeRepo = Callable[[Path, dict[str, bytes | str]], Path]
IDENTITY = {
    "GIT_AUTHOR_NAME": "guest",
    "GIT_AUTHOR_EMAIL": "guest@example.invalid",
    "GIT_COMMITTER_NAME": "guest",
    "GIT_COMMITTER_EMAIL": "guest@example.invalid",
}


def ship(repo: Path, shell: Any, guest: str = "work", **options: Any) -> RecordingProgress:
    syncer = GitSyncer()
    progress = RecordingProgress()
    syncer.sync(syncer.plan(repo, WorkspaceOptions(**options)), shell, guest, progress)
    return progress


def host_state(repo: Path, git: Git) -> str:
    """A digest of everything a pull must leave alone: HEAD, every ref but banger's, the index, the files."""
    digest = hashlib.sha256()
    digest.update(git(repo, "symbolic-ref", "-q", "HEAD").encode())
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    digest.update("\n".join(r for r in refs if not r.startswith(("refs/heads/banger/", "refs/banger/"))).encode())
    digest.update((repo / ".git" / "index").read_bytes())
    files = []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        files += [Path(dirpath) / name for name in filenames]
    for path in sorted(files):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def workspace_files(root: Path) -> list[str]:
    """Every file and symlink in the guest workspace, its top ``.git`` aside."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (dirpath == str(root) and d == ".git")]
        found += [os.path.relpath(os.path.join(dirpath, n), root) for n in filenames]
    return sorted(found)


@pytest.fixture
def worked_on(tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any) -> Path:
    """A repo with uncommitted work shipped into ``work``; then a commit and more edits in the "guest"."""
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n", "lib.py": "lib\n", ".gitignore": "*.log\n"})
    (repo / "app.py").write_text("v1 + host edit\n")
    (repo / "debug.log").write_text("ignored\n")
    ship(repo, shell)
    guest = shell.sandbox / "work"
    shell.env.update(IDENTITY)
    (guest / "lib.py").write_text("lib changed in the guest\n")
    guest_git(shell, "commit", "-q", "-am", "guest commit")
    (guest / "app.py").write_text("uncommitted guest edit\n")
    (guest / "new.py").write_text("new in the guest\n")
    (guest / "build.log").write_text("ignored in the guest\n")
    return repo


def guest_git(shell: Any, *args: str) -> str:
    result = shell.run(["git", "-C", "work", *args])
    assert result.returncode == 0, result.stderr
    return str(result.stdout.decode())


def test_the_workspace_holds_exactly_the_tracked_files(
    tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any
) -> None:
    # Regression: the sync manifest used to sit in the workspace as .banger-sync-manifest.
    repo = make_repo(tmp_path / "repo", {"a.txt": "a", "dir/b.txt": "b", ".gitignore": "*.o\n"})
    (repo / "x.o").write_text("ignored")
    (repo / "untracked.txt").write_text("untracked")
    syncer = GitSyncer()
    for incremental in (False, True, True):
        plan = syncer.plan(repo, WorkspaceOptions())
        syncer.sync(plan, shell, "work", RecordingProgress(), incremental=incremental)
        tracked = sorted(p for p in git(repo, "ls-files", "-z").split("\0") if p)
        assert workspace_files(shell.sandbox / "work") == tracked
        assert guest_git(shell, "status", "--porcelain", "--untracked-files=all") == ""


def test_the_guest_workspace_is_a_checkout_of_what_was_shipped(
    tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n", "gone.py": "g\n", "lib.py": "l\n", ".gitignore": "*.log\n"})
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "app.py").write_text("edited, not staged\n")
    (repo / "lib.py").write_text("edited and staged\n")
    (repo / "added.py").write_text("staged new file\n")
    git(repo, "add", "lib.py", "added.py")
    git(repo, "rm", "-q", "gone.py")
    (repo / "debug.log").write_text("ignored\n")
    ship(repo, shell)

    assert guest_git(shell, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert guest_git(shell, "symbolic-ref", "HEAD") == "refs/heads/feature\n"
    assert guest_git(shell, "status", "--porcelain") == git(repo, "status", "--porcelain")
    assert guest_git(shell, "diff") == git(repo, "diff")
    assert guest_git(shell, "diff", "--cached") == git(repo, "diff", "--cached")
    assert not (shell.sandbox / "work" / "debug.log").exists()


def test_a_detached_head_stays_detached_and_a_tag_named_like_the_branch_is_no_trouble(
    tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    git(repo, "tag", "main")  # `git symbolic-ref --short HEAD` would now say "heads/main"
    ship(repo, shell, "on-branch")
    assert shell.run(["git", "-C", "on-branch", "symbolic-ref", "HEAD"]).stdout == b"refs/heads/main\n"
    git(repo, "checkout", "-q", "--detach")
    ship(repo, shell, "detached")
    assert shell.run(["git", "-C", "detached", "symbolic-ref", "-q", "HEAD"]).returncode == 1
    assert shell.run(["git", "-C", "detached", "rev-parse", "HEAD"]).stdout.decode() == git(repo, "rev-parse", "HEAD")


def test_a_shipped_ref_is_a_clean_checkout(tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "b").write_text("2")
    git(repo, "add", "b")
    git(repo, "commit", "-q", "-m", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "a").write_text("uncommitted, not shipped with a ref")
    ship(repo, shell, ref="other")
    assert guest_git(shell, "rev-parse", "HEAD") == git(repo, "rev-parse", "other")
    assert guest_git(shell, "symbolic-ref", "HEAD") == "refs/heads/other\n"
    assert guest_git(shell, "status", "--porcelain") == ""


def test_pull_brings_commits_and_uncommitted_changes_back_without_touching_the_checkout(
    worked_on: Path, git: Git, shell: Any
) -> None:
    repo = worked_on
    before = host_state(repo, git)
    progress = RecordingProgress()
    result = pull_workspace(repo, shell, "work", "banger/vm1", progress)

    assert host_state(repo, git) == before
    assert result.commits == 2 and result.uncommitted
    assert git(repo, "log", "--format=%s", "main..banger/vm1").splitlines() == [
        "banger: uncommitted changes in work",
        "guest commit",
    ]
    assert git(repo, "show", "banger/vm1:app.py") == "uncommitted guest edit\n"
    assert git(repo, "show", "banger/vm1:new.py") == "new in the guest\n"
    assert git(repo, "show", "banger/vm1~1:lib.py") == "lib changed in the guest\n"
    assert "build.log" not in git(repo, "ls-tree", "-r", "--name-only", "banger/vm1")
    # The guest's own checkout is untouched too: its uncommitted edit is still uncommitted.
    assert guest_git(shell, "status", "--porcelain") == " M app.py\n?? new.py\n"
    # Pulling again changes nothing.
    again = pull_workspace(repo, shell, "work", "banger/vm1", progress)
    assert again.summary().startswith("branch banger/vm1 is already at ")
    assert host_state(repo, git) == before
    # More uncommitted work in the guest: the new snapshot replaces the old one, which is kept as a backup.
    (shell.sandbox / "work" / "app.py").write_text("more guest work\n")
    third = pull_workspace(repo, shell, "work", "banger/vm1", progress)
    assert git(repo, "show", "banger/vm1:app.py") == "more guest work\n"
    assert third.backup == f"refs/banger/backup/banger/vm1/{result.tip}"
    assert host_state(repo, git) == before


def test_diff_shows_the_guest_work_against_what_was_shipped(worked_on: Path, git: Git, shell: Any) -> None:
    before = host_state(worked_on, git)
    patch = diff_workspace(worked_on, shell, "work", RecordingProgress()).decode()
    assert "+uncommitted guest edit" in patch and "+lib changed in the guest" in patch and "+new in the guest" in patch
    assert "build.log" not in patch
    assert host_state(worked_on, git) == before
    assert "banger/" not in git(worked_on, "branch", "--list")


def test_an_unrelated_existing_branch_is_refused_then_forced_with_a_backup(
    worked_on: Path, git: Git, shell: Any
) -> None:
    repo = worked_on
    git(repo, "branch", "banger/vm1", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "host moved on")
    git(repo, "branch", "-f", "banger/vm1", "HEAD")  # not an ancestor of the guest's work
    old = git(repo, "rev-parse", "banger/vm1").strip()
    before = host_state(repo, git)
    with pytest.raises(ValueError) as info:
        pull_workspace(repo, shell, "work", "banger/vm1", RecordingProgress())
    assert str(info.value) == (
        "branch banger/vm1 exists and is not an ancestor of the guest's work: pass --branch OTHER, "
        "or --force to move it (its current tip is then kept under refs/banger/backup/)"
    )
    assert host_state(repo, git) == before

    result = pull_workspace(repo, shell, "work", "banger/vm1", RecordingProgress(), force=True)
    assert result.backup == f"refs/banger/backup/banger/vm1/{old}"
    assert git(repo, "rev-parse", result.backup).strip() == old
    assert git(repo, "show", "banger/vm1:app.py") == "uncommitted guest edit\n"


def test_a_fast_forward_of_an_existing_branch_is_fine(worked_on: Path, git: Git, shell: Any) -> None:
    shipped = git(worked_on, "rev-parse", "HEAD").strip()
    git(worked_on, "branch", "banger/vm1", shipped)
    result = pull_workspace(worked_on, shell, "work", "banger/vm1", RecordingProgress())
    assert result.previous == shipped and result.backup is None


@pytest.mark.parametrize(
    ("branch", "message"),
    [
        ("main", "branch main is checked out in {repo}: pass --branch with another name"),
        ("bad..name", "'bad..name' is not a valid branch name: pass --branch NAME such as banger/my-vm"),
        ("-f", "'-f' is not a valid branch name: pass --branch NAME such as banger/my-vm"),
        ("a b", "'a b' is not a valid branch name: pass --branch NAME such as banger/my-vm"),
    ],
)
def test_bad_target_branches_are_refused(worked_on: Path, git: Git, shell: Any, branch: str, message: str) -> None:
    before = host_state(worked_on, git)
    with pytest.raises(ValueError) as info:
        pull_workspace(worked_on, shell, "work", branch, RecordingProgress())
    assert str(info.value) == message.format(repo=worked_on)
    assert host_state(worked_on, git) == before


def test_a_branch_checked_out_in_another_worktree_is_refused(
    worked_on: Path, git: Git, shell: Any, tmp_path: Path
) -> None:
    git(worked_on, "worktree", "add", "-q", "-b", "banger/vm1", str(tmp_path / "wt"))
    with pytest.raises(ValueError, match=r"^branch banger/vm1 is checked out in "):
        pull_workspace(worked_on, shell, "work", "banger/vm1", RecordingProgress())


def test_pulling_into_another_repository_is_refused(
    worked_on: Path, git: Git, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    other = make_repo(tmp_path / "other", {"x": "unrelated"})
    before = host_state(other, git)
    with pytest.raises(ValueError, match=r"^the work in work builds on commit [0-9a-f]{12}, which .* does not have"):
        pull_workspace(other, shell, "work", "banger/vm1", RecordingProgress())
    assert host_state(other, git) == before


def test_nothing_to_pull(tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    ship(repo, shell)
    result = pull_workspace(repo, shell, "work", "banger/vm1", RecordingProgress())
    assert result.tip is None
    assert "banger/vm1" not in git(repo, "branch", "--list")


def test_a_subdirectory_workspace_has_no_history_and_cannot_be_pulled(
    tmp_path: Path, make_repo: MakeRepo, shell: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"sub/a": "1"})
    progress = ship(repo / "sub", shell)
    assert "work is a subdirectory of its repository: shipped as plain files, without git history" in progress.lines
    assert not (shell.sandbox / "work" / ".git").exists()
    with pytest.raises(ValueError, match=r"is a subdirectory of .*: only a workspace shipped from the top"):
        pull_workspace(repo / "sub", shell, "work", "banger/vm1", RecordingProgress())


def test_a_resync_keeps_guest_commits_and_says_so(worked_on: Path, git: Git, shell: Any) -> None:
    guest_head = guest_git(shell, "rev-parse", "HEAD")
    progress = ship(worked_on, shell)
    assert guest_git(shell, "rev-parse", "HEAD") == guest_head
    assert any("has commits made in the guest" in line for line in progress.lines)


def test_a_resync_follows_the_host_when_the_guest_did_not_commit(
    tmp_path: Path, make_repo: MakeRepo, git: Git, shell: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    ship(repo, shell)
    (repo / "a").write_text("2")
    git(repo, "commit", "-q", "-am", "second")
    ship(repo, shell)
    assert guest_git(shell, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert guest_git(shell, "status", "--porcelain") == ""


class HostileShell:
    """A guest whose export answer is ``answer`` (everything else runs for real)."""

    def __init__(self, inner: Any, answer: bytes) -> None:
        self.inner = inner
        self.answer = answer

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
        stdout: IO[bytes] | None = None,
    ) -> GuestResult:
        assert argv[3] == "banger-export" and stdout is not None
        try:
            stdout.write(self.answer)
        except BrokenPipeError:
            pass  # the host stopped reading: it had enough
        return GuestResult(0, b"", b"")


def _real_answer(shell: Any) -> bytes:
    return subprocess.run(
        ["sh", "-c", roundtrip.guest.EXPORT_SCRIPT, "x", "work", "msg"],
        cwd=shell.sandbox,
        capture_output=True,
        env={**os.environ, **shell.env},
        check=True,
    ).stdout


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda a: b"garbage\n" + a, "the guest answered with a malformed header: nothing was changed on the host"),
        (lambda a: a.replace(b"banger-pull 1\n", b"banger-pull 1\n../../etc\n", 1), "malformed header"),
        (lambda a: a[: a.index(b"PACK") + 20], "git refused the guest's objects"),
        (
            lambda a: a.replace(b"\n", b"\n", 3).replace(a.split(b"\n")[3], b"f" * 40, 1),
            "does not hold the commit its header names",
        ),
    ],
    ids=["no header", "path in header", "truncated pack", "tip not in bundle"],
)
def test_a_hostile_guest_changes_nothing_on_the_host(
    worked_on: Path, git: Git, shell: Any, forge: Callable[[bytes], bytes], message: str
) -> None:
    answer = forge(_real_answer(shell))
    before = host_state(worked_on, git)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pull_workspace(worked_on, HostileShell(shell, answer), "work", "banger/vm1", RecordingProgress())
    assert host_state(worked_on, git) == before


def test_a_guest_sending_too_much_is_cut_off(
    worked_on: Path, git: Git, shell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roundtrip, "BUNDLE_LIMIT", 1000)
    answer = _real_answer(shell) + os.urandom(1 << 20)
    before = host_state(worked_on, git)
    with pytest.raises(ValueError, match=r"^the guest sent more than"):
        pull_workspace(worked_on, HostileShell(shell, answer), "work", "banger/vm1", RecordingProgress())
    assert host_state(worked_on, git) == before


def test_the_git_syncer_offers_the_round_trip() -> None:
    assert isinstance(GitSyncer(), WorkspaceRoundTrip)
