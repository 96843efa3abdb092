"""hatch_build.py's version stamp: ``BANGER_RELEASE_VERSION`` (scripts/release) wins, and only a release version."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

HATCH_BUILD = Path(__file__).resolve().parents[2] / "hatch_build.py"


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("banger_hatch_build", HATCH_BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_release_override_is_the_stamped_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANGER_RELEASE_VERSION", "v1.20.3")
    assert load_hook().release_version() == "v1.20.3"


@pytest.mark.parametrize("bad", ["1.2.3", "v1.2", "v01.2.3", "v1.2.3-rc1", "dev", "", "v1.2.3\n"])
def test_an_override_that_is_not_a_release_version_fails_the_build(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("BANGER_RELEASE_VERSION", bad)
    with pytest.raises(ValueError, match=r"is not a release version: use vMAJOR\.MINOR\.PATCH, e\.g\. v0\.2\.0"):
        load_hook().release_version()


def test_without_the_override_an_untagged_build_is_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANGER_RELEASE_VERSION", raising=False)
    hook = load_hook()
    monkeypatch.setattr(hook, "_git", lambda *args: None)  # no tag on HEAD
    assert hook.release_version() == "dev"
