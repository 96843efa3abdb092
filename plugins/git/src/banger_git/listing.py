"""Which files a workspace ships: the working tree's files or a ref's tracked tree.

Everything git prints is read NUL-separated and decoded with
:func:`os.fsdecode`, so names with spaces, newlines, leading dashes or bytes
that are not UTF-8 come through unchanged.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from banger_git.entries import (
    FILE,
    RESERVED_NAMES,
    SYMLINK,
    Entry,
    is_safe_relpath,
    summarize,
    symlink_stays_inside,
)
from banger_git.gitcmd import BlobReader, GitError, run_git

GITLINK_MODE = b"160000"
SYMLINK_MODE = b"120000"
EXECUTABLE_MODE = b"100755"


@dataclass
class Listing:
    """Entries found so far, and why others were left out (skip reason -> paths)."""

    entries: list[Entry] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)

    def warnings(self) -> list[str]:
        """One sentence per skip reason, then the notes."""
        return [summarize(reason, paths) for reason, paths in self.skipped.items()] + self.notes


DELETED = "tracked files deleted in the working tree are not shipped"
ESCAPING = "symlinks pointing outside the workspace are not shipped"
SPECIAL = "special files (fifos, sockets, devices) are not shipped"
UNDER_SYMLINK = "files under a directory that is now a symlink are not shipped"
RESERVED = "names banger keeps for its sync manifest are not shipped"
UNSAFE = "paths with '..', '.' or empty components are not shipped"


@dataclass(frozen=True)
class Workspace:
    """A workspace directory and where it sits in its repository.

    Attributes:
        root: the workspace directory (absolute).
        top: the repository's top-level directory.
        prefix: ``root`` relative to ``top`` with a trailing ``/``, or ``""``.
    """

    root: Path
    top: Path
    prefix: str


def find_workspace(path: Path) -> Workspace:
    """Check that ``path`` is a directory inside a git work tree and locate its repository.

    Raises:
        ValueError: one sentence saying what is wrong with ``path`` and what to do.
    """
    root = Path(os.path.abspath(path))
    if not root.exists():
        raise ValueError(f"workspace {root} does not exist: pass the directory of a git repository")
    if not root.is_dir():
        raise ValueError(f"workspace {root} is not a directory: pass the directory of a git repository")
    try:
        inside = run_git(root, "rev-parse", "--is-inside-work-tree", what="looking for the repository")
    except GitError:
        inside = b""
    if inside.strip() != b"true":
        raise ValueError(
            f"{root} is not inside a git work tree: pass a git repository's directory, or run `git init` there first"
        )
    out = run_git(root, "rev-parse", "--show-toplevel", "--show-prefix", what="looking for the repository")
    lines = out.split(b"\n")
    top = Path(os.fsdecode(lines[0]))
    prefix = os.fsdecode(lines[1]) if len(lines) > 1 else ""
    return Workspace(root=root, top=top, prefix=prefix)


def resolve_ref(workspace: Workspace, ref: str) -> str:
    """The commit id ``ref`` names, or a ``ValueError`` with the fix."""
    if not ref or ref.startswith("-") or any(ch in ref for ch in "\0\n"):
        raise ValueError(f"invalid git ref {ref!r}: pass a branch, tag or commit name")
    try:
        out = run_git(
            workspace.top,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{ref}^{{commit}}",
            what="resolving the ref",
        )
    except GitError:
        raise ValueError(
            f"unknown git ref {ref!r} in {workspace.top}: pass a branch, tag or commit "
            "(see `git branch -a`, `git tag`), or fetch it first"
        ) from None
    return out.decode("ascii").strip()


# --------------------------------------------------------------------------
# Working tree
# --------------------------------------------------------------------------


class WorktreeInspector:
    """Turns workspace-relative paths into entries by looking at the files on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Plain strings, not Path objects: this runs once per file.
        self.prefix = os.path.join(root, "")
        self.real_root = os.path.realpath(root)
        self._dir_ok: dict[str, bool] = {"": True}

    def dir_is_inside(self, rel_dir: str) -> bool:
        # A tracked file whose directory was replaced by a symlink would be
        # read through that symlink, possibly from anywhere on the host.
        ok = self._dir_ok.get(rel_dir)
        if ok is None:
            ok = os.path.realpath(self.root / rel_dir) == os.path.join(self.real_root, rel_dir)
            self._dir_ok[rel_dir] = ok
        return ok

    def precheck(self, rel: str, listing: Listing) -> bool:
        """The checks that need no system call per file; False after recording why ``rel`` is skipped."""
        if rel in RESERVED_NAMES:
            listing.skip(RESERVED, rel)
            return False
        if not is_safe_relpath(rel):
            listing.skip(UNSAFE, rel)
            return False
        if not self.dir_is_inside(os.path.dirname(rel)):
            listing.skip(UNDER_SYMLINK, rel)
            return False
        return True

    def inspect(self, rel: str, listing: Listing) -> Entry | None:
        """The entry for ``rel``, or None after recording in ``listing`` why it is skipped."""
        if not self.precheck(rel, listing):
            return None
        full = self.prefix + rel
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            listing.skip(DELETED, rel)
            return None
        if stat.S_ISREG(st.st_mode):
            mtime_ns = st.st_mtime_ns
            return Entry(rel, FILE, st.st_mode & 0o777, st.st_size, mtime_ns // 1_000_000_000, str(mtime_ns))
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            real = os.path.realpath(full)
            if not symlink_stays_inside(rel, target) or not (
                real == self.real_root or real.startswith(self.real_root + os.sep)
            ):
                listing.skip(ESCAPING, f"{rel} -> {target}")
                return None
            return Entry(rel, SYMLINK, 0o777, 0, st.st_mtime_ns // 1_000_000_000, "", target=target)
        listing.skip(SPECIAL, rel)
        return None


def _split_nul(output: bytes) -> list[bytes]:
    return [item for item in output.split(b"\0") if item]


def _worktree_paths(
    root: Path, include_untracked: bool, prefix: str, listing: Listing, inspector: WorktreeInspector
) -> list[str]:
    """Workspace-relative paths of ``root`` (a repository or submodule at ``prefix``)."""
    paths: list[str] = []
    seen: set[str] = set()
    staged = run_git(root, "ls-files", "-z", "--stage", what="listing tracked files")
    for item in _split_nul(staged):
        meta, _, raw_path = item.partition(b"\t")
        rel = prefix + os.fsdecode(raw_path)
        if rel in seen:  # a conflicted file has one entry per merge stage
            continue
        seen.add(rel)
        if meta.split(b" ", 1)[0] == GITLINK_MODE:
            _add_submodule_worktree(root / os.fsdecode(raw_path), rel, include_untracked, listing, inspector, paths)
        else:
            paths.append(rel)
    if include_untracked:
        others = run_git(root, "ls-files", "-z", "--others", "--exclude-standard", what="listing untracked files")
        for raw_path in _split_nul(others):
            rel = prefix + os.fsdecode(raw_path)
            if rel.endswith("/"):
                listing.notes.append(
                    f"untracked nested repository {rel} is not shipped: add it as a submodule to include it"
                )
            elif rel not in seen:
                seen.add(rel)
                paths.append(rel)
    return paths


def _add_submodule_worktree(
    directory: Path, rel: str, include_untracked: bool, listing: Listing, inspector: WorktreeInspector, paths: list[str]
) -> None:
    if not (directory / ".git").exists() or not inspector.dir_is_inside(rel):
        listing.notes.append(f"submodule {rel} is not checked out: run `git submodule update --init` to include it")
        return
    paths.extend(_worktree_paths(directory, include_untracked, rel + "/", listing, inspector))


def list_worktree(workspace: Workspace, include_untracked: bool) -> Listing:
    """Entries of the working tree: tracked files (plus untracked, unignored ones), submodules included."""
    listing = Listing()
    inspector = WorktreeInspector(workspace.root)
    for rel in _worktree_paths(workspace.root, include_untracked, "", listing, inspector):
        entry = inspector.inspect(rel, listing)
        if entry is not None:
            listing.entries.append(entry)
    listing.entries.sort(key=lambda e: e.path)
    return listing


# --------------------------------------------------------------------------
# A ref's tree
# --------------------------------------------------------------------------


def list_ref(workspace: Workspace, revision: str) -> Listing:
    """Entries of commit ``revision``'s tree under the workspace, submodules included."""
    listing = Listing()
    treeish = f"{revision}:{workspace.prefix}" if workspace.prefix else f"{revision}^{{tree}}"
    try:
        run_git(workspace.top, "cat-file", "-e", treeish, what="reading the ref")
    except GitError:
        raise ValueError(
            f"{workspace.root} does not exist in commit {revision[:12]}: "
            "pass the repository's top directory or a ref that has this directory"
        ) from None
    _ref_tree(workspace.top, treeish, revision, workspace.root, "", listing)
    _drop_chained_escapes(listing)
    listing.entries.sort(key=lambda e: e.path)
    return listing


def _drop_chained_escapes(listing: Listing) -> None:
    """Drop symlinks that leave the tree only through other symlinks (``a -> .``, ``b -> a/..``).

    A ref has no files on disk to ``realpath``, so the tree's own symlinks
    are followed the way the guest's kernel will follow them.
    """
    links = {e.path: e.target for e in listing.entries if e.kind == SYMLINK}
    escaping = {path for path in links if not resolves_inside(path, links)}
    for path in sorted(escaping):
        listing.skip(ESCAPING, f"{path} -> {links[path]}")
    listing.entries[:] = [e for e in listing.entries if e.path not in escaping]


def resolves_inside(link: str, links: dict[str, str], max_hops: int = 40) -> bool:
    """True if symlink ``link`` resolves inside the tree, following the symlinks in ``links``.

    Args:
        link: the symlink's path in the tree.
        links: every symlink of the tree, path -> target.
        max_hops: symlinks followed before giving up (a loop counts as escaping).
    """
    resolved = link.split("/")[:-1]
    pending = links[link].split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return False
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is not None:
            hops += 1
            if hops > max_hops or target.startswith("/"):
                return False
            resolved.pop()
            pending = target.split("/") + pending
    return True


def _ref_tree(repo: Path, treeish: str, commit: str, directory: Path, prefix: str, listing: Listing) -> None:
    """Add the entries of ``treeish`` in ``repo``; ``directory`` is where that tree is checked out."""
    mtime = int(run_git(repo, "show", "-s", "--format=%ct", commit, "--", what="reading the commit time").strip())
    output = run_git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", treeish, what="listing the ref's files")
    reader: BlobReader | None = None
    try:
        for item in _split_nul(output):
            meta, _, raw_path = item.partition(b"\t")
            mode, _kind, oid, size = meta.split()
            sub_rel = os.fsdecode(raw_path)
            rel = prefix + sub_rel
            if not is_safe_relpath(rel):  # only a forged tree object can hold "..", "." or empty names
                listing.skip(UNSAFE, rel)
            elif not prefix and rel in RESERVED_NAMES:
                listing.skip(RESERVED, rel)
            elif mode == GITLINK_MODE:
                _add_submodule_ref(directory / sub_rel, oid.decode("ascii"), rel, listing)
            elif mode == SYMLINK_MODE:
                reader = reader or BlobReader(repo)
                target = os.fsdecode(reader.blob(oid.decode("ascii")))
                if symlink_stays_inside(rel, target):
                    listing.entries.append(Entry(rel, SYMLINK, 0o777, 0, mtime, "", target=target))
                else:
                    listing.skip(ESCAPING, f"{rel} -> {target}")
            else:
                file_mode = 0o755 if mode == EXECUTABLE_MODE else 0o644
                listing.entries.append(Entry(rel, FILE, file_mode, int(size), mtime, oid.decode("ascii"), repo=repo))
    finally:
        if reader is not None:
            reader.close()


def _add_submodule_ref(directory: Path, commit: str, rel: str, listing: Listing) -> None:
    missing = f"submodule {rel} at commit {commit[:12]} is not available locally"
    if not (directory / ".git").exists() or directory.is_symlink():
        listing.notes.append(f"{missing}: run `git submodule update --init` to include it")
        return
    try:
        run_git(directory, "cat-file", "-e", f"{commit}^{{commit}}", what="looking for the submodule commit")
    except GitError:
        listing.notes.append(f"{missing}: run `git submodule update` (or fetch in {rel}) to include it")
        return
    top = Path(os.fsdecode(run_git(directory, "rev-parse", "--show-toplevel", what="locating the submodule").strip()))
    if os.path.realpath(top) != os.path.realpath(directory):
        listing.notes.append(f"{missing}: run `git submodule update --init` to include it")
        return
    _ref_tree(directory, f"{commit}^{{tree}}", commit, directory, rel + "/", listing)
