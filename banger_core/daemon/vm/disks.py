"""A VM's files: its overlay and work disks at create, their removal at delete."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from banger_core.daemon import guest
from banger_core.daemon.agent import client as agent_client
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Vm
from banger_hookspecs import Progress

if TYPE_CHECKING:
    from banger_core.daemon.filesync import SyncEntry

log = logging.getLogger("banger.vms")

WORK_DISK = "work.ext4"
OVERLAY_DISK = "overlay.ext4"
#: A VM directory being removed; reconcile finishes the job.
DELETING_PREFIX = ".deleting-"


def file_sync_entries(rt: Runtime) -> list[SyncEntry]:
    """Validated ``file_sync`` entries: all of them are checked before anything is created."""
    entries = rt.config.get("file_sync") or []
    if not entries:
        return []
    from banger_core.daemon.filesync import validate_entries

    return list(validate_entries(entries, Path(rt.env.get("HOME", "/root"))))


def create_disks(rt: Runtime, vm: Vm, progress: Progress, sync_entries: list[SyncEntry]) -> None:
    root = rt.layout.vm_dir(vm.id)
    root.mkdir(mode=0o700, parents=True)
    identity = guest.new_identity(vm.name)
    guest.create_overlay_disk(root / OVERLAY_DISK, vm.disk_size, identity)
    with tempfile.TemporaryDirectory(dir=root, prefix=".work-staging-") as staging:
        staging_dir = Path(staging)
        guest.stage_authorized_keys(staging_dir, rt.keys.public_key())
        token = agent_client.new_token()
        agent_client.stage_token(staging_dir, token)
        agent_client.write_host_token(root, token)
        if sync_entries:
            from banger_core.daemon.filesync import stage

            stage(sync_entries, staging_dir, lambda warning: progress.step(f"file_sync: {warning}"))
        partial = root / ".work.ext4.partial"
        guest.create_work_disk(partial, vm.disk_size, staging_dir)
    rt.keys.pin(f"{vm.name}.vm", identity.host_key_public)
    # Last and atomic: a work disk in place means the create finished (reconcile relies on it).
    os.replace(partial, root / WORK_DISK)


def remove_files(rt: Runtime, vm: Vm) -> None:
    """Remove a VM's directory (disks, handles) and its sockets.

    The directory is first renamed to ``.deleting-<id>`` (atomic), so a
    crash mid-removal never leaves a VM with half its disks: reconcile
    finishes ``.deleting-*`` directories (:func:`finish_removals`).
    """
    vm_dir = rt.layout.vm_dir(vm.id)
    doomed = vm_dir.with_name(f"{DELETING_PREFIX}{vm.id}")
    try:
        os.replace(vm_dir, doomed)
    except FileNotFoundError:
        pass
    shutil.rmtree(doomed, ignore_errors=True)
    shutil.rmtree(rt.layout.vm_run_dir(vm.id), ignore_errors=True)


def finish_removals(rt: Runtime) -> None:
    """Remove the ``.deleting-*`` directories a crashed delete left behind."""
    for leftover in sorted(rt.layout.vms.glob(f"{DELETING_PREFIX}*")):
        log.warning("finishing the interrupted removal of %s", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
