"""The Python SDK: the only way the CLI (or your code) talks to bangerd.

>>> from banger_core.client import Client
>>> with Client() as client:                       # doctest: +SKIP
...     vm = client.vms.create(name="scratch", progress=print)
...     print(vm.state, vm.ssh)
...     client.vms.delete("scratch", force=True)

Every call returns a model from :mod:`banger_core.api.models` (``--json``
prints the same ones) and takes typed keyword arguments. Errors come back as
the class the daemon raised (:class:`~banger_core.common.errors.NotFound`,
:class:`~banger_core.common.errors.InvalidName`, ...) carrying the daemon's
one-line message. The daemon is started on first use when none answers
(``autostart=True``).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar, Unpack
from urllib.parse import quote

from pydantic import JsonValue, ValidationError

from banger_core.api.events import ErrorEvent, HeartbeatEvent, ProgressUpdate, ResultEvent, parse_event
from banger_core.api.models import (
    AgentTargetView,
    ApiModel,
    AvailableImage,
    DaemonStatus,
    Deleted,
    ImagePulled,
    ImageView,
    KernelDeleted,
    KernelPulled,
    KernelView,
    Pushed,
    RunPlan,
    SshTargetView,
    Stopping,
    VmDetail,
    VmView,
    WarmTemplatesRemoved,
    WarmTemplateView,
)
from banger_core.api.requests import ArtifactPush, CreateRequest, ImagePull, ImageRegister, KernelPull, VmOptions
from banger_core.api.sessions import AttachTarget, SessionStart, SessionView
from banger_core.api.validation import ApiRequest, build_request
from banger_core.client.connection import Connection, decode
from banger_core.common.errors import BangerError, DaemonUnavailable, OperationFailed, error_for

if TYPE_CHECKING:
    import httpx

#: Called with each progress update of a long operation (``step``, ``progress``, ``log``, ``created``, ``spec``).
ProgressCallback = Callable[[ProgressUpdate], None]
M = TypeVar("M", bound=ApiModel)

__all__ = ["Client", "DaemonUnavailable", "ProgressCallback"]


def _read_result(lines: Iterator[str], progress: ProgressCallback | None) -> JsonValue:
    """Consume NDJSON events up to the ``result`` (returned) or ``error`` (raised); feed the rest to ``progress``.

    Events of a kind this SDK does not know (from a newer daemon) are skipped: progress is informational.
    """
    for line in lines:
        if not line:
            continue
        event = parse_event(line)
        if event is None or isinstance(event, HeartbeatEvent):
            continue
        if isinstance(event, ResultEvent):
            return event.data
        if isinstance(event, ErrorEvent):
            raise error_for(event.type, event.message)
        if progress is not None:
            progress(event)
    raise OperationFailed("bangerd ended the stream without a result (see `banger daemon logs`)")


def _parsed(model: type[M], data: JsonValue) -> M:
    """``data`` as ``model``; a daemon answering in another shape is an error that says so, not a traceback."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise OperationFailed(
            f"bangerd answered with an unexpected {model.__name__} ({exc.error_count()} problem(s), first: "
            f"{exc.errors()[0]['msg']}): is the daemon another banger version? `banger daemon restart`"
        ) from None


def _parsed_list(model: type[M], data: JsonValue) -> list[M]:
    if not isinstance(data, list):
        raise OperationFailed(f"bangerd answered with {type(data).__name__}, not a list of {model.__name__}")
    return [_parsed(model, item) for item in data]


def _body(request: ApiRequest | None) -> JsonValue:
    """A request model as JSON; fields left at None are not sent (the daemon applies its defaults)."""
    return None if request is None else request.model_dump(mode="json", exclude_none=True)


