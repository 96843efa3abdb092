"""Export and unpack a sparse 1 GiB ext4 rootfs as a bundle, beside plain-tool baselines.

Run: .venv/bin/python bench/bundles.py [--source DIR ...] [--size 1G] [--runs 3]

Builds ``rootfs.ext4`` with ``mkfs.ext4 -d`` from the source directories (hard-linked
into a staging dir), then measures, in the same run:

* baseline ``sha256sum`` of the rootfs (reads every byte: the least a verified export does);
* baseline ``zstd -T0 -3`` of the rootfs (what compressing it costs with the reference tool);
* ``write_bundle`` (banger_core.common.bundles), without and with a digest recorded in the source
  manifest, and ``extract_bundle`` (banger_hookspecs.bundle_reader).

Prints median seconds, ratios to the baselines, the bundle size, and how much disk the
source and the extracted rootfs really use (sparseness kept or lost).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from banger_core.common.bundles import write_bundle
from banger_core.common.progress import NullProgress
from banger_hookspecs.bundle_reader import extract_bundle

DEFAULT_SOURCES = ["/usr/share/doc", "/usr/share/locale", "/usr/lib/gcc", "/usr/lib/python3"]


def _median(runs: int, action: Callable[[], object], before: Callable[[], object] = lambda: None) -> float:
    samples = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _build_rootfs(work: Path, sources: list[str], size: str) -> Path:
    staging = work / "staging"
    staging.mkdir()
    for source in sources:
        target = staging / Path(source).name
        # Hard links when on the same filesystem (instant), a copy otherwise.
        if subprocess.run(["cp", "-al", source, str(target)], capture_output=True).returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["cp", "-a", source, str(target)], check=True)
    image = work / "image"
    image.mkdir()
    rootfs = image / "rootfs.ext4"
    subprocess.run(["/usr/sbin/mkfs.ext4", "-q", "-F", "-d", str(staging), str(rootfs), size], check=True)
    shutil.rmtree(staging)
    (image / "manifest.json").write_text(json.dumps({"name": "bench", "version": "1", "kernel_ref": "generic-6.1"}))
    return image


def _mib(n: float) -> str:
    return f"{n / (1 << 20):8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", help="directory to put in the rootfs (repeatable)")
    parser.add_argument("--size", default="1G", help="apparent size of rootfs.ext4 (mkfs.ext4 syntax)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("zstd") is None:
        sys.exit("the zstd program is needed for the baseline (apt-get install zstd)")

    with tempfile.TemporaryDirectory(prefix="banger-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        image = _build_rootfs(work, args.source or DEFAULT_SOURCES, args.size)
        rootfs = image / "rootfs.ext4"
        bundle = work / "bench.tar.zst"
        dest = work / "dest"
        st = rootfs.stat()
        print(f"rootfs.ext4 apparent {_mib(st.st_size)}, allocated {_mib(st.st_blocks * 512)}")

        subprocess.run(["sha256sum", str(rootfs)], check=True, capture_output=True)  # warm the page cache
        sha = _median(args.runs, lambda: subprocess.run(["sha256sum", str(rootfs)], check=True, capture_output=True))
        zstd_out = work / "plain.zst"
        zstd = _median(
            args.runs,
            lambda: subprocess.run(
                ["zstd", "-q", "-f", "-T0", "-3", str(rootfs), "-o", str(zstd_out)], check=True, capture_output=True
            ),
        )
        export = _median(args.runs, lambda: write_bundle("image", image, bundle, NullProgress(), overwrite=True))
        # An image directory whose manifest records the rootfs digest (as a pulled or a built one
        # does) spares the hash pass.
        info = write_bundle("image", image, bundle, NullProgress(), overwrite=True)
        recorded = json.loads((image / "manifest.json").read_text())
        recorded["sha256"] = info.manifest.files["rootfs.ext4"].sha256
        (image / "manifest.json").write_text(json.dumps(recorded))
        export_recorded = _median(
            args.runs, lambda: write_bundle("image", image, bundle, NullProgress(), overwrite=True)
        )
        unpack = _median(
            args.runs,
            lambda: extract_bundle(bundle, "image", dest, NullProgress(), "bench"),
            before=lambda: shutil.rmtree(dest, ignore_errors=True),
        )
        extracted = (dest / "rootfs.ext4").stat()

        print(f"baseline sha256sum      {sha:6.2f} s")
        print(f"baseline zstd -T0 -3    {zstd:6.2f} s   -> {_mib(zstd_out.stat().st_size)}")
        print(
            f"write_bundle            {export:6.2f} s   -> {_mib(bundle.stat().st_size)}   "
            f"{export / sha:4.2f}x sha256sum, {export / zstd:4.2f}x zstd"
        )
        print(
            f"  with recorded digest  {export_recorded:6.2f} s   "
            f"{export_recorded / sha:4.2f}x sha256sum, {export_recorded / zstd:4.2f}x zstd"
        )
        print(f"extract_bundle          {unpack:6.2f} s   {unpack / sha:4.2f}x sha256sum")
        print(
            f"extracted rootfs        allocated {_mib(extracted.st_blocks * 512)} "
            f"(source {_mib(st.st_blocks * 512)}), apparent {_mib(extracted.st_size)}"
        )


if __name__ == "__main__":
    main()
