"""Shared test configuration: every test gets exactly one layer marker.

A test module's layer is its directory (tests/unit, tests/integration, tests/e2e,
plugins/*/tests default to unit unless marked otherwise).
"""

from __future__ import annotations

import os

import pytest

#: Shared fixtures: a real daemon with the fake test plugin, the e2e daemon with the real plugins,
#: and the VMM-level guest fixtures (kernel, test initramfs, specs, tap in a netns, Firecracker binary)
#: the qemu and firecracker plugin tests use; the offline Sigstore instance (``trust_lab``).
pytest_plugins = [
    "tests.support.daemon",
    "tests.support.e2e",
    "tests.support.roothelper",
    "tests.fixtures.guest",
    "tests.fixtures.tap_netns",
    "tests.fixtures.firecracker",
    "banger_core.testing.sigstore_lab",
]

LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marked = [layer for layer in LAYERS if item.get_closest_marker(layer)]
        if marked:
            continue
        path = str(item.path)
        layer = "e2e" if "/tests/e2e/" in path else "integration" if "/tests/integration/" in path else "unit"
        item.add_marker(getattr(pytest.mark, layer))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With BANGER_NO_SKIP=1 (scripts/test sets it) a skipped test fails: CI installs
    everything, so a skip there means a missing install step, not a missing feature."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("BANGER_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under BANGER_NO_SKIP=1 (scripts/test): {reason}"
