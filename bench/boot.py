"""Launch → sshd-ready time of the golden image under QEMU TCG, beside the untrimmed baseline.

Run: .venv/bin/python bench/boot.py [--boots 5]   (as root the first time: images are built)

For each variant it boots the image ``--boots`` times (variants interleaved,
so load on the machine hits them alike) with the e2e tests' QEMU argv
(microvm, TCG, 2 vCPUs, usernet) and measures from QEMU's launch to

* ``banner``: sshd's ``SSH-`` banner on the forwarded port, and
* ``ssh``: a real ``ssh root@vm true`` with the pinned host key succeeding.

Variants: the golden image (boot trimming on, quiet console), the same recipe
with ``.no-lean-boot`` and a verbose console (the baseline: Debian's default
units incl. network-wait, every host key type generated at boot), and the
golden image with a verbose console (to separate the two effects). Prints
medians and the ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_e2e_helpers() -> ModuleType:
    """The e2e conftest (kernel/image fixtures' helpers and the QEMU launcher), as a module."""
    spec = importlib.util.spec_from_file_location("banger_e2e_conftest", ROOT / "tests/e2e/conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@dataclass
class Variant:
    label: str
    ref: str
    quiet: bool
    image: Path | None = None


def measure(
    e2e: ModuleType, variant: Variant, kernel: object, key: Path, workdir: Path, index: int
) -> tuple[float, float]:
    """Boot once; return seconds from launch to the SSH banner and to a successful ``ssh true``."""
    assert variant.image is not None
    vm = e2e.launch_tcg_vm(
        f"bench{index}", kernel, variant.image, workdir / f"{variant.label}-{index}", key, quiet=variant.quiet
    )
    try:
        banner = vm.wait_for_ssh(timeout=300)
        deadline = time.monotonic() + 120
        while True:
            result = subprocess.run([*vm.ssh_argv(), "true"], capture_output=True, timeout=120, check=False)
            if result.returncode == 0:
                return banner, time.monotonic() - vm.started
            if time.monotonic() > deadline:
                raise RuntimeError(f"ssh true kept failing: {result.stderr.decode(errors='replace').strip()}")
            time.sleep(0.2)
    finally:
        vm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--boots", type=int, default=5, help="boots per variant (default 5)")
    args = parser.parse_args()
    e2e = load_e2e_helpers()
    variants = [
        Variant("golden", e2e.GOLDEN_REF, quiet=True),
        Variant("baseline", f"{e2e.GOLDEN_REF}.no-lean-boot", quiet=False),
        Variant("golden-verbose", e2e.GOLDEN_REF, quiet=False),
    ]
    with tempfile.TemporaryDirectory(prefix="banger-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "kernel").mkdir()
        kernel = e2e.pull_kernel(workdir / "kernel", e2e.PrintingProgress("kernel"))
        for variant in variants:
            dest = workdir / f"image-{variant.label}"
            dest.mkdir()
            variant.image = e2e.pull_image(variant.ref, dest, e2e.PrintingProgress(variant.label)).rootfs
        key = workdir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

        samples: dict[str, list[tuple[float, float]]] = {v.label: [] for v in variants}
        for index in range(args.boots):
            for variant in variants:
                banner, ssh = measure(e2e, variant, kernel, key, workdir, index)
                samples[variant.label].append((banner, ssh))
                print(f"boot {index + 1}/{args.boots} {variant.label:<15} banner {banner:5.1f} s  ssh {ssh:5.1f} s")

    base_banner = statistics.median(b for b, _ in samples["baseline"])
    base_ssh = statistics.median(s for _, s in samples["baseline"])
    print(f"\nlaunch -> sshd ready, QEMU TCG microvm, 2 vCPUs, median of {args.boots} boots")
    print(f"{'variant':<16}{'SSH- banner':>12}{'ssh true':>10}{'ratio (ssh)':>13}")
    for variant in variants:
        banner = statistics.median(b for b, _ in samples[variant.label])
        ssh = statistics.median(s for _, s in samples[variant.label])
        note = "  (baseline)" if variant.label == "baseline" else ""
        print(f"{variant.label:<16}{banner:>10.1f} s{ssh:>8.1f} s{ssh / base_ssh:>13.2f}{note}")
    print(f"baseline banner median {base_banner:.1f} s")


if __name__ == "__main__":
    main()
