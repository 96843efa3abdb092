"""bangerd's HTTP API (starlette), served by uvicorn on a Unix socket.

Plain JSON for queries; NDJSON streams (one event per line: ``step``,
``progress``, ``log``, then ``result`` or ``error``) for long operations, so
the CLI can show progress. Blocking work runs in threads and keeps running
when a client disconnects; what happens then is decided per operation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from banger_core.api.events import (
    CreatedEvent,
    ErrorEvent,
    EventSink,
    HeartbeatEvent,
    ResultEvent,
    SpecEvent,
    StreamEvent,
)
from banger_core.api.models import (
    ApiModel,
    DaemonStatus,
    Deleted,
    ErrorBody,
    ErrorInfo,
    KernelDeleted,
    RunPlan,
    SshTargetView,
    Stopping,
    VmDetail,
    WarmTemplatesRemoved,
)
from banger_core.api.requests import ArtifactPush, CreateRequest, ImagePull, ImageRegister, KernelPull
from banger_core.api.sessions import AttachTarget, SessionStart, SessionView
from banger_core.api.state import VmState
from banger_core.common.buildinfo import build_info
from banger_core.common.errors import BangerError, NotFound, RequestTooLarge
from banger_core.daemon.agent.client import agent_client_for
from banger_core.daemon.bodies import query_flags, read_body, refuse_body
from banger_core.daemon.config_watch import ConfigWatch
from banger_core.daemon.crashpoint import crash_point
from banger_core.daemon.images import Store, image_view
from banger_core.daemon.publish import Publisher
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.sessions import SessionManager, SessionRecord
from banger_core.daemon.vm import VmService
from banger_hookspecs import DnsRouterDriver
from banger_hookspecs.logpump import rotated

if TYPE_CHECKING:
    from banger_core.daemon.dns import DnsServer

log = logging.getLogger("banger.api")
NDJSON = "application/x-ndjson"
SESSION_HEARTBEAT = 10.0
DNS_START_TIMEOUT = 10.0
LOG_FOLLOW_INTERVAL = 0.25
T = TypeVar("T")
ResultT = TypeVar("ResultT", bound=ApiModel)


def error_payload(exc: BaseException) -> ErrorInfo:
    """How the API reports ``exc``: a :class:`BangerError` by its class name (the SDK raises it again)."""
    if isinstance(exc, BangerError):
        return ErrorInfo(type=type(exc).__name__, message=str(exc))
    return ErrorInfo(type="InternalError", message=f"internal error: {type(exc).__name__}: {exc} (see the daemon log)")


def error_response(exc: BaseException) -> JSONResponse:
    status = exc.http_status if isinstance(exc, BangerError) else 500
    # Hang up rather than let the server drain the rest of an oversized body.
    headers = {"connection": "close"} if isinstance(exc, RequestTooLarge) else None
    return JSONResponse(
        ErrorBody(error=error_payload(exc)).model_dump(mode="json"), status_code=status, headers=headers
    )


def answer(data: ApiModel | Sequence[ApiModel]) -> JSONResponse:
    """A query's answer: one model, or a list of them, as JSON."""
    if isinstance(data, ApiModel):
        return JSONResponse(data.model_dump(mode="json"))
    return JSONResponse([item.model_dump(mode="json") for item in data])


