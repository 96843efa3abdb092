"""GitSyncer.sync through a real tar pipeline: LocalShell runs the guest side (sh, tar, find) here."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from banger_core.testing import RecordingProgress
from banger_git.entries import MANIFEST_NAME
from banger_git.guest import manifest_path
from banger_git.manifest import encode_manifest
from banger_git.syncer import GitSyncer, WorkspaceSyncError
from banger_git.tarstream import SENDFILE_BYTES
from banger_hookspecs import GuestResult, GuestShell, WorkspaceOptions, WorkspacePlan

pytestmark = pytest.mark.unit

Git = Callable[..., str]
MakeRepo = Callable[[Path, dict[str, bytes | str]], Path]
Write = Callable[[Path, dict[str, bytes | str]], None]
Tree = Callable[[Path], dict[str, tuple[str, int, bytes]]]

WEIRD = {
    "with space.txt": "space",
    "new\nline": "newline",
    "ünïcødé/文件.txt": "unicode",
    "-leading-dash": "dash",
    "tab\tand 'quotes\" $(x)": "shell",
    "d" * 60 + "/" + "n" * 120: "long name",
}


@pytest.fixture
def syncer() -> GitSyncer:
    return GitSyncer()


def sync(
    syncer: GitSyncer,
    path: Path,
    shell: GuestShell,
    guest: str = "work",
    *,
    incremental: bool = False,
    **options: Any,
) -> tuple[int, RecordingProgress, WorkspacePlan]:
    plan = syncer.plan(path, WorkspaceOptions(**options))
    progress = RecordingProgress()
    sent = syncer.sync(plan, shell, guest, progress, incremental=incremental)
    return sent, progress, plan


def shipped(tree: Tree, root: Path) -> dict[str, tuple[str, int, bytes]]:
    """The workspace's files, without the ``.git`` the history step makes."""
    return {path: value for path, value in tree(root).items() if not path.startswith(".git/")}


def test_sync_is_isomorphic_to_the_plan(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git, tree: Tree
) -> None:
    big = os.urandom(SENDFILE_BYTES * 3 + 17)
    repo = make_repo(
        tmp_path / "repo",
        {**WEIRD, "empty": "", "block": b"x" * 512, "big.bin": big, "dir/deeper/f": "f"},
    )
    os.symlink("dir/deeper/f", repo / "link")
    os.symlink("deeper", repo / "dir" / "dirlink")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    sent, _, plan = sync(syncer, repo, shell)

    assert sent == len(plan.files) == len(WEIRD) + 6
    guest = shell.sandbox / "work"
    assert shipped(tree, guest) == {p: v for p, v in tree(repo).items() if not p.startswith(".git/")}
    assert os.readlink(guest / "link") == "dir/deeper/f"
    assert (guest / "big.bin").read_bytes() == big
    assert len(shell.calls) == 2, "a full sync is one guest command for the files, one for git"


def test_progress_reports_files_and_bytes(syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {f"f{i}": os.urandom(300_000) for i in range(8)})
    _, progress, plan = sync(syncer, repo, shell)
    assert progress.steps == ["sending 8 files (2.4 MB) to work"]
    done = [d for d, _, _ in progress.advances]
    assert done == sorted(done)
    total = progress.advances[-1][1]
    assert total is not None and total >= plan.total_bytes
    assert progress.advances[-1] == (total, total, "B")
    assert {unit for _, _, unit in progress.advances} == {"B"}
    assert progress.lines[-1] == "sent 8 files to work"


def test_modes_are_kept(syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"run.sh": "#!/bin/sh\n", "private": "p", "shared": "s"})
    (repo / "run.sh").chmod(0o755)
    (repo / "private").chmod(0o600)
    (repo / "shared").chmod(0o664)
    sync(syncer, repo, shell)
    guest = shell.sandbox / "work"
    assert {name: stat.S_IMODE((guest / name).stat().st_mode) for name in ("run.sh", "private", "shared")} == {
        "run.sh": 0o755,
        "private": 0o600,
        "shared": 0o664,
    }


