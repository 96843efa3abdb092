"""The fresh-machine path: every command the tests run is installed by scripts/setup --test.

The test tree is read with ``ast``: the first word of every argv list handed to
``subprocess`` (or a helper's ``run``/``popen``), of every list an ``*argv*``
function returns, every ``shutil.which("...")`` and every ``/usr/sbin/...``-style
path constant is a command some test needs on the host. Each must be provided by
a row of scripts/debian-packages, which scripts/setup installs and
scripts/check-test-deps verifies.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = REPO / "scripts" / "debian-packages"
CHECK = REPO / "scripts" / "check-test-deps"
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "popen"}
SYSTEM_PATH = re.compile(r"^/(?:usr/)?s?bin/([\w.+-]+)$")


def test_trees() -> list[Path]:
    return [
        REPO / "tests",
        REPO / "hookspecs" / "tests",
        *sorted(REPO.glob("plugins/*/tests")),
        *sorted(REPO.glob("examples/*/tests")),
        REPO / "conftest.py",
    ]


test_trees.__test__ = False  # type: ignore[attr-defined]


def _first_word(node: ast.AST) -> str | None:
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        head = node.elts[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value
    return None


def commands_in(source: str) -> set[str]:
    """Host commands a Python test module runs (basenames)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        word = None
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "which" and node.args and isinstance(node.args[0], ast.Constant):
                word = str(node.args[0].value)
            elif name in RUNNERS and node.args:
                word = _first_word(node.args[0])
        elif isinstance(node, ast.FunctionDef) and "argv" in node.name:
            returned = [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None]
            found.update(w.rsplit("/", 1)[-1] for w in map(_first_word, returned) if w)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = SYSTEM_PATH.match(node.value)
            word = match.group(1) if match else None
        if word:
            found.add(word.rsplit("/", 1)[-1])
    return found


#: Commands banger's code names that are not the host's to install.
NOT_HOST_COMMANDS = {
    "policy-rc.d": "a file debootstrap's build writes into the image it builds",
    "sh": "run in the guest by the git syncer",
    "tar": "run in the guest to unpack file_sync into a VM restored from a warm template",
    "resolvectl": "systemd-resolved's own client, used only where systemd-resolved runs",
    "systemctl": "systemd's own client, run by `banger system install` only where systemd is PID 1",
}


def listed_commands(layers: tuple[str, ...] = ("runtime", "test")) -> dict[str, str]:
    """command -> package, from the scripts/debian-packages rows of ``layers``."""
    provided = {}
    for line in PACKAGES.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            assert words[0] in ("runtime", "test") and len(words) >= 3, f"malformed row {line!r}"
            if words[0] in layers:
                provided.update({command: words[1] for command in words[2:] if command != "-"})
    return provided


def unlisted_commands(trees: list[Path], provided: dict[str, str]) -> dict[str, list[str]]:
    unlisted: dict[str, list[str]] = {}
    for tree in trees:
        for path in [tree] if tree.is_file() else sorted(tree.rglob("*.py")):
            for command in commands_in(path.read_text()) - provided.keys():
                unlisted.setdefault(command, []).append(str(path.relative_to(REPO)))
    return unlisted


def _report(unlisted: dict[str, list[str]]) -> str:
    return "; ".join(f"{command} ({', '.join(paths)})" for command, paths in sorted(unlisted.items()))


def test_the_scanner_sees_each_way_a_test_runs_a_command() -> None:
    source = """
import shutil, subprocess
subprocess.run(["dig", "@127.0.0.1"])
ns.run(["nft", "list"])
subprocess.Popen(("/usr/sbin/sshd", "-D"))
shutil.which("skopeo")
BUSYBOX = Path("/bin/busybox")
def probe_argv(port):
    return ["socat", "-", f"TCP:127.0.0.1:{port}"]
vm.ssh("systemctl", "is-system-running")
subprocess.run([sys.executable, "-c", "pass"])
"""
    assert commands_in(source) == {"dig", "nft", "sshd", "skopeo", "busybox", "socat"}


def test_every_command_the_tests_run_is_installed_by_setup() -> None:
    unlisted = unlisted_commands(test_trees(), listed_commands())
    assert not unlisted, (
        "tests run commands that scripts/debian-packages does not install (add a 'test PACKAGE COMMAND' row): "
        + _report(unlisted)
    )


def test_every_command_banger_runs_is_a_runtime_package() -> None:
    # scripts/quickstart installs the runtime rows only: what banger itself runs must be among them.
    sources = [REPO / "banger_core", *sorted(REPO.glob("plugins/*/src"))]
    unlisted = unlisted_commands(sources, {**listed_commands(("runtime",)), **NOT_HOST_COMMANDS})
    assert not unlisted, "banger runs commands that no 'runtime' row of scripts/debian-packages installs: " + _report(
        unlisted
    )


def test_setup_installs_exactly_the_listed_packages() -> None:
    # scripts/setup has no list of its own: it reads scripts/debian-packages.
    setup = (REPO / "scripts" / "setup").read_text()
    assert "scripts/debian-packages" in setup
    for package in ("openssh-server", "qemu-system-x86", "bind9-dnsutils"):
        assert package not in setup


def test_check_names_each_missing_package_on_one_line(tmp_path: Path) -> None:
    packages = tmp_path / "debian-packages"
    packages.write_text(
        "# a comment\n"
        "runtime  tar                       tar\n"
        "test     banger-no-such-package    banger-no-such-tool\n"
        "test     tar                       banger-no-such-tool\n"
    )
    result = subprocess.run(
        [sys.executable, str(CHECK), "--packages", str(packages)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "check-test-deps: missing package banger-no-such-package: run scripts/setup --test "
        "(or apt-get install banger-no-such-package)",
        "check-test-deps: package tar is installed but banger-no-such-tool is not on PATH: "
        "reinstall it (apt-get install --reinstall tar) or fix debian-packages",
    ]


@pytest.mark.parametrize("row", ["runtime", "bogus tar tar", "test tar"])
def test_check_refuses_a_malformed_row(tmp_path: Path, row: str) -> None:
    packages = tmp_path / "debian-packages"
    packages.write_text(row + "\n")
    result = subprocess.run(
        [sys.executable, str(CHECK), "--packages", str(packages)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and result.stderr.strip() == (
        f"{packages}:1: expected 'runtime|test PACKAGE COMMAND...' (or '-'), got {row!r}"
    )


def test_this_machine_has_every_listed_package() -> None:
    # scripts/test runs the same check before pytest; here it guards a plain `pytest` run too.
    result = subprocess.run([sys.executable, str(CHECK)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
