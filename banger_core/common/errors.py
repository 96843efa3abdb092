"""Exceptions whose message is a user sentence; the CLI prints them as one line.

The daemon maps them to HTTP statuses and the client maps statuses back to
the same types, so SDK users can ``except NotFound``.
"""

from __future__ import annotations


class BangerError(Exception):
    """Base for errors the user can act on. ``str(exc)`` says what and how to fix it."""

    exit_code = 1
    http_status = 400


class InvalidRequest(BangerError):
    """A request the API refuses as malformed: wrong type, unknown field, bad flag; the message names the field."""


class RequestTooLarge(BangerError):
    """A request body over the API's size cap."""

    http_status = 413


class NotFound(BangerError):
    http_status = 404


class Conflict(BangerError):
    """The request clashes with the current state (name taken, VM running, ...)."""

    http_status = 409


class Unavailable(BangerError):
    """Something banger needs is missing or unreachable (daemon, tool, provider)."""

    http_status = 503


class OperationFailed(BangerError):
    """A VM operation was attempted and failed (boot timeout, VMM crash)."""

    http_status = 500


ERRORS_BY_NAME: dict[str, type[BangerError]] = {
    cls.__name__: cls
    for cls in (BangerError, InvalidRequest, RequestTooLarge, NotFound, Conflict, Unavailable, OperationFailed)
}
