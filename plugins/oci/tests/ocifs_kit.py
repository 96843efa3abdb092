"""Test kit for the flattener and the ext4 builder: layers written with tarfile, ext4 read back with debugfs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from banger_oci.layers import Layer

DEBUGFS = "/usr/sbin/debugfs"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"
#: cap_net_bind_service, VFS_CAP_REVISION_2 (permitted, effective).
CAPABILITY = bytes.fromhex("0100000200040000000000000000000000000000")


@dataclass
class E:
    """One tar entry to write."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    link: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    pax: dict[str, str] = field(default_factory=dict)


def d(name: str, mode: int = 0o755, **kw: object) -> E:
    return E(name, tarfile.DIRTYPE, mode=mode, **kw)  # type: ignore[arg-type]


def tar_bytes(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.uid, info.gid, info.mtime = e.type, e.mode, e.uid, e.gid, e.mtime
            info.linkname, info.devmajor, info.devminor = e.link, e.major, e.minor
            info.pax_headers = {**{f"SCHILY.xattr.{k}": v.decode() for k, v in e.xattrs.items()}, **e.pax}
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def compress(raw: bytes, media_type: str) -> bytes:
    if media_type.endswith("gzip"):
        return gzip.compress(raw)
    if media_type == ZSTD:
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def write_layer(directory: Path, entries: list[E], media_type: str = GZIP, raw: bytes | None = None) -> Layer:
    """A layer blob in ``directory`` (content-addressed like a registry's blob store)."""
    raw = tar_bytes(entries) if raw is None else raw
    blob = compress(raw, media_type)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha256(blob).hexdigest()
    path.write_bytes(blob)
    return Layer(path, media_type, f"sha256:{hashlib.sha256(raw).hexdigest()}")


def write_oci_layout(directory: Path, layers: list[Layer], tag: str = "test") -> None:
    """An OCI image layout holding ``layers`` (for umoci / skopeo)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
    ).encode()
    descriptors = [
        {"mediaType": layer.media_type, "digest": put(layer.path.read_bytes()), "size": layer.path.stat().st_size}
        for layer in layers
    ]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@dataclass
class Seen:
    """One object as read back from an ext4 image (or a host tree)."""

    type: str  # file dir symlink char block fifo
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    links: int
    mtime: int
    data: bytes = b""  # file content or symlink target
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    inode: int = 0


TYPES = {0o10: "file", 0o04: "dir", 0o12: "symlink", 0o02: "char", 0o06: "block", 0o01: "fifo"}


def _debugfs(image: Path, commands: list[str], work: Path) -> list[str]:
    """Run ``commands`` in one debugfs session; returns each command's output."""
    script = work / "read.cmds"
    script.write_text("".join(c + "\n" for c in commands), errors="surrogateescape")
    argv = [DEBUGFS, "-f", str(script), str(image)]
    out = subprocess.run(argv, capture_output=True, check=True).stdout.decode(errors="surrogateescape")
    chunks = re.split(r"^debugfs: .*\n", out, flags=re.M)[1:]
    assert len(chunks) == len(commands), out
    return chunks


def q(path: str) -> str:
    return '"' + path.replace('"', '""') + '"'


def read_ext4(image: Path, work: Path) -> dict[str, Seen]:
    """Every object in ``image`` (but lost+found) by absolute path, read with debugfs only."""
    work.mkdir(exist_ok=True)
    entries: dict[str, tuple[int, int]] = {"/": (2, 0o40755)}
    level = ["/"]
    while level:
        listings = _debugfs(image, [f"ls -p {q(p)}" for p in level], work)
        nxt = []
        for parent, listing in zip(level, listings, strict=True):
            for line in listing.splitlines():
                if not line.startswith("/"):
                    continue
                _, inode, mode, _uid, _gid, rest = line.split("/", 5)
                name = rest.rsplit("/", 2)[0]
                if name in (".", "..") or (parent == "/" and name == "lost+found"):
                    continue
                path = parent.rstrip("/") + "/" + name
                entries[path] = (int(inode), int(mode, 8))
                if int(mode, 8) >> 12 == 0o04:
                    nxt.append(path)
        level = nxt
    paths = sorted(entries)
    stats = _debugfs(image, [f"stat {q(p)}" for p in paths], work)
    seen: dict[str, Seen] = {}
    commands: list[str] = []
    for path, stat in zip(paths, stats, strict=True):
        inode, mode = entries[path]
        kind = TYPES[mode >> 12]
        user = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", stat)
        links = re.search(r"Links: (\d+)", stat)
        mtime = re.search(r" mtime: 0x([0-9a-f]+)", stat)
        assert user and links and mtime, stat
        item = Seen(kind, mode & 0o7777, int(user[1]), int(user[2]), int(links[1]), int(mtime[1], 16), inode=inode)
        if kind in ("char", "block"):
            device = re.search(r"Device major/minor number: (\d+):(\d+)", stat)
            assert device, stat
            item.rdev = (int(device[1]), int(device[2]))
        fast_link = re.search(r'Fast link dest: "(.*)"', stat)
        if fast_link:
            item.data = fast_link[1].encode()
        elif kind in ("file", "symlink"):  # a long symlink target is stored in a block, like content
            commands.append(f"dump {q(path)} {q(str(work / str(inode)))}")
        for name in re.findall(r"^  (\S+) \(\d+\)", stat.split("Extended attributes:")[-1], re.M):
            if "Extended attributes:" in stat:
                value = work / f"{inode}.{name}"
                commands.append(f"ea_get -f {q(str(value))} {q(path)} {name}")
                item.xattrs[name] = b""
        seen[path] = item
    if commands:
        _debugfs(image, commands, work)
    for item in seen.values():
        if item.type == "file" or (item.type == "symlink" and not item.data):
            item.data = (work / str(item.inode)).read_bytes()
        for name in item.xattrs:
            item.xattrs[name] = (work / f"{item.inode}.{name}").read_bytes()
    return seen
