"""Making the guest workspace a git checkout of what was shipped.

After the files, the syncer sends the shipped commit (HEAD, or the planned
ref) with its tree, and the host's index, as one pack: in the guest that
commit is HEAD on the host's branch (a shallow history of one commit), and
the index is the host's, so ``git status`` and ``git diff`` there show
exactly the host's uncommitted changes. ``refs/banger/shipped`` records the
commit, the base that ``workspace pull`` and ``workspace diff`` compare
against.

Only a workspace at the top of its repository gets history: a subdirectory
is plain files, as git has no checkout of part of a tree.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from banger_git import guest
from banger_git.gitcmd import GitError, first_line, git_binary, git_env, run_git
from banger_git.listing import find_workspace
from banger_git.tarstream import stream_into, write_all
from banger_hookspecs import GuestShell, WorkspacePlan

GITLINK_PREFIX = b"160000 "
CHUNK = 1 << 20


@dataclass(frozen=True)
class HistoryState:
    """What the host ships as history.

    Attributes:
        commit: the commit that becomes HEAD, or None (a repository without commits).
        branch: the branch HEAD is on, or None (detached).
        index_info: ``git ls-files -s -z`` of the host's index (empty with ``index_from="tree"``).
        index_from: ``"index"`` (the host's index) or ``"tree"`` (the commit's tree: a shipped ref).
    """

    commit: str | None
    branch: str | None
    index_info: bytes
    index_from: str


def read_history(plan: WorkspacePlan) -> HistoryState | None:
    """The history to ship for ``plan``, or None for a workspace below its repository's top."""
    workspace = find_workspace(plan.root)
    if workspace.prefix:
        return None
    top = workspace.top
    if plan.revision is not None:
        ref = plan.options.ref or ""
        is_branch = _verify(top, f"refs/heads/{ref}") == plan.revision if ref else False
        return HistoryState(plan.revision, ref if is_branch else None, b"", "tree")
    commit = _verify(top, "HEAD")
    try:
        head_ref = run_git(top, "symbolic-ref", "-q", "HEAD", what="reading the current branch").strip()
    except GitError:
        head_ref = b""  # a detached HEAD
    # The full ref, not --short: that says "heads/x" when a tag x exists too.
    branch = os.fsdecode(head_ref).removeprefix("refs/heads/") if head_ref.startswith(b"refs/heads/") else None
    index_info = run_git(top, "ls-files", "-s", "-z", what="reading the index")
    return HistoryState(commit, branch, index_info, "index")


def _verify(top: Path, name: str) -> str | None:
    try:
        out = run_git(top, "rev-parse", "-q", "--verify", "--end-of-options", f"{name}^{{commit}}", what="resolving")
    except GitError:
        return None
    return out.decode("ascii").strip() or None


def _index_blobs(top: Path, index_info: bytes) -> list[bytes]:
    """The blob ids the index names that the repository has (intent-to-add entries name a missing one)."""
    ids = sorted(
        {
            record.split(b" ", 2)[1]
            for record in index_info.split(b"\0")
            if record and not record.startswith(GITLINK_PREFIX)
        }
    )
    if not ids:
        return []
    proc = subprocess.run(
        [git_binary(), "-C", str(top), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        input=b"\n".join(ids) + b"\n",
        capture_output=True,
        env=git_env(),
        check=False,
    )
    return [line.split(b" ")[0] for line in proc.stdout.splitlines() if line.endswith(b" blob")]


def ship_history(plan: WorkspacePlan, shell: GuestShell, guest_path: str) -> list[str]:
    """Make ``guest_path`` a git checkout of what ``plan`` ships; return what to tell the user.

    Runs while the files are being sent (it touches only ``.git``); a guest
    without git, or one that fails here, still gets the files, so problems are
    sentences to log, not errors.
    """
    history = read_history(plan)
    if history is None:
        return [f"{guest_path} is a subdirectory of its repository: shipped as plain files, without git history"]
    top = find_workspace(plan.root).top
    objects = [history.commit.encode("ascii")] if history.commit else []
    if history.commit:
        listed = run_git(top, "rev-list", "--objects", "--no-walk", history.commit, what="listing the shipped objects")
        objects = [line.split(b" ", 1)[0] for line in listed.splitlines() if line]
    objects += _index_blobs(top, history.index_info)

    def produce(out: int) -> None:
        write_all(out, f"{len(history.index_info)}\n".encode("ascii") + history.index_info)
        pack = subprocess.Popen(
            # Loose objects go uncompressed and without a delta search: on the way into a local VM
            # both cost more CPU than they save bytes (4-6x faster for 40 MB of loose objects);
            # objects already packed are copied as they are.
            [git_binary(), "-C", str(top), "-c", "pack.compression=0", "pack-objects", "--stdout", "-q", "--window=0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=git_env(),
        )
        assert pack.stdin is not None and pack.stdout is not None
        # pack-objects reads its whole list before it writes: no deadlock feeding it first.
        try:
            pack.stdin.write(b"".join(oid + b"\n" for oid in objects))
            pack.stdin.close()
            while chunk := pack.stdout.read(CHUNK):
                write_all(out, chunk)
        finally:
            pack.stdout.close()
            if pack.wait() != 0:
                raise OSError(f"git pack-objects failed in {top} (exit {pack.returncode})")

    argv = guest.history_argv(guest_path, history.commit, history.branch, history.index_from)
    result, _, error = stream_into(shell, argv, produce)
    answer = result.stdout.strip()
    if result.returncode != 0:
        return [
            f"{guest_path} has the files but no git history: the guest's git failed "
            f"(exit {result.returncode}): {first_line(result.stderr)}"
        ]
    if answer == b"nogit":
        return [f"{guest_path} has the files but no git history: the guest has no git (apt-get install git)"]
    if answer == b"kept":
        return [
            f"{guest_path} has commits made in the guest: its git HEAD and index were left as they are "
            "(`banger vm workspace pull` brings them back)"
        ]
    if error is not None and not isinstance(error, BrokenPipeError):
        return [f"{guest_path} has the files but no git history: packing objects failed: {error}"]
    return []
