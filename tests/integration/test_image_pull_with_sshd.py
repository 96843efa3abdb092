"""``image pull --with-sshd`` through the real daemon and CLI, for sources that cannot install sshd.

Here, not in plugins/oci/tests: it needs the catalog source installed beside oci (tox's plugin-oci has oci alone).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from banger_core.testing import invoke_cli
from tests.support.daemon import DaemonHarness

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(banger_env: dict[str, str]) -> Iterator[DaemonHarness]:
    daemon = DaemonHarness(dict(banger_env))
    try:
        yield daemon
    finally:
        daemon.stop()


def test_with_sshd_is_refused_by_a_source_that_cannot_install_it(harness: DaemonHarness) -> None:
    result = invoke_cli(["image", "pull", "--with-sshd", "debian-bookworm"], harness.env)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1, result.output
    assert (
        "--with-sshd: image source catalog provides debian-bookworm and cannot install sshd in it; "
        "--with-sshd is for container images (image source oci), pull without it"
    ) in lines[0]
    assert harness.client().images.list() == []
