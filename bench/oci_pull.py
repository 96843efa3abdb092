"""Pull a ~200 MB multi-layer image from a local registry: banger's oci source beside skopeo + umoci.

Run (as root, for ``umoci unpack``): .venv/bin/python bench/oci_pull.py [--runs 3] [--size-mib 200] [--profile FILE]

Builds, in the same run, an OCI image of four gzip layers with a realistic mix of
file sizes (thousands of small text files, shared libraries, a few large
assets; half of the bytes compress, half do not), symlinks, hard links, whiteouts
and an opaque directory, pushes it with ``skopeo copy`` to Debian's
``docker-registry`` started on 127.0.0.1, then times, each round from a cold
cache:

* banger: ``OciImageSource.pull`` (what ``banger image pull 127.0.0.1:PORT/...``
  runs in the daemon: resolve, download + verify into an empty blob cache, flatten,
  make bootable, ``mkfs.ext4`` + one ``debugfs`` script + ``e2fsck -fn``, hash);
* baseline: ``skopeo copy docker://... oci:DIR:TAG`` then ``umoci unpack --image
  DIR:TAG BUNDLE`` (as root: real owners, a plain directory tree).

Prints each round, the medians, the ratio banger / baseline (target <= 1.3), and
where banger's time went (its progress steps). ``--profile FILE`` writes a
cProfile of one extra banger round.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import hashlib
import io
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from banger_core.testing import isolated_env, make_plugin_context
from banger_oci.source import OciImageSource

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MTIME = 1_700_000_000
TAG = "bench"
REPO = "bench/oci-pull"
WORDS = (
    b"the quick brown fox jumps over lazy dog lorem ipsum dolor sit amet config value path usr lib share doc "
    b"include define return static const struct int char void if else for while case break default"
).split()


class TimedProgress:
    """A banger Progress that records when each step started, to split a pull into its phases."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, str]] = []

    def step(self, message: str) -> None:
        self.steps.append((time.perf_counter(), message))

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def phases(self, end: float) -> dict[str, float]:
        """Seconds per phase: downloads, flattening, the ext4 build, hashing (steps grouped by their first word)."""
        names = {"downloading": "download", "flattening": "flatten", "building": "ext4", "hashing": "sha256"}
        out: dict[str, float] = {}
        marks = [*self.steps, (end, "")]
        for (start, message), (stop, _) in itertools.pairwise(marks):
            phase = names.get(message.split(" ", 1)[0], "resolve")
            if message.startswith("building the root filesystem"):
                phase = "flatten"  # the flattener reports its own layers next; this step is its setup
            out[phase] = out.get(phase, 0.0) + stop - start
        return out


# -------------------------------------------------------------- the image


