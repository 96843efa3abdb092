"""Typed request bodies: JSON checked against a dataclass by pydantic in strict mode.

Strict, because the API's callers are programs and a lenient guess is a bug
waiting: ``"false"`` is not a boolean (it used to boot a VM), ``true`` is not
an integer, ``2.0`` is not a vCPU count. A wrong type, an unknown field or
invalid JSON becomes one :class:`~banger_core.common.errors.InvalidRequest` line that
names the field: ``vcpus: expected an integer, got true``.

A request dataclass opts in with ``__pydantic_config__: ClassVar[ConfigDict] = STRICT``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from banger_core.common.errors import InvalidRequest

STRICT = ConfigDict(strict=True, extra="forbid")
_EXPECTED = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
}
_SHOWN_INPUT = 60

T = TypeVar("T")


#: Built once per model (building one costs milliseconds); a race only builds one twice.
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def parse_body(model: type[T], raw: bytes) -> T:
    """``raw`` (JSON text; empty means ``{}``) as an instance of the dataclass ``model``, or :class:`InvalidRequest`."""
    try:
        adapter = _ADAPTERS.get(model) or _ADAPTERS.setdefault(model, TypeAdapter(model))
        parsed: T = adapter.validate_json(raw or b"{}")
    except ValidationError as exc:
        raise InvalidRequest("; ".join(_describe(error, model) for error in exc.errors())) from None
    return parsed


def _describe(error: ErrorDetails, model: type[Any]) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        return f"request body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}"
    if kind == "dataclass_type":
        return f"request body must be a JSON object, got {_shown(error['input'])}"
    field = ".".join(str(part) for part in error["loc"])
    if kind == "unexpected_keyword_argument":
        accepted = ", ".join(f.name for f in dataclasses.fields(model))
        return f"{field}: unknown field (accepted: {accepted})"
    if kind == "value_error":
        return f"{field}: {error.get('ctx', {}).get('error', error['msg'])}"
    if kind in _EXPECTED:
        return f"{field}: expected {_EXPECTED[kind]}, got {_shown(error['input'])}"
    return f"{field}: {error['msg']}"


def _shown(value: Any) -> str:
    """The offending value as the client wrote it (JSON), cut short."""
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 3] + "..."
