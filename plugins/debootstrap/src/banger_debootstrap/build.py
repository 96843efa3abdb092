"""Build a golden image from a :class:`~banger_debootstrap.recipe.Plan`.

debootstrap writes a root tree into a private work directory, the recipe's
files and steps are applied to it, and ``mkfs.ext4 -d`` turns it into
``rootfs.ext4`` (no loop mount, no journal: the image is only ever mounted
read-only). Nothing lands in the output directory until everything worked.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from banger_debootstrap.fsutil import remove_tree, resolve_in_root, tree_usage
from banger_debootstrap.npm import extract_member
from banger_debootstrap.recipe import NpmBinary, Plan, Step
from banger_hookspecs import Progress

DEBOOTSTRAP = "/usr/sbin/debootstrap"
MKFS_EXT4 = "/usr/sbin/mkfs.ext4"
CHROOT = "/usr/sbin/chroot"
UNSHARE = "/usr/bin/unshare"
#: Environment for every command run in the tree: no host locale, no prompts.
BUILD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "HOME": "/root",
}
POLICY_RC_D = "/usr/sbin/policy-rc.d"
#: Build-time apt sources for the update suites (removed right after the updates).
BUILD_SOURCES = "/etc/apt/sources.list.d/banger-build.list"
DEBOOTSTRAP_TIMEOUT = 45 * 60
STEP_TIMEOUT = 15 * 60


class BuildError(RuntimeError):
    """The image build failed; the message says at which stage and why."""


def stream(argv: Sequence[str], progress: Progress, *, timeout: float, what: str) -> None:
    """Run ``argv``, sending each output line to ``progress.log``; kill its process group on timeout.

    Raises:
        BuildError: non-zero exit or timeout, naming ``what`` and the last output line.
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=BUILD_ENV,
        start_new_session=True,  # its own process group, so a timeout stops debootstrap's children too
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    last = ""
    configured = 0
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                last = line
                progress.log(line)
                if line.startswith("I: Configuring "):
                    configured += 1
                    progress.advance(configured, None, "packages")
        code = proc.wait()
    except BaseException:
        kill()
        proc.wait()
        raise
    finally:
        watchdog.cancel()
    if timed_out.is_set():
        raise BuildError(f"{what} took longer than {timeout / 60:.0f} minutes and was stopped")
    if code != 0:
        raise BuildError(f"{what} failed (exit {code}): {last or 'no output'}")


def chroot_argv(root: Path, argv: Sequence[str]) -> list[str]:
    """argv that runs ``argv`` inside ``root`` with a private /proc.

    The proc mount lives in a new mount namespace, so it vanishes with the
    command and can never be left behind in the tree or on the host.
    """
    return [UNSHARE, f"--mount-proc={root / 'proc'}", CHROOT, str(root), *argv]


def debootstrap(plan: Plan, root: Path, mirror: str, cache_dir: Path, progress: Progress) -> None:
    """Run debootstrap for ``plan`` into the empty directory ``root``."""
    argv = [
        DEBOOTSTRAP,
        f"--components={','.join(plan.components)}",
        f"--cache-dir={cache_dir}",  # downloaded .debs are reused by the next build
    ]
    if plan.variant != "-":
        argv.append(f"--variant={plan.variant}")
    if plan.packages:
        argv.append(f"--include={','.join(plan.packages)}")
    argv += [plan.suite, str(root), mirror]
    stream(argv, progress, timeout=DEBOOTSTRAP_TIMEOUT, what=f"debootstrap {plan.suite} from {mirror}")


def apply_updates(plan: Plan, root: Path, mirrors: dict[str, str], progress: Progress) -> None:
    """Upgrade the tree from ``plan.update_suites``, then install ``plan.late_packages``.

    Late packages come from the updated suites: e.g. the kernel package whose
    modules must match the kernel that ``generic-6.1`` resolves to today.
    """
    if not mirrors and not plan.late_packages:
        return
    apt = ["apt-get", "-y", "-o", "Dpkg::Options::=--force-confold", "--no-install-recommends"]
    if mirrors:
        lines = [f"deb {uri} {suite} {' '.join(plan.components)}\n" for suite, uri in mirrors.items()]
        write_file(root, BUILD_SOURCES, "".join(lines).encode(), 0o644)
    try:
        stream(chroot_argv(root, ["apt-get", "update"]), progress, timeout=STEP_TIMEOUT, what="apt-get update")
        if mirrors:
            stream(chroot_argv(root, [*apt, "upgrade"]), progress, timeout=STEP_TIMEOUT, what="apt-get upgrade")
        if plan.late_packages:
            stream(
                chroot_argv(root, [*apt, "install", *plan.late_packages]),
                progress,
                timeout=STEP_TIMEOUT,
                what=f"apt-get install {' '.join(plan.late_packages)}",
            )
    finally:
        resolve_in_root(root, BUILD_SOURCES).unlink(missing_ok=True)


@contextlib.contextmanager
def create_in_root(root: Path, dest: str, mode: int) -> Iterator[BinaryIO]:
    """A new root-owned file at guest path ``dest`` to write to, replacing (never following) a symlink there."""
    parent = resolve_in_root(root, str(Path(dest).parent))
    parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    target = parent / Path(dest).name
    if target.is_symlink() or target.exists():
        if target.is_dir() and not target.is_symlink():
            raise BuildError(f"recipe file {dest} would replace a directory in the image")
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, mode)
        os.fchown(fd, 0, 0)
        yield fh


def write_file(root: Path, dest: str, content: bytes, mode: int) -> None:
    """Write ``content`` at guest path ``dest`` (see :func:`create_in_root`)."""
    with create_in_root(root, dest, mode) as fh:
        fh.write(content)


