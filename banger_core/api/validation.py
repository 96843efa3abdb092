"""Typed request bodies: JSON checked against a request model by pydantic in strict mode.

Strict, because the API's callers are programs and a lenient guess is a bug
waiting: ``"false"`` is not a boolean (it used to boot a VM), ``true`` is not
an integer, ``2.0`` is not a vCPU count. A wrong type, an unknown field or
invalid JSON becomes one :class:`~banger_core.common.errors.InvalidRequest` line that
names the field: ``vcpus: expected an integer, got true``.

Request models derive from :class:`ApiRequest`. The daemon parses bodies with
:func:`parse_body`; the SDK builds the same models from its keyword arguments
with :func:`build_request`, so a bad argument fails there with the same line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from banger_core.common.errors import InvalidRequest

_EXPECTED = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
}
_SHOWN_INPUT = 60


class ApiRequest(BaseModel):
    """Base of every request body: strict types, unknown fields refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @classmethod
    def from_json(cls, raw: bytes) -> Self:
        """A request body (JSON text; empty means ``{}``), or :class:`InvalidRequest` naming each bad field."""
        return parse_body(cls, raw)


RequestT = TypeVar("RequestT", bound=ApiRequest)


def parse_body(model: type[RequestT], raw: bytes) -> RequestT:
    """``raw`` (JSON text; empty means ``{}``) as an instance of ``model``, or :class:`InvalidRequest`."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _invalid(exc, model) from None


def build_request(model: type[RequestT], values: Mapping[str, object]) -> RequestT:
    """``model`` from Python values, checked as strictly as a body, or :class:`InvalidRequest`."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _invalid(exc, model) from None


def _invalid(exc: ValidationError, model: type[ApiRequest]) -> InvalidRequest:
    return InvalidRequest("; ".join(_describe(error, model) for error in exc.errors()))


def _describe(error: ErrorDetails, model: type[ApiRequest]) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        return f"request body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}"
    if kind == "model_type":
        return f"request body must be a JSON object, got {_shown(error['input'])}"
    field = ".".join(str(part) for part in error["loc"])
    if kind == "extra_forbidden":
        return f"{field}: unknown field (accepted: {', '.join(model.model_fields)})"
    if kind == "value_error":
        return f"{field}: {error.get('ctx', {}).get('error', error['msg'])}"
    if kind in _EXPECTED:
        return f"{field}: expected {_EXPECTED[kind]}, got {_shown(error['input'])}"
    return f"{field}: {error['msg']}"


def _shown(value: object) -> str:
    """The offending value as the client wrote it (JSON), cut short."""
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 3] + "..."