class LayerWriter:
    """Adds entries to one layer's (PAX) tar stream."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar

    def _info(self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
        return info

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def hardlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        self._tar.addfile(info)

    def whiteout(self, path: str) -> None:
        head, _, name = path.rpartition("/")
        self.file(f"{head}/.wh.{name}" if head else f".wh.{name}", b"")

    def opaque(self, directory: str) -> None:
        self.file(f"{directory}/.wh..wh..opq", b"")


def write_layer(path: Path, fill: Callable[[LayerWriter], None]) -> dict[str, object]:
    """Write a gzip layer at ``path`` with what ``fill`` adds; returns its digest, size and diff_id."""
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed:
        plain = _HashingWriter(packed)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            fill(LayerWriter(tar))
    blob = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            blob.update(chunk)
    return {
        "digest": f"sha256:{blob.hexdigest()}",
        "size": path.stat().st_size,
        "diff_id": f"sha256:{plain.digest.hexdigest()}",
    }


class _HashingWriter:
    def __init__(self, sink: gzip.GzipFile) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.sink.write(data)


class Content:
    """Seeded file contents: text-like (compresses ~4:1) or random (does not compress), as real images mix."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            out += b" ".join(self.rng.choices(WORDS, k=12)) + b"\n"
        return bytes(out[:size])

    def binary(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def mixed(self, size: int) -> bytes:
        """Half text, half random: a shared library or an executable."""
        return self.text(size // 2) + self.binary(size - size // 2)


def _sizes(rng: random.Random, total: int) -> Iterator[int]:
    """File sizes until ``total`` bytes, a distribution's mix: 85% under 8 KiB, 13% up to 128 KiB, 2% up to 2 MiB."""
    while total > 0:
        pick = rng.random()
        if pick < 0.85:
            size = rng.randint(64, 8 << 10)
        elif pick < 0.98:
            size = rng.randint(8 << 10, 128 << 10)
        else:
            size = rng.randint(128 << 10, 2 << 20)
        size = min(size, total)
        total -= size
        yield size


def _fill(layer: LayerWriter, content: Content, top: str, total: int, dirs: int) -> list[str]:
    """``total`` bytes of files spread over ``dirs`` directories under ``top``; returns the file names."""
    names = []
    for d in range(dirs):
        layer.directory(f"{top}/d{d:03}")
    for number, size in enumerate(_sizes(content.rng, total)):
        name = f"{top}/d{number % dirs:03}/f{number:05}"
        if size > 32 << 10:
            layer.file(name + ".so", content.mixed(size), 0o755)
            names.append(name + ".so")
        else:
            layer.file(name + ".txt", content.text(size))
            names.append(name + ".txt")
    return names


def build_layout(root: Path, size_mib: int) -> Path:
    """An OCI layout with tag TAG whose layers hold about ``size_mib`` MiB; returns its directory."""
    layout = root / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    total = size_mib << 20
    content = Content(seed=12)
    descriptors: list[dict[str, object]] = []

    def layer(fill: Callable[[LayerWriter], None]) -> None:
        path = root / f"layer{len(descriptors)}.tar.gz"
        descriptor = write_layer(path, fill)
        os.replace(path, blobs / str(descriptor["digest"]).removeprefix("sha256:"))
        descriptors.append(descriptor)

    base_files: list[str] = []

    def base(w: LayerWriter) -> None:
        for name in ("etc", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/share", "var", "var/lib", "opt"):
            w.directory(name)
        w.symlink("bin", "usr/bin")
        w.symlink("sbin", "usr/sbin")
        w.symlink("lib", "usr/lib")
        w.file("usr/lib/systemd/systemd", content.mixed(1 << 20), 0o755)
        w.symlink("usr/sbin/init", "../lib/systemd/systemd")
        w.file("usr/sbin/sshd", content.mixed(900 << 10), 0o755)
        w.file("usr/bin/passwd", content.mixed(60 << 10), 0o4755)
        w.file("usr/bin/perl", content.mixed(3 << 20), 0o755)
        w.hardlink("usr/bin/perl5.36", "usr/bin/perl")
        w.file("etc/os-release", b"ID=bench\nNAME=bench\n")
        w.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640, 0, 42)
        base_files.extend(_fill(w, content, "usr/lib", total * 45 // 100, 60))
        base_files.extend(_fill(w, content, "usr/share", total * 15 // 100, 120))

    def runtime(w: LayerWriter) -> None:
        w.directory("opt/runtime")
        _fill(w, content, "opt/runtime", total * 20 // 100, 200)

    def app(w: LayerWriter) -> None:
        for name in base_files[::40]:  # package removals
            w.whiteout(name)
        w.opaque("usr/share/d007")  # a directory replaced as a whole
        w.file("usr/share/d007/replaced.txt", content.text(4096))
        for name in base_files[1::97]:  # upgrades
            w.file(name, content.mixed(32 << 10), 0o755)
        w.directory("srv")
        w.directory("srv/app", 0o750)
        _fill(w, content, "srv/app", total * 15 // 100, 30)
        w.file("srv/app/data.bin", content.binary(total * 4 // 100), 0o600, 1000, 1000)

    def config(w: LayerWriter) -> None:
        w.whiteout("usr/bin/perl5.36")
        w.file("etc/hostname", b"bench\n")
        w.file("etc/app.conf", content.text(2000), 0o600, 1000, 42)

    for fill in (base, runtime, app, config):
        layer(fill)
    config_blob = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/sbin/init"]},
            "rootfs": {"type": "layers", "diff_ids": [d["diff_id"] for d in descriptors]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(blobs, config_blob)},
        "layers": [{"mediaType": LAYER_GZIP, "digest": d["digest"], "size": d["size"]} for d in descriptors],
    }
    top = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(blobs, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": TAG},
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return layout


def _blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


# -------------------------------------------------------------- the registry


class LocalRegistry:
    """Debian's docker-registry on 127.0.0.1 (an ephemeral port), stopped by PID."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.host = f"127.0.0.1:{s.getsockname()[1]}"
        (root / "storage").mkdir(parents=True)
        config = root / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.log = root / "registry.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit(f"docker-registry did not start: {self.log.read_text()[-500:]}")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        sys.exit(f"{argv[0]} {argv[1]} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


# -------------------------------------------------------------- the two pulls


def pull_banger(work: Path, ref: str, profile: Path | None = None) -> tuple[float, dict[str, float], int]:
    """One cold banger pull; returns (seconds, phases, rootfs size)."""
    env = isolated_env(work / "env")
    try:
        source = OciImageSource(make_plugin_context(env))
        dest = work / "image"
        dest.mkdir()
        progress = TimedProgress()
        profiler = cProfile.Profile() if profile is not None else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        artifact = source.pull(ref, dest, progress)
        if profiler is not None:
            profiler.disable()
        end = time.perf_counter()
        if profiler is not None and profile is not None:
            profiler.dump_stats(profile)
        return end - start, progress.phases(end), artifact.size
    finally:
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def pull_baseline(work: Path, ref: str) -> tuple[float, float]:
    """One cold ``skopeo copy`` + ``umoci unpack``; returns the seconds of each."""
    layout, bundle = work / "oci", work / "bundle"
    work.mkdir()
    try:
        start = time.perf_counter()
        _run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:{TAG}"])
        copied = time.perf_counter()
        _run(["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)])
        return copied - start, time.perf_counter() - copied
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of each pull (the median is reported)")
    parser.add_argument("--size-mib", type=int, default=200, help="uncompressed size of the image's files")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one extra banger pull here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the baseline's `umoci unpack` needs root to keep the image's owners")
    for tool in ("docker-registry", "skopeo", "umoci"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (scripts/setup --test installs it)")

    with tempfile.TemporaryDirectory(prefix="banger-bench-oci-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        layout = build_layout(root, args.size_mib)
        index = json.loads((layout / "index.json").read_text())
        blob_bytes = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        print(f"image built in {time.perf_counter() - started:.1f} s: {blob_bytes / (1 << 20):.1f} MiB of blobs")
        registry = LocalRegistry(root / "registry")
        try:
            ref = f"{registry.host}/{REPO}:{TAG}"
            _run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
                  f"oci:{layout}:{TAG}", f"docker://{ref}"])  # fmt: skip
            print(f"pushed to {ref} ({index['manifests'][0]['digest'][:19]})")
            banger, baseline = [], []
            phases: dict[str, list[float]] = {}
            size = 0
            for number in range(1, args.runs + 1):
                seconds, split, size = pull_banger(root / f"banger{number}", ref)
                copy, unpack = pull_baseline(root / f"baseline{number}", ref)
                banger.append(seconds)
                baseline.append(copy + unpack)
                for name, value in split.items():
                    phases.setdefault(name, []).append(value)
                detail = " ".join(f"{name} {value:.1f}" for name, value in split.items())
                print(
                    f"round {number}: banger {seconds:6.2f} s ({detail}) | "
                    f"skopeo copy {copy:5.2f} s + umoci unpack {unpack:5.2f} s = {copy + unpack:6.2f} s"
                )
            med_banger, med_baseline = statistics.median(banger), statistics.median(baseline)
            print(f"rootfs.ext4: {size / (1 << 20):.0f} MiB")
            medians = ", ".join(f"{name} {statistics.median(values):.2f}" for name, values in phases.items())
            print(f"banger phases (median s): {medians}")
            print(f"median banger {med_banger:.2f} s, skopeo+umoci {med_baseline:.2f} s")
            print(f"ratio banger / skopeo+umoci: {med_banger / med_baseline:.2f} (target <= 1.3)")
            if args.profile is not None:
                pull_banger(root / "profiled", ref, args.profile)
                print(f"cProfile of one more banger pull: {args.profile} (python -m pstats)")
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
