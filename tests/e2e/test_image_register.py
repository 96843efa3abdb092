"""A registered copy of the golden image boots under QEMU TCG, and the file registered is left as it was."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from plugins.register.tests.ext4_kit import Fingerprint
from tests.support.e2e import E2E, GOLDEN


def test_a_registered_golden_image_boots_and_stays_untouched(e2e: E2E, tmp_path: Path) -> None:
    golden = json.loads(e2e.banger("image", "show", GOLDEN, "--json", check=True).stdout)
    rootfs = tmp_path / "golden-copy.ext4"
    subprocess.run(["cp", "--sparse=always", golden["path"], str(rootfs)], check=True)
    before = Fingerprint.of(rootfs)

    registered = e2e.banger("image", "register", "--name", "registered-golden", "--rootfs", str(rootfs), "--json")
    assert registered.returncode == 0, registered.stderr
    image = json.loads(registered.stdout)
    assert (image["source"], image["kernel_ref"], image["meta"]["adopted_by"]) == (
        "register",
        golden["kernel_ref"],
        "hard link",
    )
    try:
        run = e2e.banger(
            "vm", "run", "--rm", "--image", "registered-golden", "--", "cat", "/etc/os-release", timeout=900
        )
        assert run.returncode == 0, run.stderr
        assert "bookworm" in run.stdout
    finally:
        e2e.banger("image", "delete", "registered-golden")
    assert Fingerprint.of(rootfs) == before
