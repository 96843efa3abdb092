"""The ``debian`` kernel provider: Debian's cloud kernel as ELF vmlinux plus banger's initramfs."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from banger_debian.apt import AptFetcher, kernel_dependency, sha256_file
from banger_debian.initramfs import BUSYBOX_PATHS, build_initramfs
from banger_debian.plugin import is_static_elf
from banger_debian.vmlinux import extract_vmlinux_file
from banger_hookspecs import KernelArtifact, PluginContext, Progress, SourceUnavailable, boot

DPKG_DEB = "dpkg-deb"
DEPMOD_PATHS = (Path("/usr/sbin/depmod"), Path("/sbin/depmod"))


@dataclass(frozen=True)
class KernelRef:
    """What a kernel ref means in Debian terms."""

    metapackage: str
    version_prefix: str
    description: str


#: Kernel refs this provider claims.
REFS: Mapping[str, KernelRef] = {
    "generic-6.1": KernelRef("linux-image-cloud-amd64", "6.1.", "Debian 12 cloud kernel 6.1 (x86_64)"),
}


class KernelBuildError(RuntimeError):
    """The kernel package could not be turned into vmlinux + initramfs; the message says why."""


def _depmod() -> Path:
    for candidate in DEPMOD_PATHS:
        if candidate.exists():
            return candidate
    raise SourceUnavailable("depmod not found: install kmod")


def _busybox() -> Path:
    for candidate in BUSYBOX_PATHS:
        if is_static_elf(candidate):
            return candidate
    raise SourceUnavailable("no static busybox found: install busybox-static")


def assemble(deb: Path, dest: Path, progress: Progress, scratch: Path | None = None) -> tuple[str, list[str]]:
    """Unpack kernel package ``deb`` and write ``vmlinux``, ``initrd`` and ``config`` into ``dest``.

    The package is unpacked in a temporary directory under ``scratch`` (default: the system's).

    Returns:
        ``(kernel release, modules in load order)``.

    Raises:
        KernelBuildError: the package holds no single kernel, or vmlinux extraction failed.
        MissingModuleError: the kernel lacks a module the initramfs needs.
    """
    with tempfile.TemporaryDirectory(prefix="banger-kernel-", dir=scratch) as tmp:
        tree = Path(tmp)
        progress.step(f"unpacking {deb.name}")
        result = subprocess.run([DPKG_DEB, "-x", str(deb), str(tree)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KernelBuildError(f"dpkg-deb could not unpack {deb.name}: {result.stderr.strip()[-200:]}")
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise KernelBuildError(f"{deb.name} holds {len(kernels)} kernels in /boot, expected exactly one")
        release = kernels[0].name.removeprefix("vmlinuz-")
        module_dir = next(
            (d for d in (tree / "lib/modules" / release, tree / "usr/lib/modules" / release) if d.is_dir()), None
        )
        if module_dir is None:
            raise KernelBuildError(f"{deb.name} has no modules for {release}")
        if not (module_dir / "modules.dep").exists():
            # Debian generates modules.dep at install time; do the same for the unpacked tree.
            if not (tree / "lib").exists():
                (tree / "lib").symlink_to("usr/lib")  # depmod -b looks in <base>/lib/modules
            depmod = subprocess.run(
                [str(_depmod()), "-b", str(tree), release], capture_output=True, text=True, check=False
            )
            if depmod.returncode != 0:
                raise KernelBuildError(f"depmod failed for {release}: {depmod.stderr.strip()[-200:]}")
        progress.step("extracting ELF vmlinux")
        size = extract_vmlinux_file(kernels[0], dest / "vmlinux")
        progress.log(f"vmlinux: {size} bytes")
        progress.step("building banger initramfs")
        initrd, modules = build_initramfs(module_dir, _busybox())
        (dest / "initrd").write_bytes(initrd)
        progress.log(f"initramfs: {len(initrd)} bytes, modules {' '.join(modules)}")
        config = tree / "boot" / f"config-{release}"
        if config.exists():
            shutil.copyfile(config, dest / "config")
    return release, modules


class DebianKernelProvider:
    """Kernel provider driver; see :mod:`banger_debian`."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    def claims(self, ref: str) -> bool:
        """True for the refs in :data:`REFS`."""
        return ref in REFS

    def pull(self, ref: str, dest: Path, progress: Progress) -> KernelArtifact:
        """Fetch the kernel package for ``ref`` and write vmlinux, initrd, config and manifest.json."""
        if ref not in REFS:
            raise SourceUnavailable(f"the debian kernel provider has no kernel {ref!r}; it has {', '.join(REFS)}")
        if platform.machine() != "x86_64":
            raise SourceUnavailable(f"Debian's cloud kernel is for x86_64 hosts, this one is {platform.machine()}")
        spec = REFS[ref]
        cache = self.ctx.plugin_dir("debian", cache=True)
        fetcher = AptFetcher(cache, progress)
        progress.step(f"resolving {spec.metapackage}")
        meta = fetcher.show(spec.metapackage)
        package, version = kernel_dependency(meta)
        info = fetcher.show(package, version)
        if not info.version.startswith(spec.version_prefix):
            raise KernelBuildError(
                f"{spec.metapackage} now points at {info.name} {info.version}, not a {spec.version_prefix}x kernel: "
                f"kernel ref {ref} needs Debian 12 (bookworm) apt sources"
            )
        deb = fetcher.fetch(info)
        scratch = cache / "tmp"
        scratch.mkdir(mode=0o700, exist_ok=True)
        release, modules = assemble(deb, dest, progress, scratch)
        sha = {name: sha256_file(dest / name) for name in ("vmlinux", "initrd")}
        manifest = {
            "kind": "kernel",
            "ref": ref,
            "version": release,
            "boot_protocol": boot.BOOT_PROTOCOL,
            "sha256": sha,
            "package": info.name,
            "package_version": info.version,
            "package_sha256": info.sha256,
            "modules": modules,
            "built": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return KernelArtifact(
            ref=ref,
            version=release,
            vmlinux=dest / "vmlinux",
            initrd=dest / "initrd",
            boot_protocol=boot.BOOT_PROTOCOL,
            sha256=sha,
            metadata={k: manifest[k] for k in ("package", "package_version", "package_sha256", "modules", "built")},
        )