class Daemon:
    """The services behind the API, plus background tasks."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = Store(rt)
        self.vms = VmService(rt, self.store)
        self.publisher = Publisher(rt, self.store)
        self.config_watch = ConfigWatch(rt)
        self.started = time.time()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutdown_requested: Callable[[], None] | None = None
        #: name -> address of running VMs, read by the DNS server on every query (no I/O there).
        self.dns_table: dict[str, str] = {}
        self.dns_server: DnsServer | None = None
        #: the web UI's URL, "off", or "not started: <why>" (set by daemon.web; shown by `daemon status`).
        self.web_ui = "off"
        #: the web UI's URL while it is served (for `banger web`), else None.
        self.web_url: str | None = None
        self.sessions = SessionManager(rt.layout, lambda vm_id: agent_client_for(rt, vm_id))
        self.vms.on_change.append(self.refresh_ssh_config)
        self.vms.on_change.append(self.refresh_dns_table)

    def refresh_dns_table(self) -> None:
        self.dns_table = self.vms.running_addresses()

    def refresh_ssh_config(self) -> None:
        """Rewrite ~/.config/banger/ssh_config (called after every VM state change)."""
        from banger_core.common import sshconfig

        text = sshconfig.render(self.rt.keys.key, self.rt.keys.known_hosts, self.vms.all())
        path = sshconfig.generated_path(self.rt.env)
        try:
            if not path.exists() or path.read_text() != text:
                sshconfig.write_atomic(path, text)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    async def start_services(self) -> None:
        """Host network of the default backend (and of adopted VMs), the .vm DNS server; failures are logged.

        Other backends are set up by the first VM that needs one
        (:meth:`Runtime.ready_network`); a VM whose backend cannot be set up
        fails to start with that backend's own error, which names the fix.
        """
        from banger_core.common.progress import NullProgress
        from banger_core.daemon.dns import DnsServer

        await self.run_blocking(self.refresh_ssh_config)
        await self.run_blocking(self.refresh_dns_table)
        await self.run_blocking(self.sessions.adopt)  # sessions kept running in their guests
        # A lambda, not the bound .get: the table object is replaced on every change.
        self.dns_server = DnsServer(lambda vm_name: self.dns_table.get(vm_name), logger=logging.getLogger("banger.dns"))
        loopback_port = self.rt.config.get("dns_loopback_port")
        if loopback_port is not None:
            try:
                await self.dns_server.start(binds=[("127.0.0.1", loopback_port)])
                log.info("DNS for .vm on 127.0.0.1:%s", loopback_port)
            except Exception as exc:
                log.warning("the .vm DNS server could not start on 127.0.0.1:%s: %s", loopback_port, exc)
        loop = asyncio.get_running_loop()
        self.rt.on_network_ready.append(lambda name, driver: self._serve_dns_on(loop, driver.dns_link()))
        adopted = {vm.network for vm in self.vms.all() if vm.state == VmState.RUNNING}
        default = self.rt.config["network_backend"]
        for name in [default, *sorted(adopted - {default})]:
            try:
                await self.run_blocking(functools.partial(self.rt.ready_network, name, NullProgress()))
            except Exception as exc:
                log.warning("network backend %s is not ready (the first VM using it tries again): %s", name, exc)

    def _serve_dns_on(self, loop: asyncio.AbstractEventLoop, dns_link: tuple[str, str] | None) -> None:
        """Answer .vm queries on a backend's DNS address too, then route ``*.vm`` there (from a worker thread).

        The socket comes from the host ops: port 53 needs privilege, so an
        owner daemon gets it bound by ``bangerd-root``.
        """
        if dns_link is None or self.dns_server is None:
            return
        address, port = dns_link[1], self.rt.config["dns_port"]
        if (address, port) in self.dns_server.addresses:
            return
        try:
            sock = self.rt.ctx.host_ops.bind_dns_socket(address, port)
            server = self.dns_server
            asyncio.run_coroutine_threadsafe(server.start(sockets=[sock]), loop).result(DNS_START_TIMEOUT)
            log.info("DNS for .vm on %s:%s", address, port)
        except Exception as exc:
            log.warning("the .vm DNS server could not listen on %s:%s: %s", address, port, exc)
            return
        self._route_dns(dns_link)

    def _route_dns(self, dns_link: tuple[str, str]) -> None:
        link, address = dns_link
        try:
            router = self.dns_router()
            router.route(link, address, "vm")
            log.info("*.vm routing: %s", router.instructions(link, address, "vm"))
        except Exception as exc:
            log.warning("could not route *.vm to %s on %s: %s", address, link, exc)

    def dns_router(self) -> DnsRouterDriver:
        """The configured DNS router, or for ``auto`` the detected one with the lowest priority."""
        configured = self.rt.config["dns_router"]
        if configured != "auto":
            return self.rt.dns_router(configured)
        routers = self.rt.pm.dns_routers()
        for router_name in sorted(routers, key=lambda n: (routers[n].value.priority, n)):
            driver = self.rt.dns_router(router_name)
            if driver.detect():
                return driver
        return self.rt.dns_router("manual")

    async def stop_services(self) -> None:
        """Stop answering DNS; VMs, taps, the bridge and resolver routes stay for the next daemon.

        A warm template being made is not a VM anyone asked for: its VMM goes with this daemon.
        """
        self.sessions.close()  # sessions stay in their guests: the next daemon adopts them
        await self.run_blocking(self.vms.templates.finish_interrupted)
        if self.dns_server is not None:
            await self.dns_server.stop()

    async def watch_liveness(self, interval: float) -> None:
        """Notice VMs whose VMM exited (guest power-off, crash) without waiting for a command."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_blocking(self.vms.check_alive)
            except Exception:
                log.exception("liveness check failed")

    def keep(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn)

    def stream(
        self,
        work: Callable[[EventSink], ResultT],
        *,
        on_abandon: Callable[[asyncio.Task[None]], None] | None = None,
        hold: Callable[[ResultT], Callable[[], None] | None] | None = None,
    ) -> StreamingResponse:
        """Run ``work(progress)`` in a thread and stream its events.

        ``on_abandon(task)`` is called when the client goes away before the work ends.
        ``hold(result)`` may return a release callback: the stream then stays open
        after the result (heartbeats) and the callback runs when the client goes
        away — this is how a ``--rm`` VM's life is tied to its client, race-free.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

        def emit(event: StreamEvent | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        progress = EventSink(emit, log)
        outcome: list[ResultT] = []

        async def run() -> None:
            try:
                result = await self.run_blocking(lambda: work(progress))
            except BaseException as exc:
                if not isinstance(exc, BangerError):
                    log.error("operation failed", exc_info=exc)
                error = error_payload(exc)
                emit(ErrorEvent(type=error.type, message=error.message))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                outcome.append(result)
                emit(ResultEvent(data=result.model_dump(mode="json")))
            finally:
                emit(None)

        task = loop.create_task(run())
        self.keep(task)

        async def body() -> AsyncIterator[str]:
            finished = False
            release: Callable[[], None] | None = None
            try:
                while True:
                    event = await queue.get()
                    if event is None:
                        finished = True
                        break
                    yield event.model_dump_json() + "\n"
                if hold is not None and outcome:
                    release = hold(outcome[0])
                    while release is not None:
                        await asyncio.sleep(SESSION_HEARTBEAT)
                        yield HeartbeatEvent().model_dump_json() + "\n"
            finally:
                if not finished and on_abandon is not None:
                    on_abandon(task)
                if release is not None:
                    release()

        return StreamingResponse(body(), media_type=NDJSON)

    # -- VM cleanup for abandoned creates and --rm sessions -------------------

    def delete_later(self, vm_id: str, name: str, why: str) -> None:
        """Delete VM ``vm_id`` in the background (force), logging why.

        By id, never by name: by the time this runs the VM may have been
        deleted and its name given to a new VM, which must be left alone.
        """

        async def go() -> None:
            from banger_core.common.progress import NullProgress

            log.info("deleting VM %s (id %s): %s", name, vm_id, why)
            try:
                await self.run_blocking(lambda: self.vms.delete_by_id(vm_id, NullProgress(), force=True))
            except NotFound:
                log.info("VM %s (id %s) was already deleted", name, vm_id)
            except Exception:
                log.exception("deleting VM %s", name)

        self.keep(asyncio.get_running_loop().create_task(go()))


def _required_ref(ref: str, message: str) -> str:
    if not ref:
        raise BangerError(message)
    return ref


def handler(fn: Callable[[Daemon, Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        daemon: Daemon = request.app.state.daemon
        try:
            if not request.url.path.startswith("/v1/daemon"):  # status and shutdown work whatever the file says
                daemon.config_watch.check()
            return await fn(daemon, request)
        except Exception as exc:
            if not isinstance(exc, BangerError):
                log.exception("%s %s failed", request.method, request.url.path)
            return error_response(exc)

    return wrapped


# -- daemon ------------------------------------------------------------------


@handler
async def daemon_status(d: Daemon, request: Request) -> Response:
    vms = await d.run_blocking(d.vms.all)
    info = build_info()
    status = DaemonStatus(
        pid=os.getpid(),
        version=info.version,
        commit=info.commit,
        started=d.started,
        uptime=time.time() - d.started,
        socket=str(d.rt.layout.socket),
        log_file=str(d.rt.layout.log_file),
        state_dir=str(d.rt.layout.state_dir),
        vms=len(vms),
        running_vms=sum(1 for vm in vms if vm.state is VmState.RUNNING),
        web_ui=d.web_ui,
        config=d.config_watch.describe(),
        web_url=d.web_url,
        in_progress=d.rt.busy.snapshot(),
    )
    return JSONResponse(status.model_dump(mode="json"))


@handler
async def daemon_shutdown(d: Daemon, request: Request) -> Response:
    query_flags(request)
    await refuse_body(request)
    if d.shutdown_requested is not None:
        asyncio.get_running_loop().call_later(0.1, d.shutdown_requested)
    return answer(Stopping())


# -- VMs ---------------------------------------------------------------------


@handler
async def vm_list(d: Daemon, request: Request) -> Response:
    return answer(await d.run_blocking(d.vms.all))


@handler
async def vm_get(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    return answer(await d.run_blocking(lambda: d.vms.get(name)))


@handler
async def vm_create(d: Daemon, request: Request) -> Response:
    req = CreateRequest.from_json(await read_body(request))
    created: list[tuple[str, str]] = []

    def work(progress: EventSink) -> VmDetail:
        def record(vm_id: str, name: str) -> None:
            created.append((vm_id, name))
            progress.event(CreatedEvent(name=name))

        return d.vms.create(req, progress, on_record=record, on_spec=lambda plan: progress.event(SpecEvent(plan=plan)))

    def abandoned(task: asyncio.Task[None]) -> None:
        # Ctrl-C or a killed CLI during creation: undo what was created, once it settles.
        def settle(_: asyncio.Task[None]) -> None:
            if created:
                d.delete_later(*created[0], "its creating client went away")

        task.add_done_callback(settle)

    def hold(vm: VmDetail) -> Callable[[], None] | None:
        if not req.remove_on_exit:
            return None
        crash_point("session:held")
        return lambda: d.delete_later(vm.id, vm.name, "its --rm session ended")

    return d.stream(work, on_abandon=abandoned, hold=hold)


@handler
async def vm_plan(d: Daemon, request: Request) -> Response:
    """The spec a create would use, with provenance, without creating anything."""
    req = CreateRequest.from_json(await read_body(request))
    values, sources = await d.run_blocking(lambda: d.vms.resolve(req, image_may_be_missing=True))
    return answer(RunPlan(values=values, sources=sources))


@dataclasses.dataclass(frozen=True)
class VmOp:
    """A VM operation route: the service method it runs and the query flags it passes on."""

    run: Callable[..., VmDetail | Deleted]
    flags: tuple[str, ...] = ()


#: Every operation ``_vm_op`` can serve. Nothing is a fallback: a name missing here
#: fails when the route is built, so a typo can never turn into a delete.
VM_OPS: dict[str, VmOp] = {
    "start": VmOp(VmService.start),
    "stop": VmOp(VmService.stop, flags=("force",)),
    "restart": VmOp(VmService.restart),
    "delete": VmOp(VmService.delete, flags=("force",)),
}


def _vm_op(op: str) -> Callable[[Request], Awaitable[Response]]:
    if op not in VM_OPS:
        raise ValueError(f"unknown VM operation {op!r} (known: {', '.join(VM_OPS)})")
    operation = VM_OPS[op]

    @handler
    async def endpoint(d: Daemon, request: Request) -> Response:
        name = request.path_params["name"]
        flags = query_flags(request, *operation.flags)
        await refuse_body(request, *operation.flags)
        await d.run_blocking(lambda: d.vms.get(name))  # 404 before streaming
        return d.stream(lambda p: operation.run(d.vms, name, p, **flags))

    return endpoint


@handler
async def vm_ssh(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    target = await d.run_blocking(lambda: d.vms.ssh_target(name))
    return answer(SshTargetView(**dataclasses.asdict(target)))


# -- sessions ----------------------------------------------------------------


def session_view(d: Daemon, vm_name: str, record: SessionRecord) -> SessionView:
    return SessionView(
        name=record.name,
        vm=vm_name,
        argv=record.argv,
        cwd=record.cwd,
        stdin_mode=record.stdin_mode,
        state=record.state,
        status=record.status,
        created_at=record.created_at,
        stdout_bytes=record.offsets.get("stdout", 0),
        stderr_bytes=record.offsets.get("stderr", 0),
        lost_bytes=record.lost_bytes,
    )


async def _running_vm_id(d: Daemon, name: str) -> str:
    vm = await d.run_blocking(lambda: d.vms.get(name))
    return vm.id


@handler
async def session_start(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    query_flags(request)
    req = SessionStart.from_json(await read_body(request))
    vm_id = await _running_vm_id(d, name)
    record = await d.run_blocking(lambda: d.sessions.start(vm_id, req.name, req.argv, req.cwd, req.stdin_mode))
    return answer(session_view(d, name, record))


@handler
async def session_list(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    vm_id = await _running_vm_id(d, name)
    records = await d.run_blocking(lambda: d.sessions.records(vm_id))
    return answer([session_view(d, name, record) for record in records])


@handler
async def session_stop(d: Daemon, request: Request) -> Response:
    name, session = request.path_params["name"], request.path_params["session"]
    query_flags(request)
    await refuse_body(request)
    vm_id = await _running_vm_id(d, name)
    record = await d.run_blocking(lambda: d.sessions.stop(vm_id, session))
    return answer(session_view(d, name, record))


@handler
async def session_attach(d: Daemon, request: Request) -> Response:
    name, session = request.path_params["name"], request.path_params["session"]
    query_flags(request)
    await refuse_body(request)
    vm_id = await _running_vm_id(d, name)
    path = await d.run_blocking(lambda: d.sessions.attach_socket(vm_id, session))
    return answer(AttachTarget(socket=str(path)))


@handler
async def session_logs(d: Daemon, request: Request) -> Response:
    name, session = request.path_params["name"], request.path_params["session"]
    follow = query_flags(request, "follow")["follow"]
    stream = request.path_params["stream"]
    vm_id = await _running_vm_id(d, name)
    path = await d.run_blocking(lambda: d.sessions.log_path(vm_id, session, stream))
    await d.run_blocking(lambda: d.sessions.get(vm_id, session))  # 404 before streaming

    def running() -> bool:
        return d.sessions.get(vm_id, session).state == "running"

    return StreamingResponse(_follow_log(path, follow, running), media_type="application/octet-stream")


async def _follow_log(path: Path, follow: bool, still_writing: Callable[[], bool]) -> AsyncIterator[bytes]:
    """A capped, rotated log (older part first); with ``follow``, new output until the writer is done."""
    older = rotated(path)
    if older.exists():
        with open(older, "rb") as old_part:
            while chunk := await anyio.to_thread.run_sync(old_part.read, 65536):
                yield chunk
    while not path.exists():
        if not follow or not still_writing():
            return
        await asyncio.sleep(LOG_FOLLOW_INTERVAL)
    fh = open(path, "rb")  # noqa: SIM115 -- closed in finally across awaits
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(fh.read, 65536)
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if not await anyio.to_thread.run_sync(still_writing):
                # One last read: the pump writes the final output before recording the exit.
                while chunk := await anyio.to_thread.run_sync(fh.read, 65536):
                    yield chunk
                return
            await asyncio.sleep(LOG_FOLLOW_INTERVAL)
            if _replaced(str(path), fh.fileno()):
                fh.close()
                fh = open(path, "rb")  # noqa: SIM115
    finally:
        fh.close()


@handler
async def vm_logs(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    follow = query_flags(request, "follow")["follow"]
    vm = await d.run_blocking(lambda: d.vms.get(name))
    path = vm.serial_log

    async def body() -> AsyncIterator[bytes]:
        # The console log is capped and rotated (banger_hookspecs.logpump): the older part comes first.
        older = rotated(Path(path))
        if older.exists():
            with open(older, "rb") as old_part:
                while chunk := await anyio.to_thread.run_sync(old_part.read, 65536):
                    yield chunk
        try:
            fh = open(path, "rb")  # noqa: SIM115 -- closed in finally across awaits
        except FileNotFoundError:
            return
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(fh.read, 65536)
                if chunk:
                    yield chunk
                    continue
                if not follow:
                    return
                await asyncio.sleep(LOG_FOLLOW_INTERVAL)
                if _replaced(path, fh.fileno()):  # rotated: go on with the new file
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115
        finally:
            fh.close()

    return StreamingResponse(body(), media_type="application/octet-stream")


def _replaced(path: str, fd: int) -> bool:
    """True when ``path`` now names another file than the open ``fd`` (a rotation happened)."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


