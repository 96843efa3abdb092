"""Config keys that reach a real guest: ``ssh_key_path`` is the key a booted VM lets in."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import E2E, E2E_CONFIG, GOLDEN, make_env


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[E2E]:
    """A daemon of its own (ssh_key_path is read at start) whose config names a key that does not exist yet."""
    if os.geteuid() != 0:
        pytest.skip("e2e tests build the golden image with debootstrap, which needs root")
    dotfiles = tmp_path / "home" / "dotfiles"  # E2E_CONFIG's file_sync entry copies this file
    dotfiles.mkdir(parents=True)
    (dotfiles / "gitconfig").write_text("[user]\n\tname = e2e\n")
    # Top-level keys first: E2E_CONFIG ends inside a [[file_sync]] table.
    env = make_env(tmp_path, 'ssh_key_path = "~/.ssh/id_banger"\n' + E2E_CONFIG)
    harness = E2E(env=env, root=tmp_path)
    try:
        harness.banger("image", "pull", GOLDEN, check=True, timeout=3600)
        yield harness
    finally:
        harness.cleanup()
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def test_ssh_key_path_is_the_key_a_real_guest_lets_in(keyed: E2E) -> None:
    keyed.banger("vm", "create", "--name", "keyed", check=True)
    assert keyed.ssh("keyed", "cat", "/etc/hostname").stdout == "keyed\n"
    key = Path(keyed.env["HOME"]) / ".ssh" / "id_banger"
    assert key.is_file() and not (keyed.state / "ssh" / "id_ed25519").exists()
    # Plain ssh offering only that key gets in too, checking the host key banger pinned.
    endpoint = keyed.vm("keyed")["ssh"]
    assert isinstance(endpoint, dict)
    plain = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={keyed.state / 'ssh' / 'known_hosts'}",
            "-o",
            "HostKeyAlias=keyed.vm",
            "-p",
            str(endpoint["port"]),
            f"root@{endpoint['host']}",
            "echo",
            "in",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0 and plain.stdout == "in\n", plain.stderr
