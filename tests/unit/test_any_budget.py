"""The core says what its values are: fewer than 60 lines of banger_core mention ``Any`` (issue 11).

Counted: every line of ``banger_core/**/*.py`` containing the word ``Any``
(imports, annotations, comments alike), except

* ``banger_core/testing/``: helpers for tests, not the core;
* lines ending in ``# pluggy boundary`` in ``banger_core/common/plugins.py``:
  where a value comes out of pluggy, which is untyped, before the plugin
  manager's typed accessors give it a type. Only that module talks to pluggy,
  and only :data:`MAX_BOUNDARY_LINES` lines may be marked: the mark is for a
  line that cannot be typed, not a way around the budget.

When this fails, type the new value (a dataclass, a TypedDict, an api model,
``object`` and a check, pydantic's ``JsonValue`` for JSON) instead of raising
the budget.
"""

from __future__ import annotations

import re
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "banger_core"
BUDGET = 59
BOUNDARY_MARK = "# pluggy boundary"
BOUNDARY_MODULE = CORE / "common" / "plugins.py"
MAX_BOUNDARY_LINES = 5
_ANY = re.compile(r"\bAny\b")


def _core_modules() -> list[Path]:
    return sorted(path for path in CORE.rglob("*.py") if "testing" not in path.relative_to(CORE).parts)


def any_lines() -> dict[Path, list[int]]:
    """``module -> numbers of its lines that count against the budget``."""
    counted: dict[Path, list[int]] = {}
    for path in _core_modules():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not _ANY.search(line):
                continue
            if path == BOUNDARY_MODULE and line.rstrip().endswith(BOUNDARY_MARK):
                continue
            counted.setdefault(path, []).append(number)
    return counted


def test_the_core_stays_under_its_any_budget() -> None:
    counted = any_lines()
    total = sum(len(lines) for lines in counted.values())
    by_count = sorted(counted.items(), key=lambda item: (-len(item[1]), item[0]))
    table = "\n".join(f"{len(lines):4}  {path.relative_to(CORE.parent)}" for path, lines in by_count)
    assert total <= BUDGET, f"{total} lines of banger_core mention Any; the budget is {BUDGET}:\n{table}"


def test_the_pluggy_boundary_mark_stays_rare_and_in_the_plugin_manager() -> None:
    marked: list[str] = []
    for path in _core_modules():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if BOUNDARY_MARK in line:
                marked.append(f"{path.relative_to(CORE.parent)}:{number}: {line.strip()}")
    outside = [where for where in marked if not where.startswith("banger_core/common/plugins.py:")]
    assert not outside, "the pluggy boundary is banger_core/common/plugins.py only:\n" + "\n".join(outside)
    assert len(marked) <= MAX_BOUNDARY_LINES, (
        f"{len(marked)} lines marked {BOUNDARY_MARK!r} (at most {MAX_BOUNDARY_LINES}):\n" + "\n".join(marked)
    )