# -- images and kernels -----------------------------------------------------


@handler
async def image_list(d: Daemon, request: Request) -> Response:
    if query_flags(request, "available")["available"]:
        return answer(await d.run_blocking(d.store.available))
    return answer(await d.run_blocking(d.store.list_images))


@handler
async def image_get(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    image = await d.run_blocking(lambda: d.store.get_image(name))
    return answer(image_view(image, d.store.rootfs(name)))


@handler
async def image_pull(d: Daemon, request: Request) -> Response:
    body = ImagePull.from_json(await read_body(request))
    ref = _required_ref(body.ref, "image pull needs a reference, e.g. debian-bookworm")
    return d.stream(
        lambda p: d.store.pull_image(
            ref, p, source=body.source, force=body.force, with_sshd=body.with_sshd, kernel_ref=body.kernel_ref
        )
    )


@handler
async def image_register(d: Daemon, request: Request) -> Response:
    body = ImageRegister.from_json(await read_body(request))
    if not body.name or not body.rootfs:
        raise BangerError("image register needs a name and a rootfs, e.g. --name base --rootfs /abs/rootfs.ext4")
    return d.stream(lambda p: d.store.register_image(body.name, body.rootfs, p, kernel_ref=body.kernel_ref))


@handler
async def image_delete(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    await d.run_blocking(lambda: d.store.delete_image(name))
    await d.run_blocking(lambda: d.vms.templates.forget_image(name))  # a re-pull must never meet them
    return answer(Deleted(name=name))


@handler
async def image_warm(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    await d.run_blocking(lambda: d.store.get_image(name))  # 404 before streaming
    return d.stream(lambda p: d.vms.warm_image(name, p))


@handler
async def image_unwarm(d: Daemon, request: Request) -> Response:
    name = request.path_params["name"]
    removed = await d.run_blocking(lambda: d.vms.templates.remove(name))
    return answer(WarmTemplatesRemoved(image=name, removed=removed))


@handler
async def kernel_list(d: Daemon, request: Request) -> Response:
    return answer(await d.run_blocking(d.store.list_kernels))


@handler
async def kernel_pull(d: Daemon, request: Request) -> Response:
    body = KernelPull.from_json(await read_body(request))
    ref = _required_ref(body.ref, "kernel pull needs a reference, e.g. generic-6.1")
    return d.stream(lambda p: d.store.pull_kernel(ref, p, provider=body.provider, force=body.force))


@handler
async def kernel_delete(d: Daemon, request: Request) -> Response:
    ref = request.path_params["ref"]
    await d.run_blocking(lambda: d.store.delete_kernel(ref))
    return answer(KernelDeleted(ref=ref))


def _push(kind: Literal["image", "kernel"], key: str) -> Callable[[Request], Awaitable[Response]]:
    """``POST /v1/images/{name}/push`` / ``POST /v1/kernels/{ref}/push``: publish it at the body's ``target``."""

    @handler
    async def endpoint(d: Daemon, request: Request) -> Response:
        name = request.path_params[key]
        body = ArtifactPush.from_json(await read_body(request))
        target = _required_ref(body.target, f"{kind} push needs a target, e.g. ghcr.io/team/{name}:v1")
        # Not pulled: one line before streaming anything.
        await d.run_blocking(lambda: d.store.get_image(name) if kind == "image" else d.store.get_kernel(name))
        return d.stream(lambda p: d.publisher.push(kind, name, target, p))

    return endpoint


async def no_route(request: Request, exc: Exception) -> Response:
    """Unmatched paths answer like every other error, so the SDK raises NotFound with this line."""
    message = f"no API route {request.method} {request.url.path}: docs/sdk.md lists the API"
    return error_response(NotFound(message))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    # Starlette's Allow header names only the first matching route's methods; /v1/vms has two routes.
    path = request.url.path
    allowed = sorted(
        {m for r in request.app.routes if isinstance(r, Route) and r.path_regex.match(path) for m in r.methods or ()}
        - {"HEAD"}
    )
    message = f"{request.method} is not allowed on {path} (allowed: {', '.join(allowed)})"
    body = ErrorBody(error=ErrorInfo(type="InvalidRequest", message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=405)


def create_app(daemon: Daemon) -> Starlette:
    routes = [
        Route("/v1/daemon", daemon_status, methods=["GET"]),
        Route("/v1/daemon/shutdown", daemon_shutdown, methods=["POST"]),
        Route("/v1/vms", vm_list, methods=["GET"]),
        Route("/v1/vms", vm_create, methods=["POST"]),
        Route("/v1/vms/plan", vm_plan, methods=["POST"]),
        Route("/v1/vms/{name}", vm_get, methods=["GET"]),
        Route("/v1/vms/{name}", _vm_op("delete"), methods=["DELETE"]),
        Route("/v1/vms/{name}/start", _vm_op("start"), methods=["POST"]),
        Route("/v1/vms/{name}/stop", _vm_op("stop"), methods=["POST"]),
        Route("/v1/vms/{name}/restart", _vm_op("restart"), methods=["POST"]),
        Route("/v1/vms/{name}/ssh", vm_ssh, methods=["GET"]),
        Route("/v1/vms/{name}/logs", vm_logs, methods=["GET"]),
        Route("/v1/vms/{name}/sessions", session_list, methods=["GET"]),
        Route("/v1/vms/{name}/sessions", session_start, methods=["POST"]),
        Route("/v1/vms/{name}/sessions/{session}/logs/{stream}", session_logs, methods=["GET"]),
        Route("/v1/vms/{name}/sessions/{session}/stop", session_stop, methods=["POST"]),
        Route("/v1/vms/{name}/sessions/{session}/attach", session_attach, methods=["POST"]),
        Route("/v1/images", image_list, methods=["GET"]),
        Route("/v1/images/pull", image_pull, methods=["POST"]),
        Route("/v1/images/register", image_register, methods=["POST"]),
        Route("/v1/images/{name}", image_get, methods=["GET"]),
        Route("/v1/images/{name}", image_delete, methods=["DELETE"]),
        Route("/v1/images/{name}/push", _push("image", "name"), methods=["POST"]),
        Route("/v1/images/{name}/warm", image_warm, methods=["POST"]),
        Route("/v1/images/{name}/warm", image_unwarm, methods=["DELETE"]),
        Route("/v1/kernels", kernel_list, methods=["GET"]),
        Route("/v1/kernels/pull", kernel_pull, methods=["POST"]),
        Route("/v1/kernels/{ref}", kernel_delete, methods=["DELETE"]),
        Route("/v1/kernels/{ref}/push", _push("kernel", "ref"), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: no_route, 405: method_not_allowed})
    app.state.daemon = daemon
    return app