def install_npm_binary(root: Path, spec: NpmBinary, tarball: Path) -> int:
    """Extract ``spec.member`` of the verified ``tarball`` to ``spec.dest`` (0755 root:root); returns its size."""
    with create_in_root(root, spec.dest, 0o755) as fh:
        return extract_member(tarball, spec.member, fh)


def run_step(root: Path, step: Step, progress: Progress) -> None:
    """Apply one recipe step to the tree."""
    if step.action in ("mask", "unmask", "enable", "disable"):
        argv = chroot_argv(root, ["systemctl", step.action, *step.units])
        stream(argv, progress, timeout=STEP_TIMEOUT, what=f"systemctl {step.action} {' '.join(step.units)}")
    elif step.action == "run":
        stream(chroot_argv(root, step.argv), progress, timeout=STEP_TIMEOUT, what=f"recipe step {' '.join(step.argv)}")
    elif step.action == "remove":
        for pattern in step.paths:
            parent = resolve_in_root(root, str(Path(pattern).parent))
            for match in sorted(glob.glob(glob.escape(str(parent)) + "/" + Path(pattern).name)):
                remove_tree(Path(match))
    elif step.action == "symlink":
        for path in step.paths:
            parent = resolve_in_root(root, str(Path(path).parent))
            parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            link = parent / Path(path).name
            if link.is_symlink() or link.is_file():
                link.unlink()
            link.symlink_to(step.target)
    else:  # the recipe loader admits no other action
        raise BuildError(f"unknown recipe action {step.action!r}")


def make_ext4(root: Path, dest: Path, headroom_mib: int, label: str, progress: Progress) -> int:
    """``mkfs.ext4 -d root`` into ``dest``, sized to the content plus headroom; returns the size."""
    used, inodes = tree_usage(root)
    inode_count = int(inodes * 1.1) + 2048
    size = int(used * 1.08) + inode_count * 256 + (headroom_mib << 20)
    size = (size + (4 << 20) - 1) // (4 << 20) * (4 << 20)  # whole MiB multiples of 4
    progress.log(f"content {used >> 20} MiB in {inodes} inodes; filesystem {size >> 20} MiB")
    with dest.open("xb") as fh:
        fh.truncate(size)
    argv = [
        MKFS_EXT4,
        "-q",
        "-F",
        "-L",
        label[:16],
        "-N",
        str(inode_count),
        "-m",
        "0",
        "-O",
        "^has_journal",  # mounted read-only only: a journal is dead weight and a recovery hazard
        "-E",
        "root_owner=0:0",
        "-d",
        str(root),
        str(dest),
    ]
    stream(argv, progress, timeout=STEP_TIMEOUT, what="mkfs.ext4 -d")
    dest.chmod(0o444)
    return size


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_image(
    plan: Plan,
    out_dir: Path,
    work_dir: Path,
    *,
    mirror: str,
    update_mirrors: dict[str, str],
    deb_cache: Path,
    progress: Progress,
    npm_tarballs: Mapping[NpmBinary, Path] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, object]:
    """Build ``plan`` into ``out_dir`` (``rootfs.ext4`` + ``manifest.json``); returns the manifest.

    Args:
        plan: what to build.
        out_dir: empty directory that receives the two files.
        work_dir: private scratch directory for the root tree (deleted here).
        mirror: Debian mirror for debootstrap.
        update_mirrors: ``{suite: mirror}`` for ``plan.update_suites`` found on the host.
        deb_cache: where debootstrap keeps downloaded packages between builds.
        progress: progress sink.
        npm_tarballs: the verified tarball of each of ``plan.npm_binaries``.
        now: clock (tests).

    Raises:
        BuildError: any stage failed.
    """
    root = work_dir / "root"
    root.mkdir(mode=0o755)
    started = time.monotonic()
    try:
        progress.step(f"debootstrap {plan.suite} ({len(plan.packages)} packages) from {mirror}")
        debootstrap(plan, root, mirror, deb_cache, progress)
        # Package scripts must not start services on the build host while we work in the tree.
        write_file(root, POLICY_RC_D, b"#!/bin/sh\nexit 101\n", 0o755)
        if update_mirrors or plan.late_packages:
            progress.step(f"applying updates from {', '.join(update_mirrors) or 'the release'}")
            apply_updates(plan, root, update_mirrors, progress)
        progress.step(f"applying recipe {plan.ref}")
        for spec in plan.files:
            write_file(root, spec.dest, spec.content, spec.mode)
        for binary in plan.npm_binaries:
            size = install_npm_binary(root, binary, (npm_tarballs or {})[binary])
            progress.log(f"installed {binary.dest} ({size >> 20} MiB) from {binary.package}@{binary.version}")
        for step in plan.steps:
            run_step(root, step, progress)
        resolve_in_root(root, POLICY_RC_D).unlink()
        progress.step("building rootfs.ext4")
        rootfs = out_dir / "rootfs.ext4"
        size = make_ext4(root, rootfs, plan.headroom_mib, plan.name, progress)
    finally:
        remove_tree(root)
    progress.step("hashing rootfs.ext4")
    recipe_hash = plan.recipe_hash()
    manifest: dict[str, object] = {
        "name": plan.ref,
        "version": f"{plan.suite}-{recipe_hash[:12]}",
        "recipe": plan.name,
        "recipe_hash": recipe_hash,
        "options": dict(plan.options),
        "size": size,
        "sha256": sha256_file(rootfs),
        "kernel_ref": plan.kernel_ref,
        "built": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_seconds": round(time.monotonic() - started, 1),
        "mirror": mirror,
        "description": plan.description,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
