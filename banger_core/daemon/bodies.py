"""What the API accepts besides the path: request bodies (capped, typed) and query flags.

Every body is read through :func:`read_body`, which refuses more than
:data:`MAX_BODY` bytes with 413 twice over: by the declared Content-Length
before reading anything, and by counting while reading (a chunked body
declares none). It never holds more than the cap, so a 400 MB body costs the
daemon nothing. Bodies are then parsed strictly into :mod:`banger_core.api.requests` models;
routes without a body refuse one, and query flags take exactly ``1/true/yes``
or ``0/false/no``: a typo is a 400, never a silently ignored ``force``.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from banger_core.common.errors import InvalidRequest, RequestTooLarge

#: Bodies are a handful of names and numbers; 1 MiB leaves room for growth and none for abuse.
MAX_BODY = 1 << 20
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(
        f"request body is larger than {MAX_BODY >> 20} MiB: send less (VM options, image and kernel refs are small)"
    )


async def read_body(request: Request) -> bytes:
    """The raw body, at most :data:`MAX_BODY` bytes (else :class:`RequestTooLarge`)."""
    declared = request.headers.get("content-length")
    # The HTTP parser (h11) has already refused a Content-Length that is not a number.
    if declared is not None and int(declared) > MAX_BODY:
        raise _too_large()
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > MAX_BODY:
                raise _too_large()
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequest("the client went away while sending the request body") from None
    return b"".join(chunks)


async def refuse_body(request: Request, *flags: str) -> None:
    """For routes that take none: a body there is a client mistake (``{"force": true}`` meant as the flag)."""
    if await read_body(request):
        hint = f": pass {flags[0]} in the query string (?{flags[0]}=1)" if flags else ""
        raise InvalidRequest(f"{request.method} {request.url.path} takes no request body{hint}")


def query_flags(request: Request, *accepted: str) -> dict[str, bool]:
    """The boolean query parameters ``accepted`` (absent = False); any other parameter is refused."""
    flags = dict.fromkeys(accepted, False)
    seen: set[str] = set()
    for key, value in request.query_params.multi_items():
        if key not in flags:
            allowed = f"accepted: {', '.join(accepted)}" if accepted else "this route takes none"
            raise InvalidRequest(f"unknown query parameter {key!r} ({allowed})")
        if key in seen:
            raise InvalidRequest(f"{key}: given more than once")
        seen.add(key)
        word = value.lower()
        if word not in _TRUE + _FALSE:
            raise InvalidRequest(f"{key}: expected 1/true/yes or 0/false/no, got {value!r}")
        flags[key] = word in _TRUE
    return flags