class Client(Connection):
    """A connection to bangerd over its Unix socket (arguments: :class:`~banger_core.client.connection.Connection`).

    Queries go over the standard library (:mod:`~banger_core.client.transport`);
    httpx is loaded only for streams (progress events, logs), where it earns its cost.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        autostart: bool = True,
        notify: Callable[[str], None] | None = None,
        socket: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(env, autostart=autostart, notify=notify, socket=socket)
        self._streams: httpx.Client | None = None
        self.vms = Vms(self)
        self.images = Images(self)
        self.kernels = Kernels(self)
        self.sessions = Sessions(self)
        self.daemon = DaemonApi(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._streams is not None:
            self._streams.close()

    @property
    def _http(self) -> httpx.Client:
        if self._streams is None:
            import httpx

            # Plain HTTP over a Unix socket: there is no TLS, so skip building an SSL
            # context (loading the CA bundle costs more than the whole request).
            self._streams = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.socket), verify=False),
                base_url="http://bangerd",
                # Long operations (image builds, boots under TCG) stream: only the gaps between events are bounded.
                timeout=httpx.Timeout(connect=5.0, read=None, write=30.0, pool=5.0),
                verify=False,  # noqa: S501 -- a Unix socket: no TLS to verify
            )
        return self._streams

    # -- requests ----------------------------------------------------------

    def request(
        self, method: str, path: str, *, body: ApiRequest | None = None, params: Mapping[str, str] | None = None
    ) -> JsonValue:
        """Send one query and return its JSON answer (the resource classes below parse it into models)."""
        return self.query(method, path, body=_body(body), params=params)

    @staticmethod
    def _decode(response: httpx.Response) -> JsonValue:
        return decode(response.status_code, response.read())

    def stream(
        self,
        method: str,
        path: str,
        *,
        body: ApiRequest | None = None,
        params: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> JsonValue:
        """Send a streaming request; feed progress events to ``progress``; return the ``result`` data."""
        import httpx

        self.ensure_daemon()
        try:
            with self._http.stream(method, path, json=_body(body), params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    return self._decode(response)
                return _read_result(response.iter_lines(), progress)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(f"lost the connection to bangerd: {exc}") from exc

    @contextmanager
    def raw_stream(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        method: str = "GET",
        body: ApiRequest | None = None,
    ) -> Iterator[httpx.Response]:
        self.ensure_daemon()
        with self._http.stream(method, path, params=params, json=_body(body)) as response:
            if response.status_code >= 400:
                response.read()
                self._decode(response)
            yield response


class Vms:
    """``client.vms``: VM records and lifecycle.

    ``create``, ``plan`` and ``ephemeral`` take the VM's spec as keywords
    (:class:`~banger_core.api.requests.VmOptions`: ``name``, ``image``,
    ``kernel``, ``backend``, ``network``, ``vcpus``, ``memory_mib``,
    ``disk_size``, ``host_access``, ``ports``: ``["8080:80", "53/udp"]``);
    one left out gets the configured default.
    A wrong type raises :class:`~banger_core.common.errors.InvalidRequest`
    before anything is sent, with the daemon's own message.
    """

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[VmView]:
        return _parsed_list(VmView, self._c.request("GET", "/v1/vms"))

    def get(self, name: str) -> VmDetail:
        return _parsed(VmDetail, self._c.request("GET", f"/v1/vms/{_segment(name)}"))

    def create(
        self,
        *,
        start: bool = True,
        remove_on_exit: bool = False,
        progress: ProgressCallback | None = None,
        **spec: Unpack[VmOptions],
    ) -> VmDetail:
        """Create a VM and, unless ``start=False``, boot it; returns it running (or created)."""
        request = build_request(CreateRequest, {**spec, "start": start, "remove_on_exit": remove_on_exit})
        return _parsed(VmDetail, self._c.stream("POST", "/v1/vms", body=request, progress=progress))

    def _op(self, name: str, op: str, progress: ProgressCallback | None, *, force: bool = False) -> VmDetail:
        query = {"force": "1"} if force else None
        data = self._c.stream("POST", f"/v1/vms/{_segment(name)}/{op}", params=query, progress=progress)
        return _parsed(VmDetail, data)

    def start(self, name: str, *, progress: ProgressCallback | None = None) -> VmDetail:
        return self._op(name, "start", progress)

    def stop(self, name: str, *, force: bool = False, progress: ProgressCallback | None = None) -> VmDetail:
        return self._op(name, "stop", progress, force=force)

    def restart(self, name: str, *, progress: ProgressCallback | None = None) -> VmDetail:
        return self._op(name, "restart", progress)

    def delete(self, name: str, *, force: bool = False, progress: ProgressCallback | None = None) -> Deleted:
        query = {"force": "1"} if force else None
        data = self._c.stream("DELETE", f"/v1/vms/{_segment(name)}", params=query, progress=progress)
        return _parsed(Deleted, data)

    def plan(self, **spec: Unpack[VmOptions]) -> RunPlan:
        """The spec a create with these options would get, and where each value comes from."""
        request = build_request(CreateRequest, spec)
        return _parsed(RunPlan, self._c.request("POST", "/v1/vms/plan", body=request))

    def ssh_target(self, name: str) -> SshTargetView:
        return _parsed(SshTargetView, self._c.request("GET", f"/v1/vms/{_segment(name)}/ssh"))

    def agent_target(self, name: str) -> AgentTargetView:
        return _parsed(AgentTargetView, self._c.request("GET", f"/v1/vms/{_segment(name)}/agent"))

    def logs(self, name: str, *, follow: bool = False) -> Iterator[bytes]:
        params = {"follow": "1"} if follow else {}
        with self._c.raw_stream(f"/v1/vms/{_segment(name)}/logs", params=params) as response:
            yield from response.iter_bytes()

    @contextmanager
    def ephemeral(self, *, progress: ProgressCallback | None = None, **spec: Unpack[VmOptions]) -> Iterator[VmDetail]:
        """Create and boot a VM that the daemon deletes when this block ends.

        The VM's life is tied to this connection: if this process is killed, the
        daemon notices the closed connection and deletes the VM all the same.
        A VM that fails to boot is kept for inspection (the error says so).
        """
        request = build_request(CreateRequest, {**spec, "start": True, "remove_on_exit": True})
        with self._c.raw_stream("/v1/vms", method="POST", body=request) as response:
            # Keep a reference: an abandoned iterator is closed, and httpcore then
            # closes the connection, which the daemon reads as "session over".
            lines = response.iter_lines()
            yield _parsed(VmDetail, _read_result(lines, progress))
            del lines


class Sessions:
    """``client.sessions``: long-lived commands in a running VM (``banger vm session``)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def _path(self, vm: str, session: str | None = None) -> str:
        base = f"/v1/vms/{_segment(vm)}/sessions"
        return base if session is None else f"{base}/{_segment(session)}"

    def start(
        self, vm: str, name: str, argv: builtins.list[str], *, cwd: str | None = None, stdin_mode: str = "pipe"
    ) -> SessionView:
        body = build_request(SessionStart, {"name": name, "argv": argv, "cwd": cwd, "stdin_mode": stdin_mode})
        return _parsed(SessionView, self._c.request("POST", self._path(vm), body=body))

    def list(self, vm: str) -> builtins.list[SessionView]:
        return _parsed_list(SessionView, self._c.request("GET", self._path(vm)))

    def stop(self, vm: str, name: str) -> SessionView:
        return _parsed(SessionView, self._c.request("POST", f"{self._path(vm, name)}/stop"))

    def attach(self, vm: str, name: str) -> AttachTarget:
        """The Unix socket that bridges to the session (its output out, its stdin in)."""
        return _parsed(AttachTarget, self._c.request("POST", f"{self._path(vm, name)}/attach"))

    def logs(self, vm: str, name: str, *, stream: str = "stdout", follow: bool = False) -> Iterator[bytes]:
        params = {"follow": "1"} if follow else {}
        with self._c.raw_stream(f"{self._path(vm, name)}/logs/{_segment(stream)}", params=params) as response:
            yield from response.iter_bytes()


