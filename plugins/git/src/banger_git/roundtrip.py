"""Bringing work done in the guest back into the host repository, without touching its checkout.

The guest packs what happened since banger shipped the workspace (its new
commits, plus its uncommitted changes as one more commit) into a git bundle
that needs only the shipped commit, and streams it back over the guest shell.
The host reads at most :data:`BUNDLE_LIMIT` bytes of it, lets ``git fetch``
check it (``fsckObjects``) into the object store without writing any ref, and
then moves one branch with ``git update-ref``: never the checked-out branch,
never the index or the working tree.

Everything the guest says is hostile: its header holds only object ids
(checked for shape, then against the bundle and the host's objects), the
branch name comes from the host user and is checked with ``git
check-ref-format``, and no path from the guest is ever used on the host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from banger_git import guest
from banger_git.gitcmd import GitError, first_line, git_binary, git_env, run_git
from banger_git.listing import find_workspace
from banger_hookspecs import GuestShell, Progress

#: The most bytes of bundle the host accepts from a guest.
BUNDLE_LIMIT = 2 << 30
HEADER = b"banger-pull 1"
PULL_REF = "refs/banger/pull"
BACKUP_PREFIX = "refs/banger/backup/"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
#: Subject of the commit holding the guest's uncommitted changes.
WIP_SUBJECT = "banger: uncommitted changes in "
_OID_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})?$")
#: git config that keeps a fetch from running anything or cleaning up behind our back.
_SAFE_FETCH = (
    "-c",
    "fetch.fsckObjects=true",
    "-c",
    "transfer.fsckObjects=true",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "core.hooksPath=/dev/null",
)


@dataclass(frozen=True)
class GuestWork:
    """What the guest reported: the shipped commit, its HEAD, and the tip carrying its uncommitted changes."""

    base: str | None
    head: str | None
    tip: str | None

    @property
    def has_uncommitted(self) -> bool:
        return self.tip is not None and self.tip != self.head

    @property
    def is_empty(self) -> bool:
        return self.tip is None or self.tip == self.base


@dataclass(frozen=True)
class PullResult:
    """Where the guest's work landed on the host."""

    branch: str
    tip: str | None
    commits: int
    uncommitted: bool
    previous: str | None = None
    backup: str | None = None

    def summary(self) -> str:
        if self.tip is None:
            return "nothing to pull: the guest has no commits or changes since the workspace was shipped"
        what = f"{self.commits} commit{'s' if self.commits != 1 else ''}"
        if self.uncommitted:
            what += " (the last one holds the guest's uncommitted changes)"
        text = f"branch {self.branch} is at {self.tip[:12]}: {what}"
        if self.previous == self.tip:
            text = f"branch {self.branch} is already at {self.tip[:12]}: nothing new"
        if self.backup:
            text += f"; its previous tip is kept as {self.backup}"
        return text


def _oid(token: bytes) -> str | None:
    text = token.decode("ascii", "replace")
    if not _OID_RE.match(text):
        raise ValueError("the guest answered with a malformed header: nothing was changed on the host")
    return text or None


def parse_header(data: bytes) -> tuple[GuestWork, int]:
    """The guest's header and where the bundle starts, or ``ValueError``."""
    lines = data.split(b"\n", 4)
    if len(lines) < 5 or lines[0] != HEADER:
        raise ValueError("the guest answered with a malformed header: nothing was changed on the host")
    work = GuestWork(_oid(lines[1]), _oid(lines[2]), _oid(lines[3]))
    return work, len(data) - len(lines[4])


def check_branch(top: Path, branch: str) -> str:
    """``refs/heads/<branch>`` once git accepts it as a branch name, or ``ValueError``."""
    ref = f"refs/heads/{branch}"
    ok = (
        branch
        and not branch.startswith("-")
        and "\0" not in branch
        and subprocess.run(
            [git_binary(), "-C", str(top), "check-ref-format", ref],
            capture_output=True,
            env=git_env(),
            check=False,
        ).returncode
        == 0
    )
    if not ok:
        raise ValueError(f"{branch!r} is not a valid branch name: pass --branch NAME such as banger/my-vm")
    return ref


def _checked_out(top: Path) -> set[str]:
    """Branches checked out in any worktree of the repository."""
    out = run_git(top, "worktree", "list", "--porcelain", "-z", what="listing worktrees")
    return {os.fsdecode(f[len(b"branch ") :]) for f in out.split(b"\0") if f.startswith(b"branch ")}


