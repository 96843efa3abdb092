"""The pinned Sigstore root travels in banger's wheel, and the installed code verifies against it.

banger's wheel is built with `pip wheel` (as releases are: pip needs its index for hatchling, in
its isolated build environment) and unpacked; a Python whose path starts at the unpacked wheel (not
this checkout) loads the pinned root from there and refuses a bundle of the test lab with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from banger_core.testing.sigstore_lab import TEST_IDENTITY, TEST_ISSUER, TrustLab
from banger_core.trust import PINNED_TRUSTED_ROOT

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MEMBER = "banger_core/trust/public_good_trusted_root.json"


def test_the_wheel_ships_the_pinned_root_and_verifies_with_it(tmp_path: Path, trust_lab: TrustLab) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("banger-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(MEMBER) == PINNED_TRUSTED_ROOT.read_bytes()
        archive.extractall(tmp_path / "site")

    bundle = tmp_path / "manifest.json.sigstore.json"
    bundle.write_bytes(trust_lab.sign(b"{}"))
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import banger_core.trust as trust\n"
        "print(trust.PINNED_TRUSTED_ROOT)\n"
        "try:\n"
        f"    trust.verify_bytes(b'{{}}', Path({str(bundle)!r}).read_bytes(), "
        f"trust.SigningPolicy({TEST_IDENTITY!r}, {TEST_ISSUER!r}))\n"
        "except trust.SignatureRefused as exc:\n"
        "    print(exc)\n"
    )
    env["PYTHONPATH"] = str(tmp_path / "site")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root, refusal = done.stdout.splitlines()
    assert root == str(tmp_path / "site" / MEMBER)
    assert "does not chain to a certificate authority of banger's pinned Sigstore public-good root" in refusal
