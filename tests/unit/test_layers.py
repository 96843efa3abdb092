"""Imports between banger_core's folders go one way (docs/architecture.md, "The import rule").

The CLI process (``cli/``, ``client/``, ``api/``, ``common/``) never imports
the daemon's code (``daemon/``) or the privileged host code (``host/``); the
API models never import the SDK or the CLI; the daemon side never imports the
CLI side. Every import is checked, including those inside functions (the CLI
imports lazily to start fast) and relative ones. ``testing/`` may import
anything. A plugin (``plugins/*``, ``examples/*``) imports the contract
(``banger_hookspecs``) and itself, never the core or another plugin; the
contract imports no banger package at all. The one exception is the updater
(:data:`CORE_PLUGINS`): it replaces banger itself, with banger's own install
and signature code.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "banger_core"
CONTRACT = "banger_hookspecs"
#: Builtin plugins that may import the core: ``banger update`` installs, swaps and verifies banger
#: itself (banger_core.install, banger_core.trust), and ships in banger's own wheelhouse only.
CORE_PLUGINS = frozenset({"banger_updater"})

#: folder -> folders of banger_core it must never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "cli": frozenset({"daemon", "host"}),
    "client": frozenset({"daemon", "host", "cli"}),
    "api": frozenset({"daemon", "host", "client", "cli"}),
    "common": frozenset({"daemon", "host", "client", "cli"}),
    "install": frozenset({"daemon", "host", "client", "cli"}),
    # Verification runs in the CLI (banger update) and in the daemon (catalog pulls): it needs only common/.
    "trust": frozenset({"daemon", "host", "client", "cli", "install"}),
    "host": frozenset({"daemon", "client", "cli"}),
    "daemon": frozenset({"client", "cli"}),
}


def package_of(path: Path, source_root: Path = REPO) -> str:
    """The package relative imports in ``path`` start from (``banger_core.cli`` for cli/app.py)."""
    parts = path.relative_to(source_root).with_suffix("").parts
    return ".".join(parts[:-1])


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` for every import in ``source``, a module of ``package``.

    ``from X import y`` yields both ``X`` and ``X.y``: ``y`` may be a module (``from banger_core import daemon``).
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def layer_violations() -> list[str]:
    problems: set[str] = set()
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE)
        folder = relative.parts[0]
        if len(relative.parts) < 2 or folder not in FORBIDDEN:
            continue
        for line, module in imported_modules(path.read_text(), package_of(path)):
            parts = module.split(".")
            if parts[0] == "banger_core" and len(parts) > 1 and parts[1] in FORBIDDEN[folder]:
                problems.add(f"banger_core/{relative}:{line}: {folder}/ imports {'.'.join(parts[:3])}")
    return sorted(problems)


def distributions() -> list[Path]:
    """The import roots of the contract and of every plugin distribution (``src/<package>``)."""
    roots = [REPO / "hookspecs" / "src" / CONTRACT]
    for parent in ("plugins", "examples"):
        roots += sorted(path for path in (REPO / parent).glob("*/src/*") if (path / "__init__.py").exists())
    return roots


def plugin_violations() -> list[str]:
    problems: set[str] = set()
    for root in distributions():
        allowed = {root.name} if root.name == CONTRACT else {root.name, CONTRACT}
        if root.name in CORE_PLUGINS:
            allowed.add("banger_core")
        for path in sorted(root.rglob("*.py")):
            for line, module in imported_modules(path.read_text(), package_of(path, root.parent)):
                top = module.split(".")[0]
                if top.startswith("banger_") and top not in allowed:
                    problems.add(f"{path.relative_to(REPO)}:{line}: {root.name} imports {top}")
    return sorted(problems)


def test_imports_follow_the_layers() -> None:
    problems = layer_violations()
    assert not problems, "imports that cross the layers the wrong way:\n" + "\n".join(problems)


def test_plugins_import_only_the_contract_and_themselves() -> None:
    assert len(distributions()) > 5  # the contract, the builtins and the example were found
    problems = plugin_violations()
    assert not problems, "plugin imports outside the contract:\n" + "\n".join(problems)


def test_the_checker_sees_lazy_relative_and_folder_imports() -> None:
    """The rule would be worthless if an import inside a function or a relative one slipped past."""
    source = "from banger_core import daemon\ndef f():\n    from ..host import netops\n    import banger_core.api\n"
    modules = [name for _, name in imported_modules(source, package_of(CORE / "cli" / "app.py"))]
    assert "banger_core.daemon" in modules
    assert "banger_core.host.netops" in modules
    assert "banger_core.api" in modules