def _resolve(top: Path, ref: str) -> str | None:
    try:
        out = run_git(top, "rev-parse", "-q", "--verify", "--end-of-options", ref, what="resolving")
    except GitError:
        return None
    return out.decode("ascii").strip() or None


def _is_ancestor(top: Path, older: str, newer: str) -> bool:
    return (
        subprocess.run(
            [git_binary(), "-C", str(top), "merge-base", "--is-ancestor", older, newer],
            capture_output=True,
            env=git_env(),
            check=False,
        ).returncode
        == 0
    )


def _commit_fields(top: Path, commit: str) -> tuple[str, str, str]:
    """(tree, parents, subject) of ``commit``."""
    out = run_git(top, "show", "-s", "--format=%T%x00%P%x00%s", commit, "--", what="reading a commit")
    tree, parents, subject = out.decode("utf-8", "replace").rstrip("\n").split("\0", 2)
    return tree, parents, subject


def _same_snapshot(top: Path, previous: str, tip: str) -> bool:
    """True when ``previous`` holds what ``tip`` holds (a re-pull rebuilt the same uncommitted-changes commit)."""
    return _commit_fields(top, previous)[:2] == _commit_fields(top, tip)[:2]


def _is_earlier_snapshot(top: Path, previous: str, tip: str) -> bool:
    """True when ``previous`` is an uncommitted-changes commit of an earlier pull whose base ``tip`` builds on.

    Replacing it loses nothing the guest does not still have; its tip is kept
    under ``refs/banger/backup/`` all the same.
    """
    _, parents, subject = _commit_fields(top, previous)
    return subject.startswith(WIP_SUBJECT) and all(_is_ancestor(top, parent, tip) for parent in parents.split())


@contextmanager
def fetch_guest_work(top: Path, shell: GuestShell, guest_path: str, message: str) -> Iterator[GuestWork]:
    """Ask the guest for its work and put its objects into the host's object store (no ref changes)."""
    with tempfile.TemporaryDirectory(prefix="banger-pull-") as scratch:
        bundle = Path(scratch) / "work.bundle"
        data, returncode, stderr = _capped_run(shell, guest.export_argv(guest_path, message), bundle)
        if returncode != 0:
            raise ValueError(f"reading the work in {guest_path} failed in the guest: {first_line(stderr)}")
        work, offset = parse_header(data)
        if work.is_empty:
            yield work
            return
        _strip_header(bundle, offset)
        _fetch(top, bundle, work, guest_path)
        yield work


def _capped_run(shell: GuestShell, argv: list[str], dest: Path) -> tuple[bytes, int, bytes]:
    """Run ``argv`` with its stdout saved into ``dest`` up to :data:`BUNDLE_LIMIT` bytes (plus a header).

    Returns the first bytes of the output (the header), the exit code and stderr.
    """
    read_fd, write_fd = os.pipe()
    too_big: list[bool] = []
    head = bytearray()

    def drain() -> None:
        written = 0
        with os.fdopen(read_fd, "rb", buffering=0) as source, open(dest, "wb") as sink:
            while chunk := source.read(1 << 20):
                if len(head) < 4096:
                    head.extend(chunk[: 4096 - len(head)])
                written += len(chunk)
                if written > BUNDLE_LIMIT + 4096:
                    too_big.append(True)
                    return  # closing our end makes the guest's writer fail: the transfer stops
                sink.write(chunk)

    reader = threading.Thread(target=drain, name="banger-git-pull", daemon=True)
    reader.start()
    writer = os.fdopen(write_fd, "wb", buffering=0)
    try:
        result = shell.run(argv, stdout=writer)
    finally:
        writer.close()
        reader.join()
    if too_big:
        raise ValueError(
            f"the guest sent more than {BUNDLE_LIMIT >> 30} GiB of history: nothing was changed on the host"
        )
    return bytes(head), result.returncode, result.stderr


def _strip_header(bundle: Path, offset: int) -> None:
    """Drop the header so ``bundle`` is exactly the git bundle."""
    stripped = bundle.with_suffix(".git-bundle")
    with open(bundle, "rb") as source, open(stripped, "wb") as sink:
        source.seek(offset)
        shutil.copyfileobj(source, sink, 1 << 20)
    os.replace(stripped, bundle)


