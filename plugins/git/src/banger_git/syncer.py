"""The ``git`` workspace syncer: plan which files to ship, then stream them into the guest."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from banger_git import guest
from banger_git.entries import FILE, MANIFEST_NAME, Entry
from banger_git.gitcmd import GitError, first_line, run_git
from banger_git.history import ship_history
from banger_git.listing import Listing, WorktreeInspector, find_workspace, list_ref, list_worktree, resolve_ref
from banger_git.manifest import GuestState, encode_manifest, is_unchanged, parse_guest_state, shipped_mtime
from banger_git.roundtrip import diff_workspace, pull_workspace
from banger_git.tarstream import BLOCK, TarWriter, stream_into, write_all
from banger_hookspecs import GuestShell, Progress, WorkspaceOptions, WorkspacePlan


class WorkspaceSyncError(RuntimeError):
    """Shipping the workspace failed; the message is one user sentence."""


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _count(files: int) -> str:
    return f"{files} file" if files == 1 else f"{files} files"


def _stream_size(entries: list[Entry]) -> int:
    """Approximate archive size of ``entries`` (one header block each, pax headers aside)."""
    return sum(BLOCK + e.size + (-e.size % BLOCK) for e in entries) + 2 * BLOCK


class GitSyncer:
    """Ships a git workspace into a guest as one tar stream over the guest shell."""

    def claims(self, path: Path) -> bool:
        """True if ``path`` is a directory inside a git work tree."""
        try:
            return Path(path).is_dir() and (
                run_git(Path(path), "rev-parse", "--is-inside-work-tree", what="probing").strip() == b"true"
            )
        except (GitError, OSError):
            return False

    def plan(self, path: Path, options: WorkspaceOptions) -> WorkspacePlan:
        """List the files to ship from ``path``.

        Args:
            path: a directory inside a git work tree (its top or a subdirectory).
            options: ``include_untracked`` adds untracked, unignored files;
                ``ref`` ships that commit's tracked tree instead of the working tree.

        Returns:
            The plan; ``warnings`` says what was left out and why.

        Raises:
            ValueError: ``path`` is not a git work tree, ``ref`` is unknown, ...
        """
        workspace = find_workspace(Path(path))
        revision: str | None = None
        if options.ref is not None:
            if options.include_untracked:
                raise ValueError("include_untracked and ref do not mix: a ref has no untracked files; drop one")
            revision = resolve_ref(workspace, options.ref)
            listing = list_ref(workspace, revision)
        else:
            listing = list_worktree(workspace, options.include_untracked)
        return WorkspacePlan(
            root=workspace.root,
            files=tuple(e.path for e in listing.entries),
            options=options,
            total_bytes=sum(e.size for e in listing.entries),
            warnings=tuple(listing.warnings()),
            revision=revision,
        )

    def _entries(self, plan: WorkspacePlan, listing: Listing) -> Iterator[Entry]:
        """The plan's files as they are now (working tree) or in the planned commit.

        Why a file was dropped lands in ``listing``.
        """
        if plan.revision is not None:
            wanted = set(plan.files)
            yield from (e for e in list_ref(find_workspace(plan.root), plan.revision).entries if e.path in wanted)
        else:
            inspector = WorktreeInspector(plan.root)
            for path in plan.files:
                entry = inspector.inspect(path, listing)
                if entry is not None:
                    yield entry

    def _stream_entries(
        self, plan: WorkspacePlan, listing: Listing
    ) -> tuple[Iterator[Entry], Callable[[str], Entry | None] | None]:
        """Entries for a full sync, produced while the stream is written.

        For the working tree they are only pre-checked: the writer opens each
        file without following symlinks and asks the returned inspector about
        anything that is not a regular file, so a file is looked at once.
        """
        if plan.revision is not None:
            return self._entries(plan, listing), None
        inspector = WorktreeInspector(plan.root)
        candidates = (Entry(p, FILE, 0, 0, 0, "") for p in plan.files if inspector.precheck(p, listing))
        return candidates, lambda path: inspector.inspect(path, listing)

    def sync(
        self,
        plan: WorkspacePlan,
        shell: GuestShell,
        guest_path: str,
        progress: Progress,
        *,
        incremental: bool = False,
    ) -> int:
        """Ship ``plan`` into ``guest_path``; return the number of files sent.

        Args:
            plan: from :meth:`plan`.
            shell: runs commands in the guest.
            guest_path: the destination directory in the guest (created if missing).
            progress: receives the phase, byte counts and warnings.
            incremental: ask the guest what it has, send only what differs and
                delete files this syncer shipped before that the plan no longer has.

        Raises:
            WorkspaceSyncError: the guest side failed.
        """
        for line in plan.warnings:
            progress.log(line)
        listing = Listing()
        # The git history goes in a second guest command at the same time: it
        # only touches .git, and the guest unpacks objects while tar extracts.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="banger-git-history") as background:
            history = background.submit(ship_history, plan, shell, guest_path)
            if incremental:
                written = self._sync_changes(plan, shell, guest_path, progress, listing)
            else:
                progress.step(f"sending {_count(len(plan.files))} ({_human(plan.total_bytes)}) to {guest_path}")
                total = plan.total_bytes + len(plan.files) * (BLOCK + BLOCK // 2) + 2 * BLOCK
                entries, inspect = self._stream_entries(plan, listing)
                written = self._send(shell, guest_path, plan.root, entries, [], [], progress, total, inspect)
                progress.log(f"sent {_count(written)} to {guest_path}")
            for line in listing.warnings():
                progress.log(f"changed since planning: {line}")
            for line in history.result():
                progress.log(line)
        return written

    def pull(
        self, path: Path, shell: GuestShell, guest_path: str, branch: str, progress: Progress, *, force: bool
    ) -> str:
        """Bring the guest's commits and uncommitted changes back as branch ``branch`` (see ``roundtrip``)."""
        return pull_workspace(Path(path), shell, guest_path, branch, progress, force=force).summary()

    def diff(self, path: Path, shell: GuestShell, guest_path: str, progress: Progress) -> bytes:
        """The patch from what was shipped to the guest's current work (see ``roundtrip``)."""
        return diff_workspace(Path(path), shell, guest_path, progress)

    def _sync_changes(
        self, plan: WorkspacePlan, shell: GuestShell, guest_path: str, progress: Progress, listing: Listing
    ) -> int:
        entries = list(self._entries(plan, listing))
        state = self._query(shell, guest_path, entries, progress)
        send, deletions = entries, []
        if state.present:
            send = [e for e in entries if not is_unchanged(e, state)]
            current = {e.path for e in entries}
            deletions = sorted(p for p in (state.manifest or {}) if p not in current)
            if not send and not deletions:
                progress.step(f"{guest_path} is up to date ({_count(len(entries))})")
                return 0
        sent_paths = {e.path for e in send}
        # The guest keeps the mtime it got back then; the manifest must say so.
        unchanged = [e._replace(mtime=shipped_mtime(e, state)) for e in entries if e.path not in sent_paths]
        deleting = f", deleting {len(deletions)}" if deletions else ""
        progress.step(
            f"sending {len(send)} of {_count(len(entries))} ({_human(sum(e.size for e in send))}){deleting} "
            f"to {guest_path}"
        )
        written = self._send(shell, guest_path, plan.root, send, unchanged, deletions, progress, _stream_size(send))
        progress.log(f"sent {_count(written)} to {guest_path}" + (f", deleted {len(deletions)}" if deletions else ""))
        return written

    def _query(self, shell: GuestShell, guest_path: str, entries: list[Entry], progress: Progress) -> GuestState:
        progress.step(f"asking the guest what {guest_path} holds")
        paths = b"".join(b"./" + os.fsencode(e.path) + b"\0" for e in entries)
        result = shell.run(guest.query_argv(guest_path), stdin=paths)
        if result.returncode != 0:
            raise WorkspaceSyncError(
                f"could not inspect {guest_path} in the guest (exit {result.returncode}): {first_line(result.stderr)}"
            )
        try:
            state = parse_guest_state(result.stdout)
        except ValueError as exc:
            progress.log(f"{exc}: sending every file and deleting nothing")
            return GuestState(present=True, manifest=None, manifest_unreadable=True, files=None)
        if state.manifest_unreadable:
            progress.log(f"the sync manifest in {guest_path} is unreadable: sending every file and deleting nothing")
        elif state.present and state.files is None:
            progress.log("the guest has no GNU find to compare files with: sending every file")
        return state

    def _send(
        self,
        shell: GuestShell,
        guest_path: str,
        root: Path,
        send: Iterable[Entry],
        unchanged: list[Entry],
        deletions: list[str],
        progress: Progress,
        total: int,
        inspect: Callable[[str], Entry | None] | None = None,
    ) -> int:
        """Stream deletions, then ``send`` and the new manifest, into one guest command.

        ``progress.advance`` is called from the thread that writes the stream.
        """

        def produce(out: int) -> int:
            delete_list = b"".join(os.fsencode(p) + b"\0" for p in deletions)
            write_all(out, f"{len(delete_list)}\n".encode("ascii") + delete_list)
            writer = TarWriter(out, root, lambda done: progress.advance(min(done, total), total, "B"), inspect)
            try:
                written = writer.add_all(send)
                # The manifest goes last: if the stream breaks off, the old
                # manifest stays and the next sync sends those files again.
                records = sorted(unchanged + written, key=lambda e: e.path)
                manifest = encode_manifest(records)
                writer.add_bytes(Entry(MANIFEST_NAME, FILE, 0o600, len(manifest), int(time.time()), ""), manifest)
                writer.close()
            finally:
                writer.close_readers()
            progress.advance(total, total, "B")
            return len(written)

        result, written, error = stream_into(shell, guest.sync_argv(guest_path), produce)
        # A host-side failure explains a guest-side one (tar saw the stream end early), not the reverse.
        if error is not None and not isinstance(error, BrokenPipeError):
            if isinstance(error, ValueError | OSError):
                raise WorkspaceSyncError(f"reading the workspace for {guest_path} failed: {error}") from error
            raise error
        if result.returncode != 0:
            raise WorkspaceSyncError(
                f"copying the workspace into {guest_path} failed in the guest (exit {result.returncode}): "
                f"{first_line(result.stderr)}"
            )
        if error is not None:
            raise WorkspaceSyncError(f"the guest stopped reading the workspace stream for {guest_path} early")
        assert written is not None
        return written
