"""Exceptions whose message is a user sentence; the CLI prints them as one line.

Every :class:`BangerError` subclass is defined here, whichever layer raises
it: the daemon reports an error as its class name and message, and the SDK
raises that same class again (:data:`ERRORS_BY_NAME`), so SDK users can
``except NotFound`` or ``except InvalidName``. A class defined anywhere else
could not cross the socket (the CLI side never imports daemon or host code);
``tests/unit/test_error_round_trip.py`` fails for one that is not listed here.
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


class DaemonUnavailable(Unavailable):
    """No daemon answers on the socket (and it could not be started); raised by the SDK itself."""


class OperationFailed(BangerError):
    """A VM operation was attempted and failed (boot timeout, VMM crash)."""

    http_status = 500


class InvalidName(BangerError):
    """A VM, image or kernel name that breaks the naming rule; the message states the rule."""


class ConfigError(BangerError):
    """A config problem, as one line naming the file, the key and what is expected."""


class PluginError(BangerError):
    """A plugin problem the user must fix (conflicting names, unknown provider)."""


class GuestSetupError(BangerError):
    """A VM's disks or identity could not be made; the message says what to fix."""


class FileSyncError(BangerError, ValueError):
    """A ``file_sync`` entry is invalid or cannot be staged; the message names the entry."""


class DnsServerError(BangerError):
    """The DNS server cannot listen where it was asked to; the message says why and what to do."""


class StateError(BangerError):
    """The state database cannot be used; the message says what to do."""


class BundleWriteError(BangerError):
    """A bundle could not be written; the message says what was wrong and how to fix it."""


class NotPrivileged(BangerError):
    """A privileged operation was asked of a process without privileges."""


class NoRootHelper(NotPrivileged, NotImplementedError):
    """Nothing privileged can start the Firecracker jailer; also a NotImplementedError, which
    ``HostOps.spawn_jailed_vmm`` documents, so a VMM backend may fall back to running unjailed."""


class HostOpError(BangerError):
    """A privileged host operation failed; the message says what to do."""


class AgentUnavailable(Unavailable):
    """A VM's guest agent cannot be reached (VM not running, no agent channel or token)."""


class AgentError(OperationFailed):
    """The guest agent answered with a failure, or broke its protocol; the message says which."""


class AgentAuthError(AgentError):
    """The guest agent refused the VM's token."""


class SignatureRefused(BangerError):
    """A Sigstore signature did not verify (banger_core.trust): the message names the check that failed and the fix."""


#: Every error class by the name the API reports it under (the SDK raises these again).
ERRORS_BY_NAME: dict[str, type[BangerError]] = {
    cls.__name__: cls
    for cls in (
        BangerError,
        InvalidRequest,
        RequestTooLarge,
        NotFound,
        Conflict,
        Unavailable,
        DaemonUnavailable,
        OperationFailed,
        InvalidName,
        ConfigError,
        PluginError,
        GuestSetupError,
        FileSyncError,
        DnsServerError,
        StateError,
        BundleWriteError,
        NotPrivileged,
        NoRootHelper,
        HostOpError,
        AgentUnavailable,
        AgentError,
        AgentAuthError,
        SignatureRefused,
    )
}


def error_for(kind: str, message: str) -> BangerError:
    """The exception a daemon error ``{"type": kind, "message": message}`` stands for.

    A type this side does not know (a newer daemon's, or ``InternalError`` for
    a daemon bug) becomes :class:`OperationFailed` with the same message.
    """
    return ERRORS_BY_NAME.get(kind, OperationFailed)(message)
