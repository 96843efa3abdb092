"""Every BangerError subclass crosses the socket as itself: the daemon's answer -> the SDK's raise.

The daemon reports an error by class name (``error_payload``); the SDK raises
the class of that name from ``ERRORS_BY_NAME``. A class the registry does not
list would reach SDK callers as ``OperationFailed``, so every module of the
core and of the builtin plugins is imported and every subclass found must be
the registered one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

import banger_core
from banger_core.api.events import ErrorEvent
from banger_core.client import Client
from banger_core.client.sdk import _read_result
from banger_core.common.errors import ERRORS_BY_NAME, BangerError, OperationFailed
from banger_core.daemon.app import error_payload, error_response

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
MESSAGE = "what went wrong: how to fix it (`banger doctor`)"


def _packages() -> Iterator[ModuleType]:
    yield banger_core
    for src in sorted(PLUGINS.glob("*/src/banger_*")):
        yield importlib.import_module(src.name)


def _all_modules() -> list[str]:
    names = []
    for package in _packages():
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":  # running it would start a program
                names.append(info.name)
    return names


def _subclasses(cls: type[BangerError]) -> set[type[BangerError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


@pytest.mark.builtins  # it imports every builtin plugin (not installed under tox -e core)
def test_every_error_class_in_the_core_and_the_plugins_is_registered() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    defined = {cls for cls in _subclasses(BangerError) if not cls.__module__.startswith("tests.")}
    unregistered = sorted(
        f"{cls.__module__}.{cls.__qualname__}" for cls in defined if ERRORS_BY_NAME.get(cls.__name__) is not cls
    )
    assert unregistered == [], "define these in banger_core/common/errors.py and list them in ERRORS_BY_NAME"
    # The classes the issue names, wherever their users import them from.
    for name in ("InvalidName", "PluginError", "GuestSetupError", "NotPrivileged", "ConfigError", "Conflict"):
        assert name in ERRORS_BY_NAME
    assert len(defined | {BangerError}) == len(ERRORS_BY_NAME)


@pytest.mark.parametrize("cls", sorted(ERRORS_BY_NAME.values(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_a_query_error_is_raised_by_the_sdk_as_the_same_class(cls: type[BangerError]) -> None:
    answer = error_response(cls(MESSAGE))
    assert answer.status_code == cls.http_status
    response = httpx.Response(
        answer.status_code, content=bytes(answer.body), headers={"content-type": "application/json"}
    )
    with pytest.raises(BangerError) as raised:
        Client._decode(response)
    assert type(raised.value) is cls and str(raised.value) == MESSAGE


@pytest.mark.parametrize("cls", sorted(ERRORS_BY_NAME.values(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_a_stream_error_is_raised_by_the_sdk_as_the_same_class(cls: type[BangerError]) -> None:
    info = error_payload(cls(MESSAGE))
    line = ErrorEvent(type=info.type, message=info.message).model_dump_json()
    with pytest.raises(BangerError) as raised:
        _read_result(iter([line]), None)
    assert type(raised.value) is cls and str(raised.value) == MESSAGE


def test_a_daemon_bug_is_operation_failed_with_its_line() -> None:
    info = error_payload(KeyError("slot"))
    assert info.type == "InternalError"
    with pytest.raises(OperationFailed, match=r"^internal error: KeyError: 'slot' \(see the daemon log\)$"):
        _read_result(iter([ErrorEvent(type=info.type, message=info.message).model_dump_json()]), None)
