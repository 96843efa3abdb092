"""Releases for the updater's tests: tiny banger wheels, signed manifests, a release server on 127.0.0.1.

A real banger wheelhouse takes minutes to build and a venv of it as long to install; these
tests need what the updater does with one, not banger itself. A tiny ``banger`` wheel holds
the build stamp (``banger_core/_build_info.py``) the updater checks and a ``banger`` script
whose ``doctor`` fails when ``$BANGER_TEST_DOCTOR_FAILS`` names its version. Its releases are
laid out as scripts/release publishes them and signed by the test suite's own Sigstore lab.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from banger_updater.release import (
    WHEELHOUSE,
    Artifact,
    Manifest,
    ReleaseIndex,
    Version,
    artifact_path,
    host_platform,
    host_python,
    manifest_path,
    signature_path,
)

BUILT_AT = "2026-12-01T00:00:00Z"

FAKE_CLI = '''"""The test release's banger: only ``doctor`` (fails on purpose when told to) and ``version``."""
import os
import sys

from banger_core._build_info import VERSION


def main() -> None:
    if sys.argv[1:] == ["doctor"]:
        if os.environ.get("BANGER_TEST_DOCTOR_FAILS") == VERSION:
            print("ok    kvm       fine")
            print(f"FAIL  fake      the {VERSION} test release fails its doctor on purpose")
            sys.exit(1)
        print(f"ok    fake      {VERSION} is healthy")
        return
    print(f"banger {VERSION}")
'''


def commit_of(version: str) -> str:
    return hashlib.sha1(version.encode()).hexdigest()


def build_wheel(into: Path, dist: str, version: str, files: dict[str, str], scripts: dict[str, str]) -> Path:
    """A minimal valid wheel (pip installs it) of ``dist`` at ``version`` holding ``files``."""
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    entries = {path: text.encode() for path, text in files.items()}
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: banger-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        lines = "".join(f"{script} = {target}\n" for script, target in scripts.items())
        entries[f"{info}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    record = []
    for path, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = into / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in entries.items():
            archive.writestr(zipfile.ZipInfo(path, (2026, 12, 1, 0, 0, 0)), data)
    return wheel


def banger_wheel(into: Path, version: str) -> Path:
    """The tiny banger of release ``version`` (``v0.2.0``)."""
    stamp = f"VERSION = {version!r}\nCOMMIT = {commit_of(version)!r}\nBUILT = {BUILT_AT!r}\n"
    files = {"banger_core/__init__.py": "", "banger_core/_build_info.py": stamp, "banger_core/fakecli.py": FAKE_CLI}
    return build_wheel(into, "banger", version.lstrip("v"), files, {"banger": "banger_core.fakecli:main"})


def tar_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def publish(
    base: Path,
    version: str,
    lab: TrustLab,
    *,
    tar: bytes | None = None,
    python: str | None = None,
    identity: str = TEST_IDENTITY,
    issuer: str = TEST_ISSUER,
) -> Manifest:
    """Release ``version`` under ``base`` as scripts/release lays it out, signed by ``lab``; listed in the index."""
    parsed = Version.parse(version)
    if tar is None:
        scratch = base / ".wheels" / version
        scratch.mkdir(parents=True, exist_ok=True)
        wheel = banger_wheel(scratch, version)
        tar = tar_of({wheel.name: wheel.read_bytes()})
    name = f"banger-{version}-wheelhouse.tar"
    (base / version).mkdir(parents=True, exist_ok=True)
    (base / artifact_path(parsed, name)).write_bytes(tar)
    artifact = Artifact(name, WHEELHOUSE, hashlib.sha256(tar).hexdigest(), len(tar))
    manifest = Manifest(parsed, commit_of(version), BUILT_AT, python or host_python(), host_platform(), (artifact,))
    data = manifest.to_json()
    (base / manifest_path(parsed)).write_bytes(data)
    (base / signature_path(parsed)).write_bytes(lab.sign(data, identity=identity, issuer=issuer))
    index_file = base / "index.json"
    index = ReleaseIndex.from_json(index_file.read_bytes(), "index") if index_file.exists() else ReleaseIndex(())
    index_file.write_bytes(index.adding(parsed).to_json())
    return manifest


def tree(root: Path) -> list[str]:
    """Every path under ``root`` with its type, link target or content digest: "nothing changed" compares these."""
    out = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_symlink():
            out.append(f"{relative} -> {path.readlink()}")
        elif path.is_file():
            out.append(f"{relative} {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}")
        else:
            out.append(f"{relative}/")
    return out
