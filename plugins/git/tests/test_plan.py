"""GitSyncer.claims and GitSyncer.plan on real repositories made in tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from banger_core.common.plugins import PluginManager
from banger_git.syncer import GitSyncer
from banger_hookspecs import PluginContext, WorkspaceOptions

pytestmark = pytest.mark.unit

Git = Callable[..., str]
MakeRepo = Callable[[Path, dict[str, bytes | str]], Path]
Write = Callable[[Path, dict[str, bytes | str]], None]

WEIRD_NAMES = {
    "with space.txt": "space",
    "new\nline": "newline",
    "ünïcødé/文件.txt": "unicode",
    "-leading-dash": "dash",
    "--": "double dash",
    "tab\tand 'quotes\" $(x)": "shell",
    "d" * 60 + "/" + "n" * 120: "long name",
}


def ls_files(git: Git, repo: Path, *args: str) -> list[str]:
    return sorted(p for p in git(repo, "ls-files", "-z", *args).split("\0") if p)


@pytest.fixture
def syncer() -> GitSyncer:
    return GitSyncer()


def test_banger_workspace_syncers_registers_git(plugin_manager: PluginManager, plugin_context: PluginContext) -> None:
    provided = plugin_manager.workspace_syncers()
    assert "git" in provided
    driver = provided["git"].value.factory(plugin_context)
    assert isinstance(driver, GitSyncer)


def test_claims_work_trees_only(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1", "sub/b": "2"})
    plain = tmp_path / "plain"
    plain.mkdir()
    assert syncer.claims(repo)
    assert syncer.claims(repo / "sub")
    assert not syncer.claims(plain)
    assert not syncer.claims(repo / "a")
    assert not syncer.claims(tmp_path / "missing")
    assert not syncer.claims(repo / ".git")


def test_tracked_files_match_git_ls_files(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    files = {f"dir{i % 3}/nested{i % 2}/file{i}.txt": f"content {i}" for i in range(40)}
    repo = make_repo(tmp_path / "repo", {**files, "top.md": "# top"})
    plan = syncer.plan(repo, WorkspaceOptions())
    assert list(plan.files) == ls_files(git, repo)
    assert len(plan.files) == 41
    assert plan.total_bytes == sum(len(c) for c in files.values()) + len("# top")
    assert plan.root == repo
    assert plan.revision is None
    assert plan.warnings == ()


def test_untracked_only_with_the_flag_and_ignored_never(
    syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, write: Write
) -> None:
    repo = make_repo(tmp_path / "repo", {"kept.py": "x", ".gitignore": "*.log\nbuild/\n"})
    write(repo, {"new.py": "n", "notes/todo.txt": "t", "debug.log": "l", "build/out.bin": "b"})
    (repo / ".git" / "info" / "exclude").write_text("secret.env\n")
    write(repo, {"secret.env": "TOKEN=1"})

    tracked = syncer.plan(repo, WorkspaceOptions())
    assert tracked.files == (".gitignore", "kept.py")

    with_untracked = syncer.plan(repo, WorkspaceOptions(include_untracked=True))
    assert with_untracked.files == (".gitignore", "kept.py", "new.py", "notes/todo.txt")


def test_weird_names_survive(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    repo = make_repo(tmp_path / "repo", WEIRD_NAMES)
    plan = syncer.plan(repo, WorkspaceOptions())
    assert sorted(plan.files) == sorted(WEIRD_NAMES)
    assert list(plan.files) == sorted(plan.files)


def test_non_utf8_name_survives(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"ok": "1"})
    raw = os.path.join(os.fsencode(repo), b"latin1-\xe9t\xe9")
    with open(raw, "wb") as fh:
        fh.write(b"bytes")
    plan = syncer.plan(repo, WorkspaceOptions(include_untracked=True))
    assert os.fsdecode(b"latin1-\xe9t\xe9") in plan.files


def test_deleted_tracked_file_is_skipped_and_said(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1", "gone.txt": "2"})
    (repo / "gone.txt").unlink()
    plan = syncer.plan(repo, WorkspaceOptions())
    assert plan.files == ("a",)
    assert plan.warnings == ("tracked files deleted in the working tree are not shipped: gone.txt",)


def test_symlinks_inside_kept_escaping_skipped(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"real/file": "x"})
    os.symlink("real/file", repo / "inside")
    os.symlink("../real", repo / "real" / "loop-dir")
    os.symlink("../outside", repo / "up")
    os.symlink("/etc/passwd", repo / "absolute")
    os.symlink(str(repo / "real" / "file"), repo / "absolute-but-in-repo")
    # Each link alone looks harmless; together "." + ".." leave the tree.
    os.symlink(".", repo / "here")
    os.symlink("here/..", repo / "sneaky")
    plan = syncer.plan(repo, WorkspaceOptions(include_untracked=True))
    assert plan.files == ("here", "inside", "real/file", "real/loop-dir")
    (warning,) = plan.warnings
    assert warning.startswith("symlinks pointing outside the workspace are not shipped: ")
    for name in ("up -> ../outside", "absolute -> /etc/passwd", "sneaky -> here/.."):
        assert name in warning


def test_symlinks_leaving_a_ref_through_other_symlinks_are_skipped(
    syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    repo = make_repo(tmp_path / "repo", {"d/f": "x"})
    os.symlink(".", repo / "here")
    os.symlink("here/..", repo / "sneaky")
    os.symlink("here/d/f", repo / "fine")
    os.symlink("loop-b", repo / "loop-a")
    os.symlink("loop-a", repo / "loop-b")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    plan = syncer.plan(repo, WorkspaceOptions(ref="HEAD"))
    assert plan.files == ("d/f", "fine", "here")
    assert plan.warnings == (
        "symlinks pointing outside the workspace are not shipped: loop-a -> loop-b, loop-b -> loop-a, "
        "sneaky -> here/..",
    )


def test_a_forged_tree_cannot_name_paths_outside(
    syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git
) -> None:
    repo = make_repo(tmp_path / "repo", {"ok": "fine"})
    blob = git(repo, "rev-parse", "HEAD:ok").strip()
    inner = subprocess.run(
        ["git", "-C", str(repo), "mktree"], input=f"100644 blob {blob}\tescape\n", capture_output=True, text=True
    ).stdout.strip()
    tree = subprocess.run(
        ["git", "-C", str(repo), "mktree"],
        input=f"040000 tree {inner}\t..\n100644 blob {blob}\tok\n",
        capture_output=True,
        text=True,
    ).stdout.strip()
    git(repo, "tag", "forged", git(repo, "commit-tree", tree, "-m", "forged").strip())
    plan = syncer.plan(repo, WorkspaceOptions(ref="forged"))
    assert plan.files == ("ok",)
    assert plan.warnings == ("paths with '..', '.' or empty components are not shipped: ../escape",)


def test_file_under_a_directory_turned_symlink_is_skipped(
    syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    repo = make_repo(tmp_path / "repo", {"conf/secret": "tracked", "keep": "k"})
    (repo / "conf" / "secret").unlink()
    (repo / "conf").rmdir()
    os.symlink(outside, repo / "conf")
    plan = syncer.plan(repo, WorkspaceOptions())
    assert plan.files == ("keep",)
    assert plan.warnings == ("files under a directory that is now a symlink are not shipped: conf/secret",)


def test_special_files_and_reserved_names_are_skipped(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {".banger-sync-manifest": "mine", "a": "1", "pipe": "was a file"})
    # git never lists an untracked fifo; a tracked file replaced by one is what can happen.
    (repo / "pipe").unlink()
    os.mkfifo(repo / "pipe")
    plan = syncer.plan(repo, WorkspaceOptions(include_untracked=True))
    assert plan.files == ("a",)
    assert sorted(plan.warnings) == [
        "names banger keeps for its sync manifest are not shipped: .banger-sync-manifest",
        "special files (fifos, sockets, devices) are not shipped: pipe",
    ]


def test_subdirectory_workspace(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    repo = make_repo(tmp_path / "repo", {"top": "t", "app/src/main.py": "m", "app/README": "r"})
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "app" / "added").write_text("new")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "add")
    git(repo, "checkout", "-q", "main")
    assert syncer.plan(repo / "app", WorkspaceOptions()).files == ("README", "src/main.py")
    assert syncer.plan(repo / "app", WorkspaceOptions(ref="other")).files == ("README", "added", "src/main.py")


def test_ref_lists_that_commit(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1", "b": "22"})
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "rm", "-q", "a")
    (repo / "c").write_text("333")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "feature")
    git(repo, "tag", "v1")
    git(repo, "checkout", "-q", "main")
    (repo / "untracked").write_text("u")

    plan = syncer.plan(repo, WorkspaceOptions(ref="feature"))
    assert plan.files == ("b", "c")
    assert plan.total_bytes == 5
    assert plan.revision == git(repo, "rev-parse", "feature").strip()
    assert syncer.plan(repo, WorkspaceOptions(ref="v1")).files == ("b", "c")
    assert syncer.plan(repo, WorkspaceOptions(ref=plan.revision[:10])).files == ("b", "c")
    assert syncer.plan(repo, WorkspaceOptions(ref="main")).files == ("a", "b")


def test_submodules_are_included(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.c": "int x;", "inc/lib.h": "#pragma once"})
    repo = make_repo(tmp_path / "repo", {"main.c": "int main;"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "submodule")
    expected = (".gitmodules", "main.c", "vendor/lib/inc/lib.h", "vendor/lib/lib.c")
    assert syncer.plan(repo, WorkspaceOptions()).files == expected
    assert syncer.plan(repo, WorkspaceOptions(ref="HEAD")).files == expected


def test_submodule_not_checked_out_is_said(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.c": "int x;"})
    repo = make_repo(tmp_path / "repo", {"main.c": "int main;"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    git(repo, "commit", "-q", "-m", "submodule")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    plan = syncer.plan(clone, WorkspaceOptions())
    assert plan.files == (".gitmodules", "main.c")
    assert plan.warnings == ("submodule lib is not checked out: run `git submodule update --init` to include it",)
    ref_plan = syncer.plan(clone, WorkspaceOptions(ref="HEAD"))
    assert ref_plan.files == (".gitmodules", "main.c")
    assert "run `git submodule update --init` to include it" in ref_plan.warnings[0]


def test_untracked_nested_repository_is_said(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    make_repo(repo / "nested", {"n": "2"})
    plan = syncer.plan(repo, WorkspaceOptions(include_untracked=True))
    assert plan.files == ("a",)
    assert plan.warnings == ("untracked nested repository nested/ is not shipped: add it as a submodule to include it",)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "missing", "does not exist: pass the directory of a git repository"),
        (lambda t: t / "file.txt", "is not a directory: pass the directory of a git repository"),
        (lambda t: t / "plain", "is not inside a git work tree: pass a git repository's directory, or run `git init`"),
        (lambda t: t / "repo" / ".git", "is not inside a git work tree"),
    ],
)
def test_bad_workspace_paths(
    syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, make: Callable[[Path], Path], message: str
) -> None:
    make_repo(tmp_path / "repo", {"a": "1"})
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError) as info:
        syncer.plan(make(tmp_path), WorkspaceOptions())
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no-such-branch", "unknown git ref 'no-such-branch' in "),
        ("deadbeef" * 5, "unknown git ref"),
        ("--output=/tmp/x", "invalid git ref '--output=/tmp/x': pass a branch, tag or commit name"),
        ("", "invalid git ref ''"),
        ("main\nHEAD", "invalid git ref"),
    ],
)
def test_bad_refs(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, ref: str, message: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    with pytest.raises(ValueError) as info:
        syncer.plan(repo, WorkspaceOptions(ref=ref))
    assert message in str(info.value)
    assert "\n" not in str(info.value).replace(repr(ref), "")


def test_ref_without_the_workspace_directory(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, git: Git) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "later").mkdir()
    (repo / "later" / "f").write_text("f")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "later")
    with pytest.raises(ValueError, match=f"does not exist in commit {first[:12]}"):
        syncer.plan(repo / "later", WorkspaceOptions(ref=first))


def test_untracked_with_ref_is_refused(syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1"})
    with pytest.raises(ValueError, match="include_untracked and ref do not mix"):
        syncer.plan(repo, WorkspaceOptions(include_untracked=True, ref="main"))


def test_git_environment_cannot_redirect_the_plan(
    syncer: GitSyncer, tmp_path: Path, make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", {"mine": "1"})
    other = make_repo(tmp_path / "other", {"theirs": "2"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert syncer.plan(repo, WorkspaceOptions()).files == ("mine",)
