"""Backend selection has one rule: for the same host facts and config, doctor shows what the daemon picks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from banger_core.common.doctor import backend_row
from banger_core.common.errors import BangerError
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.vm.spec import select_backend
from banger_core.testing import FakeSite

pytestmark = pytest.mark.unit

#: name -> (NIC kinds, usable (None: its factory raises), preference)
Backends = dict[str, tuple[tuple[str, ...], bool | None, int]]

SOURCE = """
from banger_hookspecs import Availability, VmmBackend, hookimpl

BACKENDS = {backends!r}


class Probe:
    def __init__(self, name):
        self.name = name

    def availability(self):
        usable, preference = BACKENDS[self.name][1:]
        return Availability(usable, preference, self.name + (" can run VMs" if usable else " cannot run VMs"))


def factory_for(name):
    def factory(ctx):
        if BACKENDS[name][1] is None:
            raise RuntimeError(name + " is broken")
        return Probe(name)
    return factory


@hookimpl
def banger_vmm_backends():
    return [VmmBackend(n, "test", factory_for(n), nic_kinds=kinds) for n, (kinds, _, _) in BACKENDS.items()]
"""

BUILTIN_BACKENDS = "qemu,firecracker,bridge,usernet"
BOTH = ("tap", "user")
#: (network, vmm_backend, backends, what the daemon picks or None when it refuses)
CASES: list[tuple[str, str, Backends, str | None]] = [
    ("fakeuser", "auto", {"alpha": (BOTH, True, 10), "beta": (("tap",), True, 50)}, "alpha"),
    ("faketap", "auto", {"alpha": (BOTH, True, 10), "beta": (("tap",), True, 50)}, "beta"),
    ("faketap", "auto", {"alpha": (BOTH, True, 10), "beta": (("tap",), False, 50)}, "alpha"),
    ("fakeuser", "auto", {"alpha": (BOTH, False, 10), "beta": (("tap",), True, 50)}, None),
    ("fakeuser", "auto", {"alpha": (BOTH, None, 90), "beta": (BOTH, True, 5)}, "beta"),
    ("fakeuser", "auto", {"alpha": (BOTH, None, 90)}, None),
    ("fakeuser", "auto", {"alpha": (BOTH, True, 7), "beta": (BOTH, True, 7)}, "beta"),
    ("faketap", "alpha", {"alpha": (BOTH, True, 1), "beta": (BOTH, True, 99)}, "alpha"),
    ("fakeuser", "beta", {"alpha": (BOTH, True, 1), "beta": (("tap",), True, 99)}, None),
    ("fakeuser", "alpha", {"alpha": (BOTH, False, 1), "beta": (BOTH, True, 99)}, None),
    ("fakeuser", "alpha", {"alpha": (BOTH, None, 1), "beta": (BOTH, True, 99)}, None),
    ("fakeuser", "gamma", {"alpha": (BOTH, True, 1)}, None),
]


@pytest.fixture
def host(banger_env: dict[str, str], banger_site: FakeSite) -> Iterator[tuple[dict[str, str], FakeSite]]:
    banger_site.write_dist_info("banger-fakenet-testplugin", "0.0.1", {"fakenet": "tests.support.banger_fakenet"})
    # The same backends whether or not the builtin distributions are installed (tox -e core has none).
    yield {**banger_env, "BANGER_DISABLE_PLUGINS": BUILTIN_BACKENDS}, banger_site


@pytest.mark.parametrize(("network", "configured", "backends", "expected"), CASES)
def test_doctor_shows_the_backend_the_daemon_picks(
    host: tuple[dict[str, str], FakeSite], network: str, configured: str, backends: Backends, expected: str | None
) -> None:
    env, site = host
    site.add_plugin("testvmms", "banger-testvmms", source=SOURCE.format(backends=backends))
    config = Path(env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(f'network_backend = "{network}"\nvmm_backend = "{configured}"\n')
    rt = Runtime(env)
    row = backend_row(rt.pm, rt.ctx)
    try:
        picked: str | None = select_backend(rt, None, network)[0]
    except BangerError as exc:
        picked, refusal = None, str(exc)
    assert picked == expected
    if picked is None:
        assert row["status"] == "fail" and row["blocks_vm_run"], (row, refusal)
    else:
        head = f"auto picks {picked}:" if configured == "auto" else f"vmm_backend = {picked}:"
        assert row["status"] == "ok" and row["summary"].startswith(head), row


def test_a_broken_backend_is_a_reason_not_a_crash(host: tuple[dict[str, str], FakeSite]) -> None:
    env, site = host
    site.add_plugin("testvmms", "banger-testvmms", source=SOURCE.format(backends={"alpha": (BOTH, None, 9)}))
    (Path(env["XDG_CONFIG_HOME"]) / "banger" / "config.toml").write_text('network_backend = "fakeuser"\n')
    rt = Runtime(env)
    with pytest.raises(BangerError) as caught:
        select_backend(rt, None, "fakeuser")
    assert str(caught.value) == (
        "no VMM backend can run VMs here with network fakeuser (alpha: VMM backend 'alpha' (banger-testvmms) "
        "cannot be used: RuntimeError: alpha is broken): see `banger doctor`"
    )
    assert backend_row(rt.pm, rt.ctx)["summary"] == (
        "no VMM backend can run VMs here: alpha: RuntimeError: alpha is broken"
    )
