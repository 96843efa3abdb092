"""The debian kernel provider: apt index parsing, .deb cache, assembling vmlinux + initramfs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger_core.testing import RecordingProgress
from banger_debian.apt import AptError, AptFetcher, PackageInfo, kernel_dependency, parse_show, sha256_file
from banger_debian.kernel import DebianKernelProvider, assemble
from banger_debian.moddep import MissingModuleError
from banger_debian.plugin import banger_kernel_providers
from banger_hookspecs import PluginContext, boot

pytestmark = pytest.mark.unit

SHOW = """\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel.
SHA256: 00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d

Package: linux-image-cloud-amd64
Version: 6.1.100-1
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
"""


def test_parse_show_reads_the_first_stanza() -> None:
    info = parse_show(SHOW)
    assert info == PackageInfo(
        "linux-image-cloud-amd64",
        "6.1.192-2",
        "00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d",
        ("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)",),
    )
    assert kernel_dependency(info) == ("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")


def test_parse_show_rejects_incomplete_or_odd_entries() -> None:
    assert parse_show("") is None
    assert parse_show("Package: x\nVersion: 1\n") is None  # no SHA256
    assert parse_show("Package: ../evil\nVersion: 1\nSHA256: ab\n") is None


def test_metapackage_without_kernel_dependency() -> None:
    with pytest.raises(AptError, match="not a kernel metapackage"):
        kernel_dependency(PackageInfo("linux-image-foo", "1", "ab", ("kmod", "linux-base (>= 4.3~)")))


def test_deb_name_drops_the_epoch() -> None:
    assert PackageInfo("linux-image-x", "1:6.1-2", "ab", ()).deb_name == "linux-image-x_6.1-2_amd64.deb"


def test_cached_deb_with_matching_digest_is_reused(tmp_path: Path) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    deb = debs / "linux-image-x_6.1-2_amd64.deb"
    deb.write_bytes(b"a kernel package")
    progress = RecordingProgress()
    got = AptFetcher(tmp_path, progress).fetch(PackageInfo("linux-image-x", "6.1-2", sha256_file(deb), ()))
    assert got == deb
    assert progress.steps == []  # no download step
    assert progress.lines == [f"using cached {deb.name}"]


def test_registration() -> None:
    (provider,) = banger_kernel_providers()
    assert provider.name == "debian"


def test_claims_only_known_refs(plugin_context: PluginContext) -> None:
    driver = DebianKernelProvider(plugin_context)
    assert driver.claims("generic-6.1")
    assert not driver.claims("generic-6.6")
    assert not driver.claims("../generic-6.1")


def make_kernel_deb(root: Path, modules_dep: str, synth: SimpleNamespace) -> Path:
    """A .deb laid out like Debian's kernel packages, with a synthetic bzImage and modules."""
    tree = root / "pkg"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-test").write_bytes(synth.make_bzimage(synth.make_elf(padding=4096)))
    (tree / "boot/config-6.1.0-test").write_text("CONFIG_PVH=y\n")
    module_dir = synth.fake_module_tree(tree, modules_dep)
    (module_dir / "modules.dep").unlink()  # Debian ships none: depmod runs at install time
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        "Package: linux-image-6.1.0-test\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n"
    )
    deb = root / "kernel.deb"
    subprocess.run(["dpkg-deb", "-Znone", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


def test_kernel_package_missing_a_module_names_it(tmp_path: Path, synth: SimpleNamespace) -> None:
    # Real .ko files are needed for depmod; the synthetic ones carry no dependency info,
    # so depmod writes every module with no dependencies; vsock & co. are missing.
    deb = make_kernel_deb(tmp_path, synth.DEP, synth)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(MissingModuleError, match="no module virtio_mmio"):
        assemble(deb, dest, RecordingProgress())


def test_pull_from_the_real_package(plugin_context: PluginContext, kernel_deb: Path, tmp_path: Path) -> None:
    # Seed the provider's cache with the package so the test does not download it again;
    # its digest is still checked against apt's index.
    debs = plugin_context.plugin_dir("debian", cache=True) / "debs"
    debs.mkdir()
    shutil.copyfile(kernel_deb, debs / kernel_deb.name)
    dest = tmp_path / "kernel"
    dest.mkdir()
    progress = RecordingProgress()
    artifact = DebianKernelProvider(plugin_context).pull("generic-6.1", dest, progress)

    assert f"using cached {kernel_deb.name}" in progress.lines
    assert artifact.version.startswith("6.1.") and artifact.version.endswith("-cloud-amd64")
    assert artifact.boot_protocol == boot.BOOT_PROTOCOL
    assert artifact.vmlinux.read_bytes()[:4] == b"\x7fELF"
    assert artifact.initrd.read_bytes()[:2] == b"\x1f\x8b"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["ref"] == "generic-6.1" and manifest["version"] == artifact.version
    assert manifest["sha256"] == {name: sha256_file(dest / name) for name in ("vmlinux", "initrd")}
    assert manifest["package_sha256"] == sha256_file(kernel_deb)
    assert sorted(os.listdir(dest)) == ["config", "initrd", "manifest.json", "vmlinux"]


def test_parse_show_reads_the_size_for_download_progress() -> None:
    info = parse_show("Package: hello\nVersion: 2.10-3\nSize: 53080\nSHA256: AB\n")
    assert info is not None and info.size == 53080
    assert parse_show("Package: hello\nVersion: 2.10-3\nSHA256: ab\n") == PackageInfo("hello", "2.10-3", "ab", ())


def test_a_real_apt_download_reports_its_bytes_against_the_index_size(tmp_path: Path) -> None:
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("needs apt-get and root (apt downloads as its _apt user): run on a Debian host as root")
    show = subprocess.run(["apt-cache", "show", "--no-all-versions", "hello"], capture_output=True, text=True)
    info = parse_show(show.stdout)
    if info is None:
        pytest.skip("apt does not know the hello package: run apt-get update")
    progress = RecordingProgress()
    deb = AptFetcher(tmp_path, progress).fetch(info)
    assert progress.steps == [f"downloading hello {info.version}"]
    assert progress.advances and {total for _, total, _ in progress.advances} == {info.size}
    assert progress.advances[-1] == (deb.stat().st_size, info.size, "B") == (info.size, info.size, "B")
