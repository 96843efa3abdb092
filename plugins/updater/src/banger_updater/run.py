"""``banger update``'s steps: find the release, verify it, build it beside the current one, switch, check.

Nothing is trusted before its check: the index only names versions, the manifest is used
once its Sigstore bundle verifies, the wheelhouse once its size and sha256 are the signed
manifest's. Until the switch nothing outside ``PREFIX/versions/.update`` is written; a
failure removes what was unpacked or built there and keeps only a partial download (the
next run resumes it). See docs/updating.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger_core.common.errors import BangerError
from banger_hookspecs import Progress
from banger_updater.fetch import ReleaseSource
from banger_updater.release import INDEX_NAME, MAX_INDEX_BYTES, Manifest, ReleaseIndex, Version, artifact_path
from banger_updater.swap import Installation, Services, SystemdServices, Target, switch
from banger_updater.verify import check_artifact, signing_policy, verified_manifest


@dataclass(frozen=True)
class Newest:
    """What ``--check`` found: the installed version against the newest verified release."""

    current: str
    newest: Manifest | None

    @property
    def available(self) -> bool:
        if self.newest is None:
            return False
        if not Version.is_release(self.current):
            return True  # a development build: any release is an update
        return self.newest.version > Version.parse(self.current)

    def to_json(self) -> dict[str, object]:
        newest = self.newest
        return {
            "current": self.current,
            "newest": str(newest.version) if newest else None,
            "update_available": self.available,
            "newest_commit": newest.commit if newest else None,
            "newest_built_at": newest.built_at if newest else None,
        }


class Updater:
    """One ``banger update`` run against the release directory ``config`` names."""

    def __init__(self, config: Mapping[str, Any], progress: Progress) -> None:
        self.source = ReleaseSource(str(config["update_release_url"]))
        self.policy = signing_policy(config)
        self.progress = progress

    def close(self) -> None:
        self.source.close()

    def newest_version(self) -> Version | None:
        self.progress.step(f"reading the release index {self.source.url(INDEX_NAME)}")
        return ReleaseIndex.from_json(self.source.read(INDEX_NAME, MAX_INDEX_BYTES), self.source.url(INDEX_NAME)).newest

    def manifest(self, version: Version) -> Manifest:
        self.progress.step(f"verifying the signature of release {version}")
        return verified_manifest(self.source, version, self.policy)

    def check(self, current: str) -> Newest:
        """The newest release, verified (a signed manifest, for this host), against ``current``."""
        newest = self.newest_version()
        return Newest(current, self.manifest(newest) if newest is not None else None)

    def choose(self, inst: Installation, to: Version | None) -> Version | str:
        """The version to install: ``to``, else the newest release; or why there is nothing to do.

        Only ``--to`` goes to an older release; without it an older "newest" (a release host
        serving an old index) is not an update.
        """
        current = inst.record.version
        wanted = to if to is not None else self.newest_version()
        if wanted is None:
            raise BangerError(f"{self.source.url(INDEX_NAME)} lists no release: check update_release_url")
        if str(wanted) == current:
            return f"banger is already at {current}"
        if to is None and Version.is_release(current) and wanted < Version.parse(current):
            return f"banger {current} is newer than the newest release {wanted}: nothing to update"
        return wanted

    def prepare(self, inst: Installation, version: Version) -> tuple[Target, Path]:
        """Verify, download, check and build ``version``: its target and the venv built in the scratch area."""
        from banger_core.install.venv import create_venv, relocate_scripts, wheel_build_info
        from banger_updater.wheelhouse import unpack

        manifest = self.manifest(version)
        artifact = manifest.wheelhouse
        url = self.source.url(artifact_path(version, artifact.name))
        work = inst.work_dir()
        part = work / f"{artifact.sha256}.part"
        self.progress.step(f"downloading {artifact.name} ({artifact.size} bytes)")
        try:
            self.source.download(artifact_path(version, artifact.name), part, artifact.size, self.progress)
        except (Exception, KeyboardInterrupt):
            inst.remove_work_unless(part)  # what was received stays for the next run to resume
            raise
        name = str(version)
        wheels = work / f"wheels-{name}"
        venv = work / f"venv-{name}"
        try:
            self.progress.step("checking its size and sha256 against the signed manifest")
            check_artifact(part, artifact, url)
            self.progress.step(f"unpacking {artifact.name}")
            unpack(part, wheels, artifact.name)
            stamp = wheel_build_info(wheels)
            if (stamp.version, stamp.commit) != (name, manifest.commit):
                raise BangerError(
                    f"{artifact.name}: its banger wheel is {stamp.version} (commit {stamp.commit[:12]}), the signed "
                    f"manifest says {name} (commit {manifest.commit[:12]}): the release is malformed"
                )
            self.progress.step(f"building the virtualenv for {name} (offline, from the wheelhouse)")
            create_venv(venv, wheels, offline=True)
            relocate_scripts(venv, inst.layout.venv(name))
        except (Exception, KeyboardInterrupt):
            inst.remove_work()
            raise
        shutil.rmtree(wheels)
        return Target(name, name, manifest.commit, manifest.built_at), venv

    def install(self, inst: Installation, version: Version, services: Services | None, *, dry_run: bool) -> str:
        """Install ``version`` (or, ``dry_run``, everything but placing and switching); return a summary line."""
        if services is not None and not dry_run:
            services.ensure_idle()  # before the download, to fail fast
        target, venv = self.prepare(inst, version)
        if dry_run:
            inst.remove_work()
            return f"dry run: {version} verified, downloaded and built; nothing changed (still {inst.record.version})"
        try:
            if services is not None:
                services.ensure_idle()  # and again: the download and the build took their time
            aside = inst.place(venv, target.name)
        except BangerError:
            inst.remove_work()
            raise
        self.progress.step(f"switching {inst.layout.current} to versions/{target.name}")
        try:
            old = switch(inst, target, services)
        except BangerError:
            inst.unplace(target.name, aside)
            inst.remove_work()
            raise
        removed = inst.prune({target.name, old})
        inst.remove_work()
        dropped = f"; removed {', '.join(removed)}" if removed else ""
        return f"banger {inst.record.version} -> {version}{_how(inst, services)}; {old} kept for --rollback{dropped}"


def rollback(inst: Installation, services: Services | None, progress: Progress) -> str:
    """Switch back to the kept previous version (no download: it is still built)."""
    target = inst.target_of_kept(inst.previous_name())
    if services is not None:
        services.ensure_idle()
    progress.step(f"switching {inst.layout.current} back to versions/{target.name}")
    old = switch(inst, target, services)
    how = _how(inst, services)
    return f"banger {inst.record.version} -> {target.version}{how}; {old} kept (--rollback again returns to it)"


def services_for(inst: Installation) -> Services | None:
    """The services to restart and check: systemd's on a live install, none under ``--root``."""
    if not inst.live:
        return None
    return SystemdServices(Path(inst.record.socket), inst.current_link)


def _how(inst: Installation, services: Services | None) -> str:
    if services is not None:
        return " (services restarted, doctor passed)"
    return f" under {inst.layout.root} (--root: no services restarted, no doctor run)"
