"""mise in the golden image, end to end: the binary works in a VM, and `vm run REPO` starts `mise install`.

The daemon, the CLI and therefore QEMU's user-mode network run in a network
namespace this module creates (loopback only, its resolver pointed at
127.0.0.1): whatever mise tries to download fails at once and nothing leaves
the machine. So `mise install` itself fails here; the test checks that it ran
and logged to the tooling log.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_debootstrap.recipe import load_recipe
from banger_hookspecs import ImageArtifact, KernelArtifact
from tests.netns import temporary_netns
from tests.support.e2e import E2E, GOLDEN, make_env

RECIPE = Path(__file__).resolve().parents[2] / "images" / "golden" / GOLDEN
MISE_VERSION = load_recipe(RECIPE).plan().npm_binaries[0].version


@pytest.fixture(scope="module")
def offline(
    tmp_path_factory: pytest.TempPathFactory, golden_image: ImageArtifact, banger_kernel: KernelArtifact
) -> Iterator[E2E]:
    """A daemon in a fresh namespace with no route out, the golden image and kernel pulled.

    ``golden_image`` and ``banger_kernel`` build them into the shared cache first, outside the
    namespace (from the Debian and npm registries); the daemon's pull then takes them from there.
    """
    root = tmp_path_factory.mktemp("e2e-mise")
    with temporary_netns() as ns:
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        env = make_env(root, "ssh_ready_timeout = 420\n")
        harness = E2E(env=env, root=root, prefix=["ip", "netns", "exec", ns.name])
        try:
            harness.banger("image", "pull", GOLDEN, check=True, timeout=3600)
            yield harness
        finally:
            harness.cleanup()
            shutil.rmtree(etc, ignore_errors=True)
            shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def test_mise_version_runs_in_the_golden_image(offline: E2E) -> None:
    result = offline.banger("vm", "run", "--rm", "--", "mise", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{MISE_VERSION} linux-x64"), result.stdout
    assert offline.vms() == []


def test_vm_run_with_tool_versions_starts_mise_install_and_logs_it(offline: E2E, tmp_path: Path) -> None:
    repo = tmp_path / "tooling-repo"
    repo.mkdir()
    (repo / ".tool-versions").write_text("jq 1.7.1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=e2e@banger", "-c", "user.name=e2e"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "tools"], check=True)
    log = "/root/.cache/banger/vm-run-tooling-tooling-repo.log"
    # mise install runs in the background: wait (bounded) until it is gone, then show its log.
    script = (
        "for i in $(seq 120); do pgrep -x mise >/dev/null || break; sleep 1; done; "
        f"stat -c '%a %U:%G' /usr/local/bin/mise; printenv MISE_DISABLE_UPDATE_WARNING; echo ---; cat {log}"
    )
    result = offline.banger("vm", "run", "--rm", str(repo), "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    facts, _, tooling = result.stdout.partition("---\n")
    # the binary as installed, and no version check in ssh sessions (/etc/environment via pam_env)
    assert facts.splitlines() == ["755 root:root", "1"]
    # No network in the namespace: the install fails, and says so in the log.
    assert "jq" in tooling and "mise ERROR" in tooling, tooling
    assert offline.vms() == []