def test_escaping_symlinks_are_not_shipped(syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    os.symlink("/etc/passwd", repo / "abs")
    os.symlink("../../x", repo / "up")
    os.symlink("a", repo / "ok")
    _, progress, _ = sync(syncer, repo, shell, include_untracked=True)
    guest = shell.sandbox / "work"
    assert sorted(os.listdir(guest)) == [".git", "a", "ok"]
    assert (
        progress.lines[0]
        == "symlinks pointing outside the workspace are not shipped: abs -> /etc/passwd, up -> ../../x"
    )


def test_ref_content_comes_from_git_objects(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git, tree: Tree
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "v1", "tool": "#!/bin/sh\n", "big": os.urandom(600_000)})
    (repo / "tool").chmod(0o755)
    os.symlink("app.py", repo / "alias")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec bit and link")
    committed = tree(repo)
    git(repo, "checkout", "-q", "-b", "next")
    (repo / "app.py").write_text("v2 on a branch")
    (repo / "only-next").write_text("n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "next")
    git(repo, "checkout", "-q", "main")
    (repo / "app.py").write_text("uncommitted edit")
    (repo / "tool").chmod(0o700)

    sync(syncer, repo, shell, "main", ref="main")
    main = shipped(tree, shell.sandbox / "main")
    assert main == {p: v for p, v in committed.items() if not p.startswith(".git/")}
    assert main["tool"][1] == 0o755  # git's mode, not the working tree's 0700

    sync(syncer, repo, shell, "next", ref="next")
    nxt = shipped(tree, shell.sandbox / "next")
    assert nxt["app.py"][2] == b"v2 on a branch"
    assert "only-next" in nxt


def test_submodule_content_is_shipped(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.c": "int lib;", "inc/lib.h": "#pragma once"})
    repo = make_repo(tmp_path / "repo", {"main.c": "int main;"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "submodule")
    sync(syncer, repo, shell, "wt")
    sync(syncer, repo, shell, "ref", ref="HEAD")
    for name in ("wt", "ref"):
        guest = shell.sandbox / name
        assert (guest / "vendor/lib/lib.c").read_text() == "int lib;"
        assert (guest / "vendor/lib/inc/lib.h").read_text() == "#pragma once"
        assert not (guest / "vendor/lib/.git").exists()


def test_incremental_sends_only_changes(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, tree: Tree
) -> None:
    repo = make_repo(tmp_path / "repo", {f"src/m{i}.py": f"module {i}" for i in range(20)})
    sent, _, _ = sync(syncer, repo, shell, incremental=True)
    assert sent == 20
    assert len(shell.calls) == 3  # the state query, the stream, the history

    sent, progress, _ = sync(syncer, repo, shell, incremental=True)
    assert sent == 0
    assert progress.steps[-1] == "work is up to date (20 files)"
    assert len(shell.calls) == 5, "nothing to send: only the query and the history step ran"

    (repo / "src/m3.py").write_text("changed, same size!"[:8])
    (repo / "src/m7.py").write_text("module 7 grew")
    sent, progress, _ = sync(syncer, repo, shell, incremental=True)
    assert sent == 2
    assert progress.steps[-1] == "sending 2 of 20 files (21 B) to work"
    assert shipped(tree, shell.sandbox / "work") == {p: v for p, v in tree(repo).items() if not p.startswith(".git/")}


def test_incremental_sees_same_size_edits_within_a_second(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "aaaa"})
    sync(syncer, repo, shell, incremental=True)
    st = (repo / "f").stat()
    (repo / "f").write_text("bbbb")
    os.utime(repo / "f", ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same second, same size
    assert sync(syncer, repo, shell, incremental=True)[0] == 1
    assert (shell.sandbox / "work" / "f").read_text() == "bbbb"


def test_incremental_applies_deletions_but_keeps_user_files(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {"keep": "k", "old/only.txt": "o", "shared/gone.txt": "g", "shared/stays.txt": "s", "-rm me": "x"},
    )
    sync(syncer, repo, shell, incremental=True)
    guest = shell.sandbox / "work"
    (guest / "user-notes.txt").write_text("mine")
    (guest / "old" / "build.o").write_text("made in the guest")

    git(repo, "rm", "-q", "--", "old/only.txt", "shared/gone.txt", "-rm me")
    git(repo, "commit", "-q", "-m", "remove")
    (repo / "keep").unlink()  # deleted in the working tree only: gone from the plan too
    sent, progress, _ = sync(syncer, repo, shell, incremental=True)

    assert sent == 0
    assert progress.steps[-1] == "sending 0 of 1 file (0 B), deleting 4 to work"
    assert sorted(os.listdir(guest)) == sorted([".git", "user-notes.txt", "old", "shared"])
    assert os.listdir(guest / "old") == ["build.o"], "a directory with user files stays"
    assert os.listdir(guest / "shared") == ["stays.txt"]


def test_incremental_removes_emptied_directories(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    repo = make_repo(tmp_path / "repo", {"a/b/c/d.txt": "d", "top": "t"})
    sync(syncer, repo, shell, incremental=True)
    git(repo, "rm", "-q", "a/b/c/d.txt")
    sync(syncer, repo, shell, incremental=True)
    assert sorted(os.listdir(shell.sandbox / "work")) == [".git", "top"]


def test_incremental_file_becomes_directory_and_back(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git, tree: Tree
) -> None:
    repo = make_repo(tmp_path / "repo", {"thing": "a file"})
    sync(syncer, repo, shell, incremental=True)
    git(repo, "rm", "-q", "thing")
    (repo / "thing").mkdir()
    (repo / "thing" / "inner").write_text("now a dir")
    git(repo, "add", "-A")
    sync(syncer, repo, shell, incremental=True)
    assert (shell.sandbox / "work" / "thing" / "inner").read_text() == "now a dir"

    git(repo, "rm", "-q", "-r", "-f", "thing")
    (repo / "thing").write_text("a file again")
    git(repo, "add", "-A")
    sync(syncer, repo, shell, incremental=True)
    assert shipped(tree, shell.sandbox / "work") == {"thing": ("f", 0o644, b"a file again")}


def test_incremental_restores_files_edited_in_the_guest(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "host a", "b": "host b", "c": "host c"})
    sync(syncer, repo, shell, incremental=True)
    guest = shell.sandbox / "work"
    (guest / "a").write_text("guest edit")
    (guest / "b").unlink()
    (guest / "c").chmod(0o600)
    assert sync(syncer, repo, shell, incremental=True)[0] == 3
    assert [(guest / n).read_text() for n in "abc"] == ["host a", "host b", "host c"]


def test_incremental_between_refs(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git, tree: Tree
) -> None:
    repo = make_repo(tmp_path / "repo", {"same": "s", "edited": "v1", "dropped": "d"})
    git(repo, "checkout", "-q", "-b", "b2")
    (repo / "edited").write_text("v2")
    git(repo, "rm", "-q", "dropped")
    (repo / "added").write_text("a")
    git(repo, "add", "-A")
    # Another commit time: files keep their content identity across commits.
    git(repo, "commit", "-q", "-m", "b2", date="2001-02-03T04:05:06Z")
    git(repo, "checkout", "-q", "main")

    assert sync(syncer, repo, shell, incremental=True, ref="main")[0] == 3
    sent, progress, _ = sync(syncer, repo, shell, incremental=True, ref="b2")
    assert sent == 2
    assert progress.steps[-1] == "sending 2 of 3 files (3 B), deleting 1 to work"
    assert shipped(tree, shell.sandbox / "work") == {
        "same": ("f", 0o644, b"s"),
        "edited": ("f", 0o644, b"v2"),
        "added": ("f", 0o644, b"a"),
    }
    assert sync(syncer, repo, shell, incremental=True, ref="b2")[0] == 0
    assert sync(syncer, repo, shell, incremental=True, ref="main")[0] == 2  # "edited" and "dropped"
    # From a ref to the working tree: the stamps differ, so everything is sent again.
    assert sync(syncer, repo, shell, incremental=True)[0] == 3


def test_incremental_without_gnu_find_sends_everything_but_still_deletes(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "find").write_text("#!/bin/sh\necho 'find: unrecognized: -printf' >&2\nexit 1\n")
    (fake_bin / "find").chmod(0o755)
    shell.path = f"{fake_bin}:/usr/bin:/bin"
    repo = make_repo(tmp_path / "repo", {"a": "1", "b": "2"})
    sync(syncer, repo, shell, incremental=True)
    git(repo, "rm", "-q", "b")
    sent, progress, _ = sync(syncer, repo, shell, incremental=True)
    assert sent == 1
    assert "the guest has no GNU find to compare files with: sending every file" in progress.lines
    assert sorted(os.listdir(shell.sandbox / "work")) == [".git", "a"]


class ForgingShell:
    """A guest that lies: its state answer is ``answer``; the sync stream is captured, then extracted for real."""

    def __init__(self, inner: Any, answer: bytes) -> None:
        self.inner = inner
        self.answer = answer
        self.stream = b""

    def run(
        self, argv: Sequence[str], *, stdin: bytes | IO[bytes] | None = None, timeout: float | None = None
    ) -> GuestResult:
        if argv[3] == "banger-query":
            assert isinstance(stdin, bytes)
            return GuestResult(0, self.answer, b"")
        if argv[3] == "banger-history":
            result: GuestResult = self.inner.run(argv, stdin=stdin)
            return result
        assert stdin is not None and not isinstance(stdin, bytes)
        self.stream = stdin.read()
        extracted: GuestResult = self.inner.run(argv, stdin=self.stream)
        return extracted


def members(stream: bytes) -> tuple[list[bytes], list[str]]:
    """The delete list and the tar member names of a sync stream."""
    count, _, rest = stream.partition(b"\n")
    deletions = [p for p in rest[: int(count)].split(b"\0") if p]
    with tarfile.open(fileobj=io.BytesIO(rest[int(count) :]), mode="r|") as archive:
        return deletions, [m.name for m in archive]


def test_a_lying_guest_cannot_make_the_host_send_other_files(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    (tmp_path / "host-secret").write_text("never leaves the host")
    repo = make_repo(tmp_path / "repo", {"a": "1", "b": "2"})
    (repo / "untracked").write_text("not in the plan")
    stats = b"".join(
        name + b"\x00f\x00644\x00" + b"1\0" + b"0.0\0\0"
        for name in (b"./../host-secret", b"/etc/shadow", b"./untracked")
    )
    answer = b"present\n0\nstat\n" + stats
    forging = ForgingShell(shell, answer)
    plan = syncer.plan(repo, WorkspaceOptions())
    assert syncer.sync(plan, forging, "work", RecordingProgress(), incremental=True) == 2
    deletions, names = members(forging.stream)
    assert deletions == []
    assert names == ["a", "b", MANIFEST_NAME]


def test_a_manifest_naming_paths_outside_the_guest_dir_is_ignored(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    sync(syncer, repo, shell, incremental=True)
    victim = shell.sandbox / "victim"
    victim.write_text("outside the workspace")
    forged = encode_manifest([]).replace(b"\0", b"\x00../victim\x00f\x00644\x00" + b"1\0" + b"1\0\0\0", 1)
    (shell.sandbox / manifest_path("work")).write_bytes(forged)
    sent, progress, _ = sync(syncer, repo, shell, incremental=True)
    assert victim.read_text() == "outside the workspace"
    assert sent == 1
    assert "the sync manifest in work is unreadable: sending every file and deleting nothing" in progress.lines


def test_a_file_deleted_after_planning_is_left_out(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1", "b": "2"})
    plan = syncer.plan(repo, WorkspaceOptions())
    (repo / "b").unlink()
    progress = RecordingProgress()
    assert syncer.sync(plan, shell, "work", progress) == 1
    assert "changed since planning: tracked files deleted in the working tree are not shipped: b" in progress.lines
    assert sorted(os.listdir(shell.sandbox / "work")) == [".git", "a"]


def test_files_turned_symlinks_or_fifos_after_planning_are_rechecked(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1", "was-file": "2", "fifo": "3"})
    os.symlink("a", repo / "link")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "link")
    plan = syncer.plan(repo, WorkspaceOptions())
    assert plan.files == ("a", "fifo", "link", "was-file")
    (repo / "link").unlink()
    os.symlink("/etc/passwd", repo / "link")
    (repo / "was-file").unlink()
    os.symlink("a", repo / "was-file")
    (repo / "fifo").unlink()
    os.mkfifo(repo / "fifo")  # opening it for reading must not block the sync
    progress = RecordingProgress()
    assert syncer.sync(plan, shell, "work", progress) == 2
    guest = shell.sandbox / "work"
    assert sorted(os.listdir(guest)) == [".git", "a", "was-file"]
    assert os.readlink(guest / "was-file") == "a"
    assert "changed since planning: symlinks pointing outside the workspace are not shipped: link -> /etc/passwd" in (
        progress.lines
    )
    assert "changed since planning: special files (fifos, sockets, devices) are not shipped: fifo" in progress.lines


def test_guest_failure_is_one_line_and_does_not_hang(
    syncer: GitSyncer, shell: Any, tmp_path: Path, make_repo: MakeRepo
) -> None:
    # More than the pipe holds, so the writer is blocked when the guest gives up.
    repo = make_repo(tmp_path / "repo", {"big": os.urandom(4 << 20), "small": "s"})
    (shell.sandbox / "a-file").write_text("not a directory")
    with pytest.raises(WorkspaceSyncError) as info:
        sync(syncer, repo, shell, "a-file/work")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("copying the workspace into a-file/work failed in the guest (exit 1): ")
    assert "Not a directory" in message or "File exists" in message


def test_guest_query_failure_is_reported(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    class Refusing:
        def run(self, argv: Sequence[str], **kwargs: object) -> GuestResult:
            return GuestResult(255, b"", b"ssh: connect to host 10.0.0.2 port 22: Connection refused\n")

    repo = make_repo(tmp_path / "repo", {"a": "1"})
    plan = GitSyncer().plan(repo, WorkspaceOptions())
    with pytest.raises(WorkspaceSyncError, match=r"^could not inspect work in the guest \(exit 255\): ssh: connect"):
        GitSyncer().sync(plan, Refusing(), "work", RecordingProgress(), incremental=True)
