"""The Python SDK: the only way the CLI (or your code) talks to bangerd.

>>> from banger_core.client import Client
>>> with Client() as client:                       # doctest: +SKIP
...     vm = client.vms.create(name="scratch", progress=print)
...     print(vm["state"], vm["ssh"])
...     client.vms.delete("scratch", force=True)

Errors come back as the daemon raised them (:class:`~banger_core.common.errors.NotFound`,
:class:`~banger_core.common.errors.Conflict`, ...) carrying the daemon's one-line message.
The daemon is started on first use when none answers (``autostart=True``).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from banger_core.common import paths
from banger_core.common.errors import ERRORS_BY_NAME, BangerError, OperationFailed, Unavailable

Event = dict[str, Any]
ProgressCallback = Callable[[Event], None]
START_TIMEOUT = 30.0
#: Long operations (image builds, boots under TCG) stream; only the gaps between events are bounded.
STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=5.0)
QUERY_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class DaemonUnavailable(Unavailable):
    """No daemon answers on the socket (and it could not be started)."""


def _raise_for(payload: Mapping[str, Any]) -> None:
    kind = str(payload.get("type", "BangerError"))
    message = str(payload.get("message", "unknown error"))
    raise ERRORS_BY_NAME.get(kind, OperationFailed)(message)


def _read_result(lines: Iterator[str], progress: ProgressCallback | None) -> Any:
    """Consume NDJSON events up to the ``result`` (returned) or ``error`` (raised); feed the rest to ``progress``."""
    for line in lines:
        if not line:
            continue
        event = json.loads(line)
        kind = event.get("event")
        if kind == "result":
            return event.get("data")
        if kind == "error":
            _raise_for(event)
        if progress is not None:
            progress(event)
    raise OperationFailed("bangerd ended the stream without a result (see `banger daemon logs`)")


class Client:
    """A connection to bangerd over its Unix socket.

    Args:
        env: environment to resolve the socket from (default ``os.environ``).
        autostart: start the daemon when none answers.
        notify: called with one line when the daemon had to be started.
        socket: talk to the daemon on this socket instead of the configured one.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        autostart: bool = True,
        notify: Callable[[str], None] | None = None,
        socket: Path | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.socket = socket or paths.socket_path(self.env)
        self.autostart = autostart
        self.notify = notify
        # Plain HTTP over a Unix socket: there is no TLS, so skip building an SSL
        # context (loading the CA bundle costs more than the whole request).
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket), verify=False),
            base_url="http://bangerd",
            timeout=QUERY_TIMEOUT,
            verify=False,  # noqa: S501 -- a Unix socket: no TLS to verify
        )
        self._checked = False
        self.vms = Vms(self)
        self.images = Images(self)
        self.kernels = Kernels(self)
        self.daemon = DaemonApi(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- connection --------------------------------------------------------

    def ping(self) -> bool:
        try:
            return self._http.get("/v1/daemon", timeout=5.0).status_code == 200
        except httpx.TransportError:
            return False

    def ensure_daemon(self) -> None:
        """Make sure a daemon answers, starting one (once, even under races) if allowed.

        Never a second daemon for one state dir: when the state lock is held by
        a daemon that does not answer here, this says so instead of starting one.
        """
        if self._checked or self.ping():
            self._checked = True
            return
        if not self.autostart:
            raise DaemonUnavailable(f"bangerd is not running (no answer on {self.socket}): run any banger command")
        state = paths.ensure_private_dir(paths.state_dir(self.env), "state_dir")
        # In the state dir, not the runtime dir: CLIs that disagree about the runtime dir still queue here.
        with open(state / "bangerd.start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # racing CLIs queue here; the first one starts it
            if not self._wait_for_holder(state):
                self._spawn(paths.ensure_private_dir(self.socket.parent, "runtime_dir"))
        self._checked = True

    def _wait_for_holder(self, state: Path) -> bool:
        """True once a daemon answers; False when no daemon holds ``state`` (one may be started).

        A daemon holding the state lock for this socket may be starting up
        (reconcile runs before it listens) or shutting down: give it the
        start-up time to answer or to go away before calling it wedged.
        """
        from banger_core.common.instance import LOCK_NAME, lock_holder

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.ping():
                return True
            holder = lock_holder(state / LOCK_NAME)
            if holder is None:
                return False
            if holder.socket is not None and holder.socket != self.socket:
                raise DaemonUnavailable(
                    f"{holder.who} already runs for state dir {state} but listens on {holder.socket}, "
                    f"not on {self.socket} (another XDG_RUNTIME_DIR or runtime_dir): run banger with the same "
                    "runtime dir, or `banger daemon stop` that daemon first"
                )
            if time.monotonic() >= deadline:
                raise DaemonUnavailable(
                    f"{holder.who} holds state dir {state} but has not answered on {self.socket} "
                    f"for {START_TIMEOUT:.0f} s: `banger daemon stop` stops it (SIGTERM, then SIGKILL)"
                )
            time.sleep(0.1)

    def _spawn(self, runtime: Path) -> None:
        errors = runtime / "bangerd.stderr"
        with open(errors, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "banger_core.daemon", "--background"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.ping():
                if self.notify:
                    self.notify(f"banger: started the daemon (pid {proc.pid}); `banger daemon logs` shows its log")
                return
            code = proc.poll()
            if code is not None:
                why = errors.read_text(errors="replace").strip().splitlines()
                detail = why[-1] if why else f"exit status {code}"
                raise DaemonUnavailable(f"the daemon failed to start: {detail.removeprefix('bangerd: error: ')}")
            time.sleep(0.05)
        raise DaemonUnavailable(f"the daemon did not answer on {self.socket} within {START_TIMEOUT:.0f} s")

    # -- requests ----------------------------------------------------------

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        # Optimistic: talk first, start the daemon only if nobody answered (saves a round trip).
        try:
            response = self._http.request(method, path, json=json_body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            self.ensure_daemon()
            try:
                response = self._http.request(method, path, json=json_body, params=params)
            except httpx.TransportError as exc:
                raise DaemonUnavailable(f"lost the connection to bangerd: {exc}") from exc
        except httpx.TransportError as exc:
            raise DaemonUnavailable(f"lost the connection to bangerd: {exc}") from exc
        self._checked = True
        return self._decode(response)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        try:
            data = response.json()
        except ValueError:
            raise OperationFailed(f"bangerd answered {response.status_code} without JSON") from None
        if response.status_code >= 400:
            _raise_for(data.get("error", {}) if isinstance(data, dict) else {})
        return data

    def stream(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Send a streaming request; feed events to ``progress``; return the ``result`` data."""
        self.ensure_daemon()
        try:
            with self._http.stream(method, path, json=json_body, params=params, timeout=STREAM_TIMEOUT) as response:
                if response.status_code >= 400:
                    response.read()
                    return self._decode(response)
                return _read_result(response.iter_lines(), progress)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(f"lost the connection to bangerd: {exc}") from exc

    @contextmanager
    def raw_stream(
        self, path: str, params: Mapping[str, Any] | None = None, *, method: str = "GET", json_body: Any = None
    ) -> Iterator[httpx.Response]:
        self.ensure_daemon()
        with self._http.stream(method, path, params=params, json=json_body, timeout=STREAM_TIMEOUT) as response:
            if response.status_code >= 400:
                response.read()
                self._decode(response)
            yield response


class Vms:
    """``client.vms``: VM records and lifecycle."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._c.request("GET", "/v1/vms")
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._c.request("GET", f"/v1/vms/{_segment(name)}")
        return result

    def create(self, *, progress: ProgressCallback | None = None, **options: Any) -> dict[str, Any]:
        """Create (and by default start) a VM. Options: name, image, kernel, backend, network,
        vcpus, memory_mib, disk_size, start, remove_on_exit, host_access."""
        body = {k: v for k, v in options.items() if v is not None}
        result: dict[str, Any] = self._c.stream("POST", "/v1/vms", json_body=body, progress=progress)
        return result

    def _op(self, name: str, op: str, progress: ProgressCallback | None, **params: Any) -> dict[str, Any]:
        query = {k: "1" for k, v in params.items() if v}
        result: dict[str, Any] = self._c.stream(
            "POST", f"/v1/vms/{_segment(name)}/{op}", params=query, progress=progress
        )
        return result

    def start(self, name: str, *, progress: ProgressCallback | None = None) -> dict[str, Any]:
        return self._op(name, "start", progress)

    def stop(self, name: str, *, force: bool = False, progress: ProgressCallback | None = None) -> dict[str, Any]:
        return self._op(name, "stop", progress, force=force)

    def restart(self, name: str, *, progress: ProgressCallback | None = None) -> dict[str, Any]:
        return self._op(name, "restart", progress)

    def delete(self, name: str, *, force: bool = False, progress: ProgressCallback | None = None) -> dict[str, Any]:
        query = {"force": "1"} if force else {}
        result: dict[str, Any] = self._c.stream("DELETE", f"/v1/vms/{_segment(name)}", params=query, progress=progress)
        return result

    def plan(self, **options: Any) -> dict[str, Any]:
        """The spec a create with these options would get, and where each value comes from."""
        body = {k: v for k, v in options.items() if v is not None}
        result: dict[str, Any] = self._c.request("POST", "/v1/vms/plan", json_body=body)
        return result

    def ssh_target(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._c.request("GET", f"/v1/vms/{_segment(name)}/ssh")
        return result

    def logs(self, name: str, *, follow: bool = False) -> Iterator[bytes]:
        params = {"follow": "1"} if follow else {}
        with self._c.raw_stream(f"/v1/vms/{_segment(name)}/logs", params=params) as response:
            yield from response.iter_bytes()

    @contextmanager
    def ephemeral(self, *, progress: ProgressCallback | None = None, **options: Any) -> Iterator[dict[str, Any]]:
        """Create and boot a VM that the daemon deletes when this block ends.

        The VM's life is tied to this connection: if this process is killed, the
        daemon notices the closed connection and deletes the VM all the same.
        A VM that fails to boot is kept for inspection (the error says so).
        """
        body = {k: v for k, v in options.items() if v is not None}
        body["remove_on_exit"] = True
        body["start"] = True
        with self._c.raw_stream("/v1/vms", method="POST", json_body=body) as response:
            # Keep a reference: an abandoned iterator is closed, and httpcore then
            # closes the connection, which the daemon reads as "session over".
            lines = response.iter_lines()
            yield _read_result(lines, progress)
            del lines


class Images:
    """``client.images``: the local image store."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, *, available: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._c.request(
            "GET", "/v1/images", params={"available": "1"} if available else None
        )
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._c.request("GET", f"/v1/images/{_segment(name)}")
        return result

    def pull(
        self, ref: str, *, source: str | None = None, force: bool = False, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        body = {"ref": ref, "source": source, "force": force}
        result: dict[str, Any] = self._c.stream("POST", "/v1/images/pull", json_body=body, progress=progress)
        return result

    def delete(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._c.request("DELETE", f"/v1/images/{_segment(name)}")
        return result


class Kernels:
    """``client.kernels``: the local kernel store."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._c.request("GET", "/v1/kernels")
        return result

    def pull(
        self, ref: str, *, provider: str | None = None, force: bool = False, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        body = {"ref": ref, "provider": provider, "force": force}
        result: dict[str, Any] = self._c.stream("POST", "/v1/kernels/pull", json_body=body, progress=progress)
        return result

    def delete(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self._c.request("DELETE", f"/v1/kernels/{_segment(ref)}")
        return result


class DaemonApi:
    """``client.daemon``: status and shutdown."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._c.request("GET", "/v1/daemon")
        return result

    def shutdown(self) -> None:
        self._c.request("POST", "/v1/daemon/shutdown")


def _segment(value: str) -> str:
    """A URL path segment; names are validated by the daemon, this only keeps the URL well-formed."""
    if not value or value in (".", ".."):
        raise BangerError(f"invalid name {value!r}")
    return quote(value, safe="")
