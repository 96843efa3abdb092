"""A privileged host port (``-p 80:80``) is refused when bangerd may not bind it (root only: setpriv)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from banger_core.daemon.vm import ports

pytestmark = pytest.mark.integration


def test_a_privileged_host_port_is_refused_without_the_right_to_bind_it() -> None:
    """Run as nobody with no capabilities (setpriv), so the check is the real one, not a mock."""
    code = (
        "from banger_core.api.ports import parse_publish\n"
        "from banger_core.daemon.vm import ports\n"
        "from banger_core.common.errors import NotPrivileged\n"
        "try:\n"
        "    ports.check_bindable([parse_publish('80:80')])\n"
        "except NotPrivileged as exc:\n"
        "    print(exc)\n"
    )
    if ports._unprivileged_port_start() <= 80:
        pytest.fail("net.ipv4.ip_unprivileged_port_start is <= 80 here: port 80 is not privileged")
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    result = subprocess.run([*argv, sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("host port 80/tcp is privileged (below 1024) and bangerd may not bind it: ")
    assert "-p 8080:80" in result.stdout
