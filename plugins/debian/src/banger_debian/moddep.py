"""Which kernel module files to load, in which order, from a kernel's ``modules.dep``.

``modules.dep`` lines read ``path.ko: dep1.ko dep2.ko ...`` with paths relative
to ``/lib/modules/<release>``; each line lists the module's full dependency
closure, and modprobe loads it from the last entry to the first. We only need
the module names the initramfs asks for, so we compute a load order that puts
every module after everything it depends on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_MODULE_SUFFIX = re.compile(r"\.ko(\.(xz|gz|zst))?$")


class MissingModuleError(LookupError):
    """The kernel lacks a module the initramfs needs (neither a file nor built in)."""


def module_name(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko`` → ``virtio_net`` (``-`` and ``_`` are the same to the kernel)."""
    base = path.rsplit("/", 1)[-1]
    return _MODULE_SUFFIX.sub("", base).replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """Parse ``modules.dep`` into ``{name: (path, [dependency names])}``.

    Raises:
        ValueError: a line is not ``path: deps``.
    """
    table: dict[str, tuple[str, list[str]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        path, sep, deps = line.partition(":")
        if not sep or not _MODULE_SUFFIX.search(path.strip()):
            raise ValueError(f"modules.dep line {number} is not 'module.ko: dependencies': {line[:80]!r}")
        table[module_name(path.strip())] = (path.strip(), [module_name(dep) for dep in deps.split()])
    return table


def parse_modules_builtin(text: str) -> set[str]:
    """Names of the modules compiled into the kernel, from ``modules.builtin``."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def load_order(
    wanted: Iterable[str], table: Mapping[str, tuple[str, list[str]]], builtin: Iterable[str] = ()
) -> list[str]:
    """Module paths to load so that each comes after its dependencies.

    Args:
        wanted: module names, in the order the caller prefers among independent modules.
        table: parsed ``modules.dep``.
        builtin: modules compiled into the kernel; they need no file and are skipped.

    Returns:
        Paths relative to ``/lib/modules/<release>``, dependencies first, each once.

    Raises:
        MissingModuleError: a wanted module or one of its dependencies is neither
            in ``modules.dep`` nor built in; the message names it.
    """
    builtin_names = {name.replace("-", "_") for name in builtin}
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str, needed_by: str | None, visiting: tuple[str, ...]) -> None:
        if name in placed or name in builtin_names:
            return
        if name in visiting:
            raise ValueError(f"modules.dep has a dependency cycle: {' -> '.join((*visiting, name))}")
        if name not in table:
            why = f" (needed by {needed_by})" if needed_by else ""
            raise MissingModuleError(
                f"the kernel package has no module {name}{why}: use a kernel built with it as a module or built in"
            )
        path, deps = table[name]
        # modules.dep lists the closure; placing each dependency first keeps the order valid
        # whatever order the line uses.
        for dep in reversed(deps):
            place(dep, name, (*visiting, name))
        placed.add(name)
        order.append(path)

    for name in wanted:
        place(name.replace("-", "_"), None, ())
    return order


def resolve(module_dir: Path, wanted: Iterable[str]) -> list[str]:
    """:func:`load_order` for the kernel tree at ``module_dir`` (``.../lib/modules/<release>``)."""
    dep_file = module_dir / "modules.dep"
    try:
        table = parse_modules_dep(dep_file.read_text())
    except FileNotFoundError:
        raise MissingModuleError(f"{dep_file} is missing: run depmod for this kernel first") from None
    builtin_file = module_dir / "modules.builtin"
    builtin = parse_modules_builtin(builtin_file.read_text()) if builtin_file.exists() else set()
    return load_order(wanted, table, builtin)
