"""The dedicated virtualenv an install runs from: ``PREFIX/versions/<version>``, built from wheels.

Where the wheels come from (docs/install.md):

* ``--wheels DIR``: a wheelhouse holding banger, its plugins and every dependency
  (``pip wheel -w DIR /path/to/banger /path/to/banger/hookspecs /path/to/banger/plugins/*``).
  Installed with ``--no-index``: nothing is fetched, what was vetted is what runs.
* otherwise, the checkout banger runs from: each of its distributions is built
  with ``pip wheel --no-deps`` and installed, dependencies from pip's configured index.
  A banger installed from wheels (not a checkout) has no sources to build: it asks for ``--wheels``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from banger_core.common.buildinfo import UNKNOWN, BuildInfo
from banger_core.common.errors import BangerError

#: The checkout this banger runs from, when it runs from one (editable install).
CHECKOUT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 1800


def checkout_distributions(checkout: Path = CHECKOUT) -> list[Path]:
    """banger's distributions in a checkout: the core, the contract, every builtin plugin."""
    if not (checkout / "pyproject.toml").is_file() or not (checkout / "hookspecs" / "pyproject.toml").is_file():
        raise BangerError(
            f"banger does not run from a source checkout ({checkout}): pass --wheels DIR, a directory of "
            "wheels of banger and its dependencies (`pip wheel -w DIR ...`, see docs/install.md)"
        )
    return [checkout, checkout / "hookspecs", *sorted(p.parent for p in checkout.glob("plugins/*/pyproject.toml"))]


def build_checkout_wheels(into: Path, checkout: Path = CHECKOUT) -> None:
    """``pip wheel --no-deps`` of every distribution of the checkout into ``into``."""
    _pip(sys.executable, ["wheel", "--no-deps", "-q", "-w", str(into), *map(str, checkout_distributions(checkout))])


def wheel_build_info(wheels: Path) -> BuildInfo:
    """The version stamp inside the banger wheel of ``wheels`` (``banger_core/_build_info.py``)."""
    found = sorted(wheels.glob("banger-*.whl"))
    if not found:
        raise BangerError(f"{wheels} holds no banger wheel (banger-*.whl): build one with `pip wheel`")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise BangerError(f"{wheels} holds several banger wheels ({names}): keep the one to install")
    try:
        with zipfile.ZipFile(found[0]) as wheel:
            source = wheel.read("banger_core/_build_info.py").decode()
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise BangerError(f"{found[0]}: no readable build stamp ({exc}): rebuild it with `pip wheel`") from None
    values: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            values.update((t.id, node.value.value) for t in node.targets if isinstance(t, ast.Name))
    return BuildInfo(values.get("VERSION", "dev"), values.get("COMMIT", UNKNOWN), values.get("BUILT", UNKNOWN))


def version_name(info: BuildInfo) -> str:
    """The versions/ directory of a build: ``v0.2.0``; a dev build is told apart by its commit."""
    name = info.version if info.version != "dev" else f"dev-{info.short_commit}"
    if not name or name.startswith(".") or "/" in name or not name.isprintable():
        raise BangerError(f"build version {info.version!r} cannot name a directory: rebuild the wheel")
    return name


def create_venv(venv: Path, wheels: Path, *, offline: bool) -> None:
    """A virtualenv at ``venv`` with banger installed from ``wheels`` (and nothing else when ``offline``).

    banger's own distributions are named by their wheel files, never by name: an index may hold
    unrelated projects called ``banger`` or ``banger-*`` (PyPI does), with higher versions.
    """
    ours = sorted(str(p) for p in wheels.glob("banger*.whl"))
    if not (venv / "bin" / "python").exists():
        _run([_base_python(), "-m", "venv", str(venv)], f"creating the virtualenv {venv}")
    index = ["--no-index"] if offline else []
    _pip(str(venv / "bin" / "python"), ["install", "-q", *index, "--find-links", str(wheels), *ours])


def relocate_scripts(venv: Path, target: str) -> None:
    """Point the ``#!`` lines of ``venv/bin`` at ``target``, where the venv will live (a staged ``--root``).

    A virtualenv names its own path in its scripts; one built under a packaging
    root must name the installed path, as dh-virtualenv does. (``activate*``
    still names the staging path: the services never source it.)
    """
    staged = f"#!{venv}/bin/".encode()
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if content.startswith(staged):
            script.write_bytes(f"#!{target}/bin/".encode() + content[len(staged) :])


def require_runnable_by(uid: int, gids: list[int], login: str, python: str | None = None) -> None:
    """Refuse an install whose interpreter the owner cannot run (bangerd would fail at exec, after a "success").

    The venv's ``bin/python`` is a link to the Python that runs the install; a Python under a
    private home (pyenv in /root, mode 0700) passes every check as root and breaks only in the unit.
    """
    target = os.path.realpath(python or _base_python())
    path = "/"
    for part in [p for p in target.split("/") if p]:
        check_dir = path
        path = os.path.join(path, part)
        if not _may(os.stat(check_dir), uid, gids, 0o1):
            raise BangerError(
                f"{login} cannot reach {target}: {check_dir} is not searchable by that user; install with a "
                "Python the owner can run (e.g. PYTHON=/usr/bin/python3 scripts/setup, or Debian's python3)"
            )
    if not _may(os.stat(target), uid, gids, 0o1):
        raise BangerError(f"{login} cannot execute {target}: install with a Python the owner can run")


def _may(st: os.stat_result, uid: int, gids: list[int], bit: int) -> bool:
    """Whether a process of ``uid``/``gids`` gets permission ``bit`` (1 = x) on an inode, as the kernel decides."""
    if uid == st.st_uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _base_python() -> str:
    """The interpreter the venv is made from: the system's, not the venv banger itself may run in."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _pip(python: str, args: list[str]) -> None:
    _run([python, "-m", "pip", "--disable-pip-version-check", *args], f"pip {args[0]}")


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BangerError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BangerError(f"{what} failed: {detail}")


def current_build_wheels(wheels: Path | None) -> tuple[Path, BuildInfo, bool, tempfile.TemporaryDirectory[str] | None]:
    """The wheel directory to install from, its build stamp, whether it is self-contained, and a temp dir to clean."""
    if wheels is not None:
        return wheels, wheel_build_info(wheels), True, None
    scratch = tempfile.TemporaryDirectory(prefix="banger-wheels-")
    build_checkout_wheels(Path(scratch.name))
    return Path(scratch.name), wheel_build_info(Path(scratch.name)), False, scratch
