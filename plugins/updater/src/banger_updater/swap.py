"""An installed banger as the updater changes it: versions side by side, ``current`` flipped atomically.

``PREFIX/versions/<name>`` holds one virtualenv per version and ``PREFIX/current`` links to
one (``versions/<name>``, relative), as ``banger system install`` left them. An update builds
the new venv in a scratch directory under ``PREFIX/versions/.update`` (root's, like the rest
of the prefix: the owner's cache directory would let the owner swap a verified file before
root installs it), moves it into place, then :func:`switch` flips ``current``, rewrites
install.toml and restarts the services; any failure from the flip on puts both back. The
version switched away from is kept for ``banger update --rollback``; older ones are removed.
"""

from __future__ import annotations

import ast
import fcntl
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from banger_core.common.errors import BangerError
from banger_core.install.layout import DAEMON_UNIT, ROOT_UNIT, Layout, validate_prefix
from banger_core.install.record import InstallRecord, load_record

#: Below PREFIX/versions: downloads (resumable) and scratch directories of the update in progress.
WORK_DIR = ".update"
#: Seconds the restarted bangerd has to answer as the new version.
READY_TIMEOUT = 60.0
DOCTOR_TIMEOUT = 300.0


@dataclass(frozen=True)
class Target:
    """The version to switch to: its directory under versions/ and what install.toml will say."""

    name: str
    version: str
    commit: str
    built_at: str


class Services(Protocol):
    """The running side of an install: restarted after a flip, then checked."""

    def ensure_idle(self) -> None:
        """Raise (one line) while a restart would cut work short."""

    def restart(self) -> None: ...

    def check(self, target: Target) -> None:
        """Raise (one line) unless the install now runs ``target`` healthily."""


class Installation:
    """The install described by the install.toml at ``record_path`` (files under ``layout.root``)."""

    def __init__(self, root: Path, record_path: Path) -> None:
        self.record_path = record_path
        self.record = load_record(record_path)
        self.layout = Layout(root, validate_prefix(self.record.prefix))
        self.versions = self.layout.staged(self.layout.versions)
        self.current_link = self.layout.staged(self.layout.current)
        self.work = self.versions / WORK_DIR

    @property
    def live(self) -> bool:
        return self.layout.live

    def current_name(self) -> str:
        """The versions/ directory ``current`` points at."""
        try:
            target = os.readlink(self.current_link)
        except OSError as exc:
            raise BangerError(
                f"{self.current_link} is not a link to versions/<version> ({exc.strerror}): "
                "reinstall with `banger system install`"
            ) from None
        name = target.removeprefix("versions/")
        if target == name or not _is_version_dir_name(name):
            raise BangerError(f"{self.current_link} points at {target!r}, not versions/<version>: reinstall banger")
        return name

    def kept(self) -> list[str]:
        """The version directories under versions/ (the scratch directory aside)."""
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir() if _is_version_dir_name(p.name) and p.is_dir())

    def previous_name(self) -> str:
        """The version kept for ``--rollback``: the one version directory besides the current one."""
        others = [name for name in self.kept() if name != self.current_name()]
        if not others:
            raise BangerError(f"no previous version is kept in {self.versions}: there is nothing to roll back to")
        if len(others) > 1:
            raise BangerError(
                f"several versions are kept in {self.versions} ({', '.join(others)}): "
                "`banger update --to vX.Y.Z` names the one to go to"
            )
        return others[0]

    def require_root_owned(self) -> None:
        """A live install's prefix and versions/ must be root's alone: root runs what they hold."""
        for path in (self.layout.staged(self.layout.prefix), self.versions):
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
                raise BangerError(
                    f"{path} is not a directory only root can write (uid {info.st_uid}, mode "
                    f"{stat.S_IMODE(info.st_mode):o}): fix its owner and mode (root, 0755) before updating"
                )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One update at a time per install (a lock on versions/ itself: no file is left behind)."""
        fd = os.open(self.versions, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BangerError("another `banger update` is running on this install: wait for it") from None
            yield
        finally:
            os.close(fd)

    def work_dir(self) -> Path:
        """versions/.update, made on first use (downloads and scratch directories)."""
        self.work.mkdir(mode=0o700, exist_ok=True)
        return self.work

    def remove_work(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def remove_work_unless(self, part: Path) -> None:
        """Remove the scratch area unless ``part`` (a partial download to resume) is in it."""
        if not part.exists():
            self.remove_work()

    def place(self, scratch: Path, name: str) -> Path | None:
        """Move the venv built in ``scratch`` to versions/``name``; a kept copy of it is moved aside (returned)."""
        if name == self.current_name():
            raise BangerError(
                f"{self.current_link} already points at versions/{name}: it is not replaced while it runs"
            )
        final = self.versions / name
        aside = None
        if final.exists():
            aside = self.work_dir() / f"old-{name}"
            shutil.rmtree(aside, ignore_errors=True)
            final.rename(aside)
        scratch.rename(final)
        return aside

    def unplace(self, name: str, aside: Path | None) -> None:
        """Undo :meth:`place`: versions/``name`` removed, the copy it replaced put back."""
        shutil.rmtree(self.versions / name, ignore_errors=True)
        if aside is not None:
            aside.rename(self.versions / name)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove the version directories not in ``keep``; return their names."""
        removed = [name for name in self.kept() if name not in keep]
        for name in removed:
            shutil.rmtree(self.versions / name)
        return removed

    def flip(self, link_target: str) -> None:
        """Point ``current`` at ``link_target`` atomically (a new link renamed over the old one)."""
        scratch = self.current_link.with_name(".current.new")
        scratch.unlink(missing_ok=True)
        scratch.symlink_to(link_target)
        scratch.replace(self.current_link)

    def write_record(self, text: bytes) -> None:
        """Replace install.toml atomically (same directory, renamed over it)."""
        scratch = self.record_path.with_name(f".{self.record_path.name}.new")
        scratch.write_bytes(text)
        scratch.chmod(0o644)
        scratch.replace(self.record_path)

    def record_for(self, target: Target) -> InstallRecord:
        return replace(
            self.record,
            version=target.version,
            commit=target.commit,
            built_at=target.built_at,
            venv=self.layout.venv(target.name),
        )

    def target_of_kept(self, name: str) -> Target:
        """A kept version as a target: its build stamp, read from the banger inside its venv."""
        stamps = sorted((self.versions / name).glob("lib/python3*/site-packages/banger_core/_build_info.py"))
        values = _assignments(stamps[0].read_text()) if stamps else {}
        version, commit, built = (values.get(key, "unknown") for key in ("VERSION", "COMMIT", "BUILT"))
        return Target(name, version if version != "unknown" else name, commit, built)


