"""The wire protocol between ``bangerd`` and ``bangerd-root``: one call of a :class:`~banger_hookspecs.HostOps` method.

One connection carries one call. Both directions send one *frame*: a 4-byte
big-endian length, then that many bytes of UTF-8 JSON (at most
:data:`MAX_FRAME` bytes)::

    request   {"method": "create_tap", "args": {"name": "bgr0123456789ab", "bridge": "banger0", "owner_uid": 1000}}
    answer    {"result": null}
    failure   {"error": {"type": "ValueError", "message": "invalid tap name '../x': use 1-15 characters ..."}}

``method`` is the name of a method of the ``HostOps`` protocol (nothing
else is callable) and ``args`` names every parameter of it, no more, no
less. Values travel as JSON, checked against the protocol's annotations on
both sides (:func:`check_value`): ``str``, ``int``, ``bool``, ``float``,
``None``, ``Path`` (an absolute path string), ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, unions of these, and frozen dataclasses (a JSON object of
their fields). A method annotated to return ``socket.socket`` answers
``{"result": {"fd": 0}}`` and passes the socket itself as SCM_RIGHTS ancillary
data with the answer frame (this is how the helper hands over a DNS socket
bound to port 53).

Adding a method to ``HostOps`` (and to the root implementation) is all it takes
to make it callable through the helper: the method list and the argument
types are read from the protocol itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import socket
import struct
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Union

from banger_hookspecs import HostOps

MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")
#: Answer frames carry at most this many passed file descriptors.
MAX_FDS = 4


class ProtocolError(Exception):
    """A frame or call that breaks the protocol; the message says what was wrong."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One callable ``HostOps`` method: its parameters' types in order, and its return type."""

    name: str
    params: dict[str, Any]
    returns: Any


@cache
def host_ops_methods() -> dict[str, MethodSpec]:
    """Every method of the ``HostOps`` protocol, by name, with its resolved annotations."""
    methods = {}
    for name, member in vars(HostOps).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        hints = typing.get_type_hints(member)
        params = [p for p in inspect.signature(member).parameters if p != "self"]
        methods[name] = MethodSpec(name, {p: hints[p] for p in params}, hints.get("return", type(None)))
    return methods


# ---------------------------------------------------------------------- values


def check_value(value: object, annotation: Any, where: str) -> object:
    """``value`` (as decoded from JSON) turned into ``annotation``'s type, or ProtocolError naming ``where``."""
    origin = typing.get_origin(annotation)
    if annotation is type(None) or annotation is None:
        if value is not None:
            raise ProtocolError(f"{where} must be null")
        return None
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return check_value(value, option, where)
            except ProtocolError:
                continue
        raise ProtocolError(f"{where} has the wrong type: expected {annotation}")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where} must be a boolean")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where} must be an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(f"{where} must be a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{where} must be a string")
        return value
    if annotation is Path:
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
            raise ProtocolError(f"{where} must be an absolute path")
        return Path(value)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        items = [check_value(v, item, f"{where}[{i}]") if item is not Any else v for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} must be an object")
        _, item = typing.get_args(annotation) or (str, Any)
        return {str(k): check_value(v, item, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _check_dataclass(value, annotation, where)
    raise ProtocolError(f"{where}: the protocol cannot carry values of type {annotation}")


def _check_dataclass(value: object, cls: type[Any], where: str) -> object:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    if set(value) != fields:
        raise ProtocolError(f"{where} must have exactly the fields {sorted(fields)}")
    return cls(**{name: check_value(value[name], hints[name], f"{where}.{name}") for name in fields})


def to_json(value: object) -> object:
    """``value`` as JSON data: paths as strings, tuples as lists, dataclasses as objects."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def check_call(message: object) -> tuple[MethodSpec, dict[str, object]]:
    """The method and typed arguments of a request frame, or ProtocolError."""
    if not isinstance(message, dict) or set(message) != {"method", "args"}:
        raise ProtocolError('a request is an object with exactly "method" and "args"')
    name, args = message["method"], message["args"]
    spec = host_ops_methods().get(name) if isinstance(name, str) else None
    if spec is None:
        raise ProtocolError(f"unknown method {name!r}: the helper serves only the HostOps methods")
    if not isinstance(args, dict) or set(args) != set(spec.params):
        raise ProtocolError(f"{spec.name} takes exactly the arguments {list(spec.params)}")
    return spec, {p: check_value(args[p], t, f"{spec.name}({p})") for p, t in spec.params.items()}


def returns_socket(spec: MethodSpec) -> bool:
    return bool(spec.returns is socket.socket)


# ---------------------------------------------------------------------- frames


def send_frame(sock: socket.socket, message: object, fds: list[int] | None = None) -> None:
    """Send ``message`` as one frame; ``fds`` go along as SCM_RIGHTS with its first byte."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(data)} bytes exceeds the {MAX_FRAME}-byte limit")
    payload = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [payload[:1]], fds)
        payload = payload[sent:]
    sock.sendall(payload)


def recv_frame(sock: socket.socket) -> tuple[object, list[int]]:
    """One frame's JSON value and the file descriptors passed with it (the caller owns and closes them)."""
    first, fds, _, _ = socket.recv_fds(sock, 1, MAX_FDS)
    try:
        if not first:
            raise ProtocolError("the peer closed the connection without sending a frame")
        header = first + _recv_exactly(sock, _HEADER.size - 1)
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError(f"a frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
        try:
            return json.loads(_recv_exactly(sock, length)), fds
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"a frame is not valid JSON: {exc}") from None
    except BaseException:
        close_all(fds)
        raise


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 16))
        if not chunk:
            raise ProtocolError("the peer closed the connection in the middle of a frame")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
