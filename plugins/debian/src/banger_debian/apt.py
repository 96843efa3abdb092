"""Get a Debian kernel package with the host's apt, verified against apt's index, cached by name.

``linux-image-cloud-amd64`` is a metapackage; the kernel lives in the package
it depends on (``linux-image-6.1.0-NN-cloud-amd64``). We ask ``apt-cache show``
for that package's version and SHA256, reuse a cached ``.deb`` whose digest
matches, and otherwise ``apt-get download`` it. ``apt-get update`` runs only
when apt does not know the package or the index is stale.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from banger_hookspecs import Progress, SourceUnavailable

APT_GET = "apt-get"
APT_CACHE = "apt-cache"
_DEPENDS_RE = re.compile(r"^(linux-image-[a-z0-9.+-]+)(?:\s*\(=\s*([^)\s]+)\))?$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9.+~:-]+$")
#: Seconds; a kernel .deb is tens of MB, a slow mirror takes minutes.
DOWNLOAD_TIMEOUT = 1800
#: Seconds between progress reports while ``apt-get download`` runs.
PROGRESS_POLL = 0.5


class AptError(RuntimeError):
    """apt could not provide the package; the message says why and what to do."""


@dataclass(frozen=True)
class PackageInfo:
    """What apt's index says about one package version."""

    name: str
    version: str
    sha256: str
    depends: tuple[str, ...]
    size: int | None = None  # bytes of the .deb, for download progress

    @property
    def deb_name(self) -> str:
        """File name ``apt-get download`` gives it (epochs are dropped)."""
        return f"{self.name}_{self.version.split(':', 1)[-1]}_amd64.deb"


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SourceUnavailable(f"{argv[0]} not found: the Debian kernel needs a Debian/Ubuntu host with apt") from None


def parse_show(text: str) -> PackageInfo | None:
    """Parse the first stanza of ``apt-cache show --no-all-versions``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    name, version, sha256 = fields.get("Package"), fields.get("Version"), fields.get("SHA256")
    if not name or not version or not sha256 or not _PACKAGE_RE.match(name) or not _VERSION_RE.match(version):
        return None
    depends = tuple(part.strip() for part in fields.get("Depends", "").split(",") if part.strip())
    size = fields.get("Size", "")
    return PackageInfo(name, version, sha256.lower(), depends, int(size) if size.isdigit() else None)


def kernel_dependency(meta: PackageInfo) -> tuple[str, str | None]:
    """``(package, version or None)`` of the kernel a ``linux-image-*`` metapackage depends on."""
    for dep in meta.depends:
        match = _DEPENDS_RE.match(dep.split("|", 1)[0].strip())
        if match:
            return match.group(1), match.group(2)
    raise AptError(f"{meta.name} {meta.version} depends on no linux-image package: it is not a kernel metapackage")


def _bytes_in(directory: Path) -> int:
    """What apt has written so far (it downloads straight into the target directory)."""
    total = 0
    for entry in directory.iterdir():
        try:
            total += entry.stat().st_size
        except FileNotFoundError:  # apt renamed or removed it meanwhile
            continue
    return total


class AptFetcher:
    """Downloads packages into ``cache_dir`` using the host's apt configuration."""

    def __init__(self, cache_dir: Path, progress: Progress) -> None:
        self.cache_dir = cache_dir
        self.progress = progress
        self._updated = False

    def update(self) -> None:
        """``apt-get update`` (once per fetcher); needs root."""
        if self._updated:
            return
        if os.geteuid() != 0:
            raise SourceUnavailable(
                "apt's package index lacks the kernel package and only root can refresh it: "
                "run `sudo apt-get update`, then pull again"
            )
        self.progress.step("apt-get update")
        result = _run([APT_GET, "update"], timeout=900)
        for line in result.stdout.splitlines():
            self.progress.log(line)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise AptError(f"apt-get update failed: {last}")
        self._updated = True

    def show(self, package: str, version: str | None = None) -> PackageInfo:
        """The index entry of ``package`` (at ``version``), refreshing the index once if apt lacks it."""
        spec = f"{package}={version}" if version else package
        for attempt in (1, 2):
            result = _run([APT_CACHE, "show", "--no-all-versions", spec], timeout=120)
            info = parse_show(result.stdout) if result.returncode == 0 else None
            if info is not None:
                return info
            if attempt == 1:
                self.update()
        raise AptError(f"apt knows no package {spec}: check the host's apt sources (Debian main must be enabled)")

    def _download(self, info: PackageInfo, scratch: Path) -> subprocess.CompletedProcess[str]:
        """``apt-get download`` into ``scratch``, reporting the bytes it has written as it goes."""
        argv = [APT_GET, "download", f"{info.name}={info.version}"]
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        deadline = time.monotonic() + DOWNLOAD_TIMEOUT
        try:
            proc = subprocess.Popen(
                argv, cwd=scratch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except FileNotFoundError:
            raise SourceUnavailable(
                f"{APT_GET} not found: the Debian kernel needs a Debian/Ubuntu host with apt"
            ) from None
        with proc:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=PROGRESS_POLL)
                    break
                except subprocess.TimeoutExpired:  # still downloading: nothing of its output is lost
                    if time.monotonic() > deadline:
                        proc.kill()
                        proc.communicate()
                        raise AptError(
                            f"apt-get download {info.name} took over {DOWNLOAD_TIMEOUT // 60} minutes: "
                            "check the host's apt mirror, then pull again"
                        ) from None
                    self.progress.advance(_bytes_in(scratch), info.size)
        got = scratch / info.deb_name
        if proc.returncode == 0 and got.is_file():
            self.progress.advance(got.stat().st_size, info.size)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def fetch(self, info: PackageInfo) -> Path:
        """Path of the verified ``.deb`` for ``info`` in the cache, downloading it if needed."""
        debs = self.cache_dir / "debs"
        debs.mkdir(mode=0o700, parents=True, exist_ok=True)
        cached = debs / info.deb_name
        if cached.is_file() and sha256_file(cached) == info.sha256:
            self.progress.log(f"using cached {cached.name}")
            return cached
        scratch = debs / f".download-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o755)  # apt's _apt sandbox user must be able to write here
        try:
            for attempt in (1, 2):
                self.progress.step(f"downloading {info.name} {info.version}")
                result = self._download(info, scratch)
                for line in (result.stdout + result.stderr).splitlines():
                    self.progress.log(line)
                got = scratch / info.deb_name
                if result.returncode == 0 and got.is_file():
                    if sha256_file(got) != info.sha256:
                        raise AptError(f"{got.name} does not match the SHA256 in apt's index: try again later")
                    os.replace(got, cached)
                    return cached
                if attempt == 1:
                    self.update()  # a stale index points at files the mirror no longer has
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise AptError(f"apt-get download {info.name} failed: {last}")
        finally:
            for leftover in scratch.iterdir():
                leftover.unlink()
            scratch.rmdir()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