def _assignments(source: str) -> dict[str, str]:
    """``NAME = "text"`` lines of a build stamp (parsed, never run: it sits in a file an update wrote)."""
    values: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            values.update((t.id, node.value.value) for t in node.targets if isinstance(t, ast.Name))
    return values


def _is_version_dir_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and name.isprintable()


def switch(inst: Installation, target: Target, services: Services | None) -> str:
    """Make ``target`` (already under versions/) the running version; return the name switched away from.

    The flip, the record and the restart are undone together when any step fails,
    and the error raised is the original one (one line), saying that it was undone.
    """
    old_name = inst.current_name()
    old_link = os.readlink(inst.current_link)
    old_record = inst.record_path.read_bytes()
    inst.flip(f"versions/{target.name}")
    try:
        inst.write_record(inst.record_for(target).to_toml().encode())
        if services is not None:
            services.restart()
            services.check(target)
    except (Exception, KeyboardInterrupt) as exc:
        original = str(exc) if isinstance(exc, BangerError) else f"{type(exc).__name__}: {exc}"
        undo_failed = _undo(inst, old_link, old_record, services)
        back = f"back on {old_name}" + (" (services restarted)" if services is not None else "")
        if undo_failed:
            back = f"going back to {old_name} failed too ({undo_failed}): `banger system status` shows the state"
        raise BangerError(f"switching to {target.version} failed: {original}; {back}") from None
    return old_name


def _undo(inst: Installation, old_link: str, old_record: bytes, services: Services | None) -> str | None:
    """Put the flip and the record back, restart on the old version; the first failure, if any."""
    try:
        inst.flip(old_link)
        inst.write_record(old_record)
        if services is not None:
            services.restart()
    except Exception as exc:
        return str(exc) if isinstance(exc, BangerError) else f"{type(exc).__name__}: {exc}"
    return None


class SystemdServices:
    """bangerd-root.service then bangerd.service restarted through systemctl; then the daemon and doctor checked.

    ``socket`` is bangerd's (the record's): the restarted daemon must answer there as the
    new version. ``current`` is the ``PREFIX/current`` directory whose banger runs doctor.
    """

    def __init__(self, socket: Path, current: Path, ready_timeout: float = READY_TIMEOUT) -> None:
        self.socket = socket
        self.current = current
        self.ready_timeout = ready_timeout

    def ensure_idle(self) -> None:
        """Refuse while bangerd creates or deletes VMs or pulls (running VMs are fine: they are adopted)."""
        status = daemon_status(self.socket)
        busy = status.get("in_progress") if status is not None else None
        if isinstance(busy, dict) and busy:
            doing = ", ".join(f"{what} x{count}" for what, count in sorted(busy.items()))
            raise BangerError(f"bangerd is busy ({doing}): let it finish, then run `banger update` again")

    def restart(self) -> None:
        from banger_core.install.service import systemctl

        systemctl("restart", ROOT_UNIT)  # the helper first: bangerd asks it for the network at start
        systemctl("restart", DAEMON_UNIT)

    def check(self, target: Target) -> None:
        self._wait_ready(target)
        self._doctor(target)

    def _wait_ready(self, target: Target) -> None:
        deadline = time.monotonic() + self.ready_timeout
        seen = "no answer"
        while True:
            status = daemon_status(self.socket)
            if status is not None:
                seen = f"it answers as {status.get('version')}"
                if status.get("version") == target.version:
                    return
            if time.monotonic() >= deadline:
                raise BangerError(
                    f"bangerd did not come back as {target.version} on {self.socket} within "
                    f"{self.ready_timeout:.0f} s ({seen}): `journalctl -u bangerd.service` says why"
                )
            time.sleep(0.2)

    def _doctor(self, target: Target) -> None:
        # Through the venv's python: the script's #! names the target path, which a staged root does not have.
        argv = [str(self.current / "bin" / "python"), str(self.current / "bin" / "banger"), "doctor"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=DOCTOR_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BangerError(f"banger doctor of {target.version} could not run: {exc}") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            failing = [line for line in lines if line.startswith("FAIL")] or lines or [f"exit {done.returncode}"]
            raise BangerError(f"banger doctor of {target.version} failed: {' '.join(failing[0].split())}")


def daemon_status(socket: Path) -> dict[str, object] | None:
    """bangerd's ``GET /v1/daemon`` answer on ``socket``, or None when nothing (sane) answers."""
    import json

    from banger_core.client import transport

    try:
        code, body = transport.exchange(str(socket), "GET", "/v1/daemon", timeout=5.0)
        answer = json.loads(body)
    except (OSError, ValueError):  # nothing listens, a garbled answer, not JSON
        return None
    return answer if code == 200 and isinstance(answer, dict) else None
