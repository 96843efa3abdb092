"""``banger system install --root DIR --venv``: the real virtualenv, built from this checkout's wheels.

Slow (about a minute: every distribution is built with ``pip wheel`` and the
dependencies come from pip's index), so one test covers the whole path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from banger_core.common.buildinfo import commit_from_checkout
from banger_core.install.record import load_record

BANGER = str(Path(sys.executable).parent / "banger")
REPO = Path(__file__).resolve().parents[2]
#: 2025-12-01T00:00:00Z: the wheels' build stamp, through hatch_build.py.
EPOCH = "1764547200"


def test_venv_from_the_checkout_then_uninstall_purge(banger_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    env = {**banger_env, "SOURCE_DATE_EPOCH": EPOCH}
    result = subprocess.run(
        [BANGER, "system", "install", "--owner", "daemon", "--root", str(root), "--venv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    commit = commit_from_checkout(str(REPO))
    assert commit is not None
    record = load_record(root / "etc/banger/install.toml")
    assert (record.version, record.commit, record.built_at) == ("dev", commit, "2025-12-01T00:00:00Z")
    assert record.venv == f"/opt/banger/versions/dev-{commit[:8]}"
    venv = root / record.venv.lstrip("/")
    assert (root / "opt/banger/current").readlink() == Path(f"versions/dev-{commit[:8]}")
    # The scripts name the installed path, not the packaging root.
    interpreter = Path(record.venv, "bin", "python")
    assert (venv / "bin" / "bangerd").read_text().splitlines()[0] == f"#!{interpreter}"
    # Every banger distribution is this checkout's (an index may hold other projects called banger-*).
    listed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    ours = sorted(line for line in listed if line.startswith("banger"))
    expected = ["banger", "banger-hookspecs", *(f"banger-{p.name}" for p in (REPO / "plugins").glob("*/"))]
    assert ours == sorted(f"{name}==0.1.0" for name in expected)
    # The installed build says what install.toml says (cwd outside the checkout: no import from it).
    version = subprocess.run(
        [venv / "bin" / "python", "-m", "banger_core.daemon", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={k: v for k, v in banger_env.items() if k != "PYTHONPATH"},
    ).stdout
    assert version == f"bangerd dev (commit {commit[:8]}, built 2025-12-01T00:00:00Z)\n"

    removed = subprocess.run(
        [BANGER, "system", "uninstall", "--purge", "--root", str(root)], env=env, capture_output=True, text=True
    )
    assert removed.returncode == 0, removed.stderr
    assert list(root.iterdir()) == []
