"""The contract documents itself: every hook has a doc heading, a doctest example and a test."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

from banger_hookspecs import bundle, names, specs, types

REPO = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name in dir(specs) if name.startswith("banger_"))


def signature_text(name: str) -> str:
    """``banger_vm_created(vm: VmInfo) -> None``, as written in docs/hooks.md headings."""
    sig = inspect.signature(getattr(specs, name))
    return f"{name}{sig}".replace("'", "")


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 13


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_exact_signature(hook: str) -> None:
    docs = (REPO / "docs" / "hooks.md").read_text()
    heading = f"## `{signature_text(hook)}`"
    assert heading in docs.splitlines(), f"docs/hooks.md lacks the heading: {heading}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test_named_after_it(hook: str) -> None:
    pattern = re.compile(rf"^\s*def test_{hook}\b", re.MULTILINE)
    test_files = [p for p in REPO.glob("**/test_*.py") if ".venv" not in p.parts and ".tox" not in p.parts]
    assert any(pattern.search(p.read_text(errors="replace")) for p in test_files), f"no test named test_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_has_args_returns_and_example(hook: str) -> None:
    fn = getattr(specs, hook)
    doc = inspect.getdoc(fn) or ""
    assert "Example:" in doc and ">>>" in doc
    params = inspect.signature(fn).parameters
    if params:
        assert "Args:" in doc
    else:
        assert "Returns:" in doc
    hints = fn.__annotations__
    assert "return" in hints and all(p in hints for p in params)


@pytest.mark.parametrize("module", [specs, names, bundle], ids=lambda m: m.__name__)
def test_examples_run(module: object) -> None:
    failures, attempted = doctest.testmod(module, raise_on_error=False, verbose=False)  # type: ignore[arg-type]
    assert attempted > 0 and failures == 0


def test_provider_names_are_validated() -> None:
    with pytest.raises(ValueError, match="invalid image source name 'Bad Name'"):
        types.ImageSource(name="Bad Name", description="x", factory=lambda ctx: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="invalid config key"):
        types.ConfigOption(key="Bad-Key", type="str")
