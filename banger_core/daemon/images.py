"""The local image and kernel store: pulling through providers, listing, deleting.

A pull gets an empty staging directory next to its final place, so a failed
or interrupted pull never leaves a half image registered; the database row is
written only after the files are in place.

Locking: a pull holds the lock of the reference it pulls (so a second pull of
the same reference waits, then finds it present) and never holds it while
taking another: an image's kernel is pulled after the image's lock is
released. Putting files in place and deleting them take ``_commit_lock``,
which is always the last lock taken, with nothing acquired under it but the
database's write transaction.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from sqlmodel import Session, select

from banger_core.api.models import AvailableImage, ImagePulled, ImageView, KernelPulled, KernelView
from banger_core.common.errors import BangerError, Conflict, InvalidRequest, NotFound, Unavailable
from banger_core.common.names import validate_image_name
from banger_core.common.plugins import IMAGE_SOURCES, Providers
from banger_core.daemon.busy import busy_while
from banger_core.daemon.crashpoint import crash_point
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.state.models import Image, Kernel, Vm
from banger_hookspecs import (
    IdentifyingImageSource,
    ImageArtifact,
    ImageRefused,
    ImageSource,
    ImageSourceDriver,
    KernelArtifact,
    KernelProvider,
    Progress,
    PublishedElsewhere,
    SourceUnavailable,
    SshdInstallingImageSource,
)
from banger_hookspecs.boot import BOOT_PROTOCOL

log = logging.getLogger("banger.images")
PULL_AGAIN = ", then pull again"
#: ``.old-NAME``: the previous copy of ``NAME`` while a pull swaps in the new one.
OLD_PREFIX = ".old-"
#: The image source that adopts a file already on the host (plugins/register); its references are ``register:PATH``.
REGISTER_SOURCE = "register"

A_co = TypeVar("A_co", covariant=True)
A = TypeVar("A")


class _Puller(Protocol[A_co]):
    """What image sources and kernel providers share: claim a ref, pull it into a directory."""

    def claims(self, ref: str) -> bool: ...

    def pull(self, ref: str, dest: Path, progress: Progress) -> A_co: ...


class _WithSshd:
    """An image source asked for ``--with-sshd``: pulls through its ``pull_with_sshd``, refuses without one."""

    def __init__(self, name: str, driver: ImageSourceDriver) -> None:
        self.name, self.driver = name, driver

    @classmethod
    def wrapping(cls, driver_of: Callable[[str], ImageSourceDriver]) -> Callable[[str], _WithSshd]:
        return lambda name: cls(name, driver_of(name))

    def claims(self, ref: str) -> bool:
        return self.driver.claims(ref)

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        if not isinstance(self.driver, SshdInstallingImageSource):
            raise BangerError(
                f"--with-sshd: image source {self.name} provides {ref} and cannot install sshd in it; "
                "--with-sshd is for container images (image source oci), pull without it"
            )
        return self.driver.pull_with_sshd(ref, dest, progress)


def image_view(image: Image, rootfs: Path) -> ImageView:
    return ImageView(
        name=image.name,
        version=image.version,
        source=image.source,
        kernel_ref=image.kernel_ref,
        sha256=image.sha256,
        size=image.size,
        created_at=image.created_at,
        path=str(rootfs),
        meta=image.meta,
        reference=image.reference,
        digest=image.digest,
    )


def kernel_view(kernel: Kernel, directory: Path) -> KernelView:
    return KernelView(
        ref=kernel.ref,
        version=kernel.version,
        provider=kernel.provider,
        boot_protocol=kernel.boot_protocol,
        sha256=kernel.sha256,
        created_at=kernel.created_at,
        path=str(directory),
        meta=kernel.meta,
    )


def _artifact_name(artifact: object) -> str:
    """The name an image artifact, or the ref a kernel artifact, will be stored under."""
    if isinstance(artifact, ImageArtifact):
        return artifact.name
    if isinstance(artifact, KernelArtifact):
        return artifact.ref
    raise TypeError(f"not an image or kernel artifact: {artifact!r}")


def _from_elsewhere(image: Image, provider: str, reference: str) -> bool:
    """Whether storing ``reference`` from ``provider`` would replace ``image`` with another image.

    The same source and reference (a moved registry tag) is an update; a row
    from before references were recorded counts as the same when its source is.
    """
    return image.source != provider or (image.reference is not None and image.reference != reference)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


class Store:
    """Images and kernels on disk plus their rows in the database."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._ref_locks: dict[tuple[str, str], threading.Lock] = {}
        self._ref_locks_guard = threading.Lock()
        self._commit_lock = threading.Lock()

    def _ref_lock(self, kind: str, ref: str) -> threading.Lock:
        """The lock serializing pulls of one image or kernel reference."""
        with self._ref_locks_guard:
            return self._ref_locks.setdefault((kind, ref), threading.Lock())

    # -- images ------------------------------------------------------------

    def rootfs(self, name: str) -> Path:
        return self.rt.layout.image_dir(name) / "rootfs.ext4"

    def list_images(self) -> list[ImageView]:
        with self.rt.database.read() as s:
            rows = s.exec(select(Image).order_by(Image.name)).all()
        return [image_view(r, self.rootfs(r.name)) for r in rows]

    def get_image(self, name: str) -> Image:
        validate_image_name(name)
        with self.rt.database.read() as s:
            image = s.get(Image, name)
        if image is None:
            raise NotFound(f"image {name!r} is not pulled: run `banger image pull {name}`")
        return image

    def has_image(self, name: str) -> bool:
        with self.rt.database.read() as s:
            return s.get(Image, name) is not None

    def available(self) -> list[AvailableImage]:
        """What the image sources say they can provide."""
        out: list[AvailableImage] = []
        for name in self.rt.pm.image_sources():
            try:
                driver = self.rt.image_source(name)
                out += [
                    AvailableImage(name=item.name, description=item.description, source=item.source)
                    for item in driver.available()
                ]
            except Exception as exc:
                log.warning("image source %s cannot list: %s", name, exc)
        return out

    @busy_while("image pull")
    def pull_image(
        self,
        ref: str,
        progress: Progress,
        *,
        source: str | None = None,
        force: bool = False,
        with_sshd: bool = False,
        kernel_ref: str | None = None,
    ) -> ImagePulled:
        """Pull ``ref`` (``debian-bookworm``, ``registry/repo:tag``) and its kernel; return the image row.

        ``kernel_ref`` replaces the kernel the source names. ``with_sshd``:
        pulled through the source's ``pull_with_sshd`` (refused by sources
        without one). A reference the store already holds is "already
        present" without downloading: a plain name when an image of that name
        exists, a reference an :class:`IdentifyingImageSource` claims when the
        stored image has the digest it resolves to now (a moved registry tag
        is pulled again).
        """
        if kernel_ref is not None:
            validate_image_name(kernel_ref, "kernel")
        with self._ref_lock("image", ref):
            present = None if force else self._present_image(ref, source, progress)
            if present is not None:
                if kernel_ref is not None and kernel_ref != present.kernel_ref:
                    raise Conflict(
                        f"image {present.name} is already present with kernel {present.kernel_ref or 'none'}: "
                        f"add --force to pull {ref} again with kernel {kernel_ref}"
                    )
                if with_sshd and not (present.meta or {}).get("with_sshd"):
                    raise Conflict(
                        f"image {present.name} is already present without --with-sshd: "
                        f"add --force to pull {ref} again with it"
                    )
                image = present
                progress.step(f"image {image.name} is already present ({image.source}, {image.version})")
                pulled, used = False, None
            else:
                if force and self._existing_image(ref):
                    with self.rt.database.read() as s:  # fail before a download that could not be used
                        self._refuse_if_in_use(s, ref, PULL_AGAIN)
                driver_of = _WithSshd.wrapping(self.rt.image_source) if with_sshd else self.rt.image_source

                def store(provider: str, artifact: ImageArtifact, staging: Path) -> None:
                    self._store_image(
                        provider, artifact, staging, reference=ref, kernel_ref=kernel_ref, replace_other=force
                    )

                artifact, used = self._pull_with_fallback(
                    self.rt.pm.image_sources(), driver_of, ref, source, progress, store
                )
                image, pulled = self.get_image(artifact.name), True
        # The kernel has its own lock: pulling it while holding the image's is how
        # pulls deadlocked, and a slow kernel must not hold up pulls of this image.
        kernel = self._ensure_kernel(image.kernel_ref, progress)
        view = image_view(image, self.rootfs(image.name))
        return ImagePulled(**dict(view), kernel=kernel, pulled=pulled, used_source=used)

    @busy_while("image register")
    def register_image(
        self, name: str, rootfs: str, progress: Progress, *, kernel_ref: str | None = None
    ) -> ImagePulled:
        """Adopt the ext4 file ``rootfs`` as image ``name`` through the ``register`` source; never replaces an image.

        The source validates the file (see plugins/register); the name is
        checked here first so a clash costs nothing, and again when the image is
        put in place (a pull of the same name may have finished meanwhile).
        """
        validate_image_name(name)
        if kernel_ref is not None:
            validate_image_name(kernel_ref, "kernel")
        if not os.path.isabs(rootfs):
            raise InvalidRequest(f"--rootfs {rootfs!r} is not an absolute path: give the file's full path")
        if self.has_image(name):
            raise Conflict(f"image {name!r} already exists: pick another --name, or `banger image delete {name}` first")
        ref = f"{REGISTER_SOURCE}:{rootfs}"

        def store(provider: str, artifact: ImageArtifact, staging: Path) -> None:
            self._store_image(
                provider,
                replace(artifact, name=name),
                staging,
                reference=ref,
                kernel_ref=kernel_ref,
                replace_image=False,
            )

        with self._ref_lock("image", name):
            self._pull_with_fallback(
                self.rt.pm.image_sources(), self.rt.image_source, ref, REGISTER_SOURCE, progress, store
            )
        image = self.get_image(name)
        kernel = self._ensure_kernel(image.kernel_ref, progress)
        view = image_view(image, self.rootfs(name))
        return ImagePulled(**dict(view), kernel=kernel, pulled=True, used_source=REGISTER_SOURCE)

    def _present_image(self, ref: str, only: str | None, progress: Progress) -> Image | None:
        """The stored image ``ref`` names now, if the store has it (see :meth:`pull_image`)."""
        if self._existing_image(ref):
            return self.get_image(ref)
        providers = self.rt.pm.image_sources()
        if only is not None:
            providers.require(only)
        names = [only] if only is not None else sorted(providers, key=lambda n: (providers[n].value.priority, n))
        for name in names:
            driver = self.rt.image_source(name)
            if not driver.claims(ref):
                continue
            # Only the source that would pull it is asked; one without identify() is asked to pull.
            if not isinstance(driver, IdentifyingImageSource):
                return None
            try:
                identity = driver.identify(ref, progress)
            except Exception as exc:  # the pull that follows says what is wrong, with the source's fallbacks
                log.info("image source %s cannot identify %s (%s): pulling it", name, ref, exc)
                return None
            with self.rt.database.read() as s:
                row = s.get(Image, identity.name)
                if row is None:  # stored under a name of its own (a banger artifact): found by what it was pulled as
                    row = s.exec(select(Image).where(Image.reference == ref, Image.source == name)).first()
            if row is not None and row.source == name and row.digest == identity.digest:
                return row
            return None
        return None

    def _existing_image(self, ref: str) -> bool:
        try:
            validate_image_name(ref)
        except BangerError:
            return False
        return self.has_image(ref)

    def _store_image(
        self,
        provider: str,
        artifact: ImageArtifact,
        staging: Path,
        *,
        reference: str,
        kernel_ref: str | None = None,
        replace_image: bool = True,
        replace_other: bool = False,
    ) -> None:
        """Put a pulled image in place under its name.

        An image of that name from another source or reference is replaced only
        with ``replace_other`` (``--force``): `image pull x/debian:bookworm`
        must not silently swap out the `debian-bookworm` the catalog gave.
        ``replace_image=False`` refuses any image of that name (register).
        """
        if kernel_ref is not None:
            artifact = replace(artifact, kernel_ref=kernel_ref)
        name = validate_image_name(artifact.name)
        if not _inside(artifact.rootfs, staging) or not artifact.rootfs.is_file():
            raise BangerError(f"image source {provider} returned a rootfs outside its directory")
        if artifact.rootfs.name != "rootfs.ext4":
            os.replace(artifact.rootfs, staging / "rootfs.ext4")
        rootfs = staging / "rootfs.ext4"
        # Shared by every VM: never written. A registered file hard-linked into the
        # store keeps its mode: the inode is its owner's (other sources link banger's own caches).
        if not (provider == REGISTER_SOURCE and rootfs.stat().st_nlink > 1):
            os.chmod(rootfs, 0o444)
        manifest = staging / "manifest.json"
        if manifest.exists():
            if kernel_ref is not None and json.loads(manifest.read_text()).get("kernel_ref") != kernel_ref:
                # A source's own manifest (a catalog bundle's) must name the kernel this image boots with:
                # `image export` bundles it as it stands. A new file: the old one may be a link into a cache.
                written = {**json.loads(manifest.read_text()), "kernel_ref": kernel_ref}
                fresh = manifest.with_name(f".{manifest.name}.new")
                fresh.write_text(json.dumps(written, indent=2))
                os.replace(fresh, manifest)
        else:
            manifest.write_text(
                json.dumps(
                    {
                        "kind": "image",
                        "name": name,
                        "version": artifact.version,
                        "kernel_ref": artifact.kernel_ref,
                        "sha256": artifact.sha256,
                        "size": artifact.size,
                        **dict(artifact.metadata),
                    },
                    indent=2,
                    default=str,
                )
            )
        final = self.rt.layout.image_dir(name)
        # One write transaction around the in-use check and the swap: a VM
        # created meanwhile waits for it and then sees the new image, never half of it.
        with self._commit_lock, self.rt.database.session() as s:
            existing = s.get(Image, name)
            if not replace_image and existing is not None:
                raise Conflict(
                    f"image {name!r} already exists: pick another name, or `banger image delete {name}` first"
                )
            if existing is not None and not replace_other and _from_elsewhere(existing, provider, reference):
                raise Conflict(
                    f"image {name} already exists from {existing.source} ({existing.reference or 'an older pull'}): "
                    f"add --force to replace it with {reference} from {provider}, or `banger image delete {name}` first"
                )
            self._refuse_if_in_use(s, name, PULL_AGAIN)
            self._replace_dir(staging, final)
            row = s.get(Image, name) or Image(
                name=name, version="", source="", sha256="", size=0, created_at=datetime.now(UTC)
            )
            row.reference = reference
            row.digest = artifact.digest
            row.version = artifact.version
            row.source = provider
            row.kernel_ref = artifact.kernel_ref
            row.sha256 = artifact.sha256
            row.size = artifact.size
            row.created_at = datetime.now(UTC)
            row.meta = json.loads(json.dumps(dict(artifact.metadata), default=str))
            s.add(row)

    @staticmethod
    def _refuse_if_in_use(s: Session, name: str, then: str = "") -> None:
        """Conflict when VMs use image ``name``: their overlay disks only make sense on top of it."""
        users = sorted(s.exec(select(Vm.name).where(Vm.image == name)).all())
        if users:
            raise Conflict(
                f"image {name!r} is in use by VMs {', '.join(users)}: delete them first "
                f"(their disks are overlays on it){then}"
            )

    def delete_image(self, name: str) -> None:
        self.get_image(name)
        with self._commit_lock:
            with self.rt.database.session() as s:
                self._refuse_if_in_use(s, name)
                row = s.get(Image, name)
                if row is not None:
                    s.delete(row)
            shutil.rmtree(self.rt.layout.image_dir(name), ignore_errors=True)

    # -- kernels -----------------------------------------------------------

    def list_kernels(self) -> list[KernelView]:
        with self.rt.database.read() as s:
            rows = s.exec(select(Kernel).order_by(Kernel.ref)).all()
        return [kernel_view(r, self.rt.layout.kernel_dir(r.ref)) for r in rows]

    def get_kernel(self, ref: str) -> Kernel:
        validate_image_name(ref, "kernel")
        with self.rt.database.read() as s:
            kernel = s.get(Kernel, ref)
        if kernel is None:
            raise NotFound(f"kernel {ref!r} is not pulled: run `banger kernel pull {ref}`")
        return kernel

    def kernel_files(self, ref: str) -> tuple[Path, Path]:
        self.get_kernel(ref)
        directory = self.rt.layout.kernel_dir(ref)
        return directory / "vmlinux", directory / "initrd"

    @busy_while("kernel pull")
    def pull_kernel(
        self, ref: str, progress: Progress, *, provider: str | None = None, force: bool = False
    ) -> KernelPulled:
        # A registry reference (host/repo:tag, what `kernel push` printed) goes to the providers as is;
        # the kernel is stored under the ref its artifact names.
        by_reference = any(c in ref for c in "/:@")
        if not by_reference:
            validate_image_name(ref, "kernel")
        with self._ref_lock("kernel", ref):
            if not force and not by_reference:
                with self.rt.database.read() as s:
                    existing = s.get(Kernel, ref)
                if existing is not None:
                    progress.step(f"kernel {ref} is already present ({existing.provider}, {existing.version})")
                    return KernelPulled(**dict(kernel_view(existing, self.rt.layout.kernel_dir(ref))), pulled=False)
            artifact, used = self._pull_with_fallback(
                self.rt.pm.kernel_providers(), self.rt.kernel_provider, ref, provider, progress, self._store_kernel
            )
        row = self.get_kernel(artifact.ref)
        view = kernel_view(row, self.rt.layout.kernel_dir(row.ref))
        return KernelPulled(**dict(view), pulled=True, used_source=used)

    def _ensure_kernel(self, ref: str | None, progress: Progress) -> str | None:
        if not ref:
            return None
        self.pull_kernel(ref, progress)
        return ref

    def _store_kernel(self, provider: str, artifact: KernelArtifact, staging: Path) -> None:
        ref = validate_image_name(artifact.ref, "kernel")
        if artifact.boot_protocol != BOOT_PROTOCOL:
            raise BangerError(
                f"kernel {ref} from {provider} speaks boot protocol {artifact.boot_protocol}, "
                f"this banger speaks {BOOT_PROTOCOL}: use a kernel made for this banger version"
            )
        for path, wanted in ((artifact.vmlinux, "vmlinux"), (artifact.initrd, "initrd")):
            if not _inside(path, staging) or not path.is_file():
                raise BangerError(f"kernel provider {provider} returned a {wanted} outside its directory")
            if path.name != wanted:
                os.replace(path, staging / wanted)
        manifest = staging / "manifest.json"
        if not manifest.exists():
            manifest.write_text(
                json.dumps(
                    {
                        "kind": "kernel",
                        "ref": ref,
                        "version": artifact.version,
                        "boot_protocol": artifact.boot_protocol,
                        "sha256": dict(artifact.sha256),
                        **dict(artifact.metadata),
                    },
                    indent=2,
                    default=str,
                )
            )
        with self._commit_lock, self.rt.database.session() as s:
            self._replace_dir(staging, self.rt.layout.kernel_dir(ref))
            row = s.get(Kernel, ref) or Kernel(
                ref=ref, version="", provider="", boot_protocol=0, created_at=datetime.now(UTC)
            )
            row.version = artifact.version
            row.provider = provider
            row.boot_protocol = artifact.boot_protocol
            row.sha256 = dict(artifact.sha256)
            row.created_at = datetime.now(UTC)
            row.meta = json.loads(json.dumps(dict(artifact.metadata), default=str))
            s.add(row)

    def delete_kernel(self, ref: str) -> None:
        self.get_kernel(ref)
        with self._commit_lock:
            with self.rt.database.session() as s:
                users = sorted(s.exec(select(Vm.name).where(Vm.kernel == ref)).all())
                if users:
                    raise Conflict(f"kernel {ref!r} is in use by VMs {', '.join(users)}: delete them first")
                row = s.get(Kernel, ref)
                if row is not None:
                    s.delete(row)
            shutil.rmtree(self.rt.layout.kernel_dir(ref), ignore_errors=True)

    # -- shared ------------------------------------------------------------

    def _pull_with_fallback(
        self,
        providers: Providers[ImageSource] | Providers[KernelProvider],
        driver_of: Callable[[str], _Puller[A]],
        ref: str,
        only: str | None,
        progress: Progress,
        store: Callable[[str, A, Path], None],
        *,
        redirected_from: str | None = None,
    ) -> tuple[A, str]:
        """Ask each provider that claims ``ref`` in priority order; fall back on SourceUnavailable.

        A provider answering :class:`PublishedElsewhere` (a catalog entry naming an OCI artifact) sends
        the pull to its target, once; what comes back is stored only under the name first asked for.
        """
        kind = providers.hook.kind
        if only is not None:
            providers.require(only)  # unknown name -> error listing the known ones
            names = [only]
        else:
            names = sorted(providers, key=lambda n: (providers[n].value.priority, n))
        tried: list[str] = []
        parent = self.rt.layout.images if providers.hook is IMAGE_SOURCES else self.rt.layout.kernels
        for name in names:
            driver = driver_of(name)
            if not driver.claims(ref):
                continue
            progress.step(f"{kind} {name}: getting {ref}")
            staging = Path(tempfile.mkdtemp(dir=parent, prefix=".staging-"))
            elsewhere: str | None = None
            try:
                artifact = driver.pull(ref, staging, progress)
                store(name, artifact, staging)
            except ImageRefused as exc:
                raise InvalidRequest(str(exc)) from None
            except PublishedElsewhere as moved:
                elsewhere = moved.target
            except SourceUnavailable as exc:
                tried.append(f"{name}: {exc}")
                progress.step(f"{kind} {name} unavailable ({exc}); trying the next one")
                continue
            except BangerError:
                raise
            except Exception as exc:
                log.exception("%s %s failed to pull %s", kind, name, ref)
                raise BangerError(f"{kind} {name} failed to get {ref}: {type(exc).__name__}: {exc}") from exc
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if elsewhere is not None:
                return self._pull_elsewhere(
                    providers, driver_of, ref, elsewhere, name, progress, store, redirected_from
                )
            progress.step(f"got {ref} from {kind} {name}")
            return artifact, name
        if tried:
            raise Unavailable(f"no {kind} could provide {ref!r}: " + "; ".join(tried))
        known = ", ".join(names) or "none installed"
        raise NotFound(f"no {kind} knows {ref!r} (asked: {known})")

    def _pull_elsewhere(
        self,
        providers: Providers[ImageSource] | Providers[KernelProvider],
        driver_of: Callable[[str], _Puller[A]],
        ref: str,
        target: str,
        provider: str,
        progress: Progress,
        store: Callable[[str, A, Path], None],
        redirected_from: str | None,
    ) -> tuple[A, str]:
        kind = providers.hook.kind
        what = "image" if providers.hook is IMAGE_SOURCES else "kernel"
        if redirected_from is not None:
            raise BangerError(
                f"{redirected_from!r} is published at {ref!r}, which {kind} {provider} sends on to {target!r}: "
                "one redirect at most, point the catalog entry at the artifact itself"
            )

        def store_as_asked(used: str, artifact: A, staging: Path) -> None:
            found = _artifact_name(artifact)
            if found != ref:
                raise BangerError(
                    f"{kind} {provider} lists {what} {ref!r} at {target}, but that artifact holds {what} "
                    f"{found!r}: nothing was stored, fix the entry (or pull {target} itself)"
                )
            store(used, artifact, staging)

        progress.step(f"{kind} {provider}: {ref} is published at {target}")
        return self._pull_with_fallback(
            providers, driver_of, target, None, progress, store_as_asked, redirected_from=ref
        )

    @staticmethod
    def _replace_dir(staging: Path, final: Path) -> None:
        """Move ``staging`` to ``final``; an older copy is set aside as ``.old-NAME`` and removed after the swap.

        Two renames cannot be one atomic step, so a crash between them leaves
        ``final`` missing and ``.old-NAME`` complete: :meth:`recover` puts it
        back at the next daemon start. The name is fixed (no pid) for that.
        """
        crash_point("pull:staged")
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = final.with_name(f"{OLD_PREFIX}{final.name}")
        if old.exists():  # a superseded copy a crash left behind (recover restores it when final is missing)
            shutil.rmtree(old)
        moved_aside = False
        if final.exists():
            os.replace(final, old)
            moved_aside = True
        crash_point("pull:swapping")
        os.replace(staging, final)
        crash_point("pull:replaced")
        if moved_aside:
            shutil.rmtree(old, ignore_errors=True)

    def recover(self) -> None:
        """At daemon start: finish what a crashed pull left in the image and kernel directories.

        ``.staging-*`` (a pull in progress) is removed: nothing refers to it.
        ``.old-NAME`` is put back as ``NAME`` when ``NAME`` is missing (the crash
        hit between the two renames of :meth:`_replace_dir`, and the database
        row still describes it), and removed otherwise (the swap was done).
        """
        for parent in (self.rt.layout.images, self.rt.layout.kernels):
            if not parent.is_dir():
                continue
            for entry in sorted(parent.iterdir()):
                if entry.name.startswith(".staging-"):
                    log.warning("removing %s, left by an interrupted pull", entry)
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.name.startswith(OLD_PREFIX):
                    final = parent / entry.name[len(OLD_PREFIX) :]
                    if final.exists():
                        log.warning("removing %s, superseded by %s before a crash", entry, final)
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        log.warning("restoring %s from %s: a pull was interrupted while swapping it", final, entry)
                        os.replace(entry, final)