def _fetch(top: Path, bundle: Path, work: GuestWork, guest_path: str) -> None:
    assert work.tip is not None
    git = [git_binary(), "-C", str(top)]
    verify = subprocess.run(
        [*git, "bundle", "verify", "-q", str(bundle)], capture_output=True, env=git_env(), check=False
    )
    if verify.returncode != 0:
        if work.base is not None and _resolve(top, f"{work.base}^{{commit}}") is None:
            raise ValueError(
                f"the work in {guest_path} builds on commit {work.base[:12]}, which {top} does not have: "
                "pull into the repository it was shipped from"
            )
        raise ValueError(f"the guest's bundle is not valid: {first_line(verify.stderr)}; nothing was changed")
    heads = subprocess.run(
        [*git, "bundle", "list-heads", str(bundle)], capture_output=True, env=git_env(), check=False
    ).stdout
    if heads.split() != [work.tip.encode("ascii"), PULL_REF.encode("ascii")]:
        raise ValueError("the guest's bundle does not hold the commit its header names: nothing was changed")
    fetch = subprocess.run(
        [*git, *_SAFE_FETCH, "fetch", "-q", "--no-tags", "--no-write-fetch-head", str(bundle), PULL_REF],
        capture_output=True,
        env=git_env(),
        check=False,
    )
    if fetch.returncode != 0:
        raise ValueError(f"git refused the guest's objects: {first_line(fetch.stderr)}; nothing was changed")
    if _resolve(top, f"{work.tip}^{{commit}}") != work.tip:
        raise ValueError("the guest's bundle does not hold the commit its header names: nothing was changed")


def _top(path: Path) -> Path:
    workspace = find_workspace(path)
    if workspace.prefix:
        raise ValueError(
            f"{workspace.root} is a subdirectory of {workspace.top}: only a workspace shipped from the "
            "top of its repository is a git checkout in the guest"
        )
    return workspace.top


def pull_workspace(
    path: Path, shell: GuestShell, guest_path: str, branch: str, progress: Progress, *, force: bool = False
) -> PullResult:
    """Bring the guest's work into ``path``'s repository as ``branch``.

    The branch gets the guest's commits since the shipped one and, on top, one
    commit with its uncommitted changes. An existing branch moves only
    forward (or with ``force``, keeping its old tip under
    ``refs/banger/backup/``); a branch checked out in any worktree never moves.

    Raises:
        ValueError: one user sentence; nothing on the host was changed then.
    """
    top = _top(path)
    ref = check_branch(top, branch)
    if ref in _checked_out(top):
        raise ValueError(f"branch {branch} is checked out in {top}: pass --branch with another name")
    progress.step(f"fetching the work in {guest_path} from the guest")
    with fetch_guest_work(top, shell, guest_path, f"{WIP_SUBJECT}{guest_path}") as work:
        if work.is_empty:
            return PullResult(branch, None, 0, False)
        assert work.tip is not None
        span = work.tip if work.base is None else f"{work.base}..{work.tip}"
        commits = int(run_git(top, "rev-list", "--count", span, what="counting the guest's commits").strip())
        previous = _resolve(top, ref)
        backup = None
        if previous == work.tip or (previous is not None and _same_snapshot(top, previous, work.tip)):
            return PullResult(branch, previous, commits, work.has_uncommitted, previous)
        if previous is not None and not _is_ancestor(top, previous, work.tip):
            if not force and not _is_earlier_snapshot(top, previous, work.tip):
                raise ValueError(
                    f"branch {branch} exists and is not an ancestor of the guest's work: pass --branch OTHER, "
                    "or --force to move it (its current tip is then kept under refs/banger/backup/)"
                )
            backup = f"{BACKUP_PREFIX}{branch}/{previous}"
            message = "banger vm workspace pull --force: backup"
            run_git(top, "update-ref", "-m", message, backup, previous, what="backup")
        run_git(
            top,
            "update-ref",
            "-m",
            f"banger vm workspace pull from {guest_path}",
            ref,
            work.tip,
            previous or "",
            what=f"moving branch {branch}",
        )
        return PullResult(branch, work.tip, commits, work.has_uncommitted, previous, backup)


def diff_workspace(path: Path, shell: GuestShell, guest_path: str, progress: Progress) -> bytes:
    """The patch from the shipped commit to the guest's work (commits and uncommitted changes).

    The guest's objects land in the host's object store (unreferenced, so
    ``git gc`` drops them later); no ref, index or file changes.
    """
    top = _top(path)
    progress.step(f"fetching the work in {guest_path} from the guest")
    with fetch_guest_work(top, shell, guest_path, f"{WIP_SUBJECT}{guest_path}") as work:
        if work.is_empty:
            return b""
        assert work.tip is not None
        return run_git(
            top,
            "diff",
            "--no-ext-diff",
            "--no-textconv",
            "--no-color",
            work.base or EMPTY_TREE,
            work.tip,
            what="comparing the guest's work with what was shipped",
        )