class Images:
    """``client.images``: the local image store."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[ImageView]:
        return _parsed_list(ImageView, self._c.request("GET", "/v1/images"))

    def available(self) -> builtins.list[AvailableImage]:  # builtins: `list` is the method above
        """What the image sources can provide (``banger image list --available``)."""
        return _parsed_list(AvailableImage, self._c.request("GET", "/v1/images", params={"available": "1"}))

    def get(self, name: str) -> ImageView:
        return _parsed(ImageView, self._c.request("GET", f"/v1/images/{_segment(name)}"))

    def pull(
        self,
        ref: str,
        *,
        source: str | None = None,
        force: bool = False,
        with_sshd: bool = False,
        kernel_ref: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImagePulled:
        """Pull image ``ref`` and its kernel (already present: nothing is fetched unless ``force``).

        ``with_sshd``: an image without openssh-server installs it at first boot (``oci`` images).
        ``kernel_ref`` replaces the kernel the image's source names (``generic-6.1`` for OCI images).
        """
        request = build_request(
            ImagePull,
            {"ref": ref, "source": source, "force": force, "with_sshd": with_sshd, "kernel_ref": kernel_ref},
        )
        return _parsed(ImagePulled, self._c.stream("POST", "/v1/images/pull", body=request, progress=progress))

    def register(
        self, name: str, rootfs: str, *, kernel_ref: str | None = None, progress: ProgressCallback | None = None
    ) -> ImagePulled:
        """Adopt the ext4 file ``rootfs`` (an absolute path on the daemon's host) as image ``name``.

        The file is hard-linked into the store (copied when on another file
        system) and never modified; an existing image ``name`` is an error.
        """
        request = build_request(ImageRegister, {"name": name, "rootfs": rootfs, "kernel_ref": kernel_ref})
        return _parsed(ImagePulled, self._c.stream("POST", "/v1/images/register", body=request, progress=progress))

    def delete(self, name: str) -> Deleted:
        return _parsed(Deleted, self._c.request("DELETE", f"/v1/images/{_segment(name)}"))

    def push(self, name: str, target: str, *, progress: ProgressCallback | None = None) -> Pushed:
        """Publish image ``name`` at ``target`` (``REGISTRY/REPO:TAG``); ``Pushed.reference`` pins it by digest."""
        request = build_request(ArtifactPush, {"target": target})
        data = self._c.stream("POST", f"/v1/images/{_segment(name)}/push", body=request, progress=progress)
        return _parsed(Pushed, data)

    def warm(self, name: str, *, progress: ProgressCallback | None = None) -> WarmTemplateView:
        """Boot image ``name`` once with the default VM spec, save it paused: matching creates restore it."""
        return _parsed(WarmTemplateView, self._c.stream("POST", f"/v1/images/{_segment(name)}/warm", progress=progress))

    def unwarm(self, name: str) -> WarmTemplatesRemoved:
        """Delete image ``name``'s warm templates (``banger image warm --rm``)."""
        return _parsed(WarmTemplatesRemoved, self._c.request("DELETE", f"/v1/images/{_segment(name)}/warm"))


class Kernels:
    """``client.kernels``: the local kernel store."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[KernelView]:
        return _parsed_list(KernelView, self._c.request("GET", "/v1/kernels"))

    def pull(
        self, ref: str, *, provider: str | None = None, force: bool = False, progress: ProgressCallback | None = None
    ) -> KernelPulled:
        request = build_request(KernelPull, {"ref": ref, "provider": provider, "force": force})
        return _parsed(KernelPulled, self._c.stream("POST", "/v1/kernels/pull", body=request, progress=progress))

    def delete(self, ref: str) -> KernelDeleted:
        return _parsed(KernelDeleted, self._c.request("DELETE", f"/v1/kernels/{_segment(ref)}"))

    def push(self, ref: str, target: str, *, progress: ProgressCallback | None = None) -> Pushed:
        """Publish kernel ``ref`` at ``target`` (``REGISTRY/REPO:TAG``); ``Pushed.reference`` pins it by digest."""
        request = build_request(ArtifactPush, {"target": target})
        data = self._c.stream("POST", f"/v1/kernels/{_segment(ref)}/push", body=request, progress=progress)
        return _parsed(Pushed, data)


class DaemonApi:
    """``client.daemon``: status and shutdown."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def status(self) -> DaemonStatus:
        data = self._c.request("GET", "/v1/daemon")
        try:
            return DaemonStatus.model_validate(data)
        except ValidationError as exc:
            raise OperationFailed(f"bangerd's status is not understood: {exc.errors()[0]['msg']}") from None

    def shutdown(self) -> Stopping:
        return _parsed(Stopping, self._c.request("POST", "/v1/daemon/shutdown"))


def _segment(value: str) -> str:
    """A URL path segment; names are validated by the daemon, this only keeps the URL well-formed."""
    if not value or value in (".", ".."):
        raise BangerError(f"invalid name {value!r}")
    return quote(value, safe="")
