"""The opt-in web UI: server-rendered pages over the daemon's own services.

Served by bangerd on ``web_listen_addr`` (TCP) next to the API's Unix socket,
only when that key is set. Every page reads through the same service calls
as the JSON API (``VmService``, ``Store``, the plugin manager, ``run_checks``);
the serial log is the API's own streaming handler.

Threat model: a TCP port is reachable by any local user and by any web page
the user visits. So: no state change on GET; every POST must come from our
own origin (``Origin``, else ``Sec-Fetch-Site``) and carry a CSRF token; the
``Host`` header must name the loopback listen address (DNS rebinding); and
every request needs a login, loopback included: a session cookie from
``/login`` (with a ``banger web`` link or the daemon's token, compared in
constant time) or the token as a bearer header. The token is in a 0600 file
in the 0700 runtime dir, so only the daemon's owner can log in, as with the
API socket. Everything shown is HTML-escaped: VM names and serial-log lines
are guest-influenced, and the log is set as text by JS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from banger_core.api.models import VmView
from banger_core.api.state import ACTIVE, VmState
from banger_core.common.doctor import run_checks
from banger_core.common.errors import BangerError, ConfigError
from banger_core.common.progress import NullProgress
from banger_core.common.webaddr import WebListen, web_listen
from banger_core.common.weblogin import CodeRefused, check_login_code, token_path
from banger_core.daemon.app import Daemon, vm_logs

log = logging.getLogger("banger.web")
STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it Chromium sends "Origin: null" on our own form POSTs.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
VM_ACTIONS = ("start", "stop", "delete")
MAX_FORM_BYTES = 16 << 10


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


class Refused(Exception):
    """A request the UI will not serve; ``str`` is the one line shown to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class WebGuard:
    """The per-daemon secrets and the checks every request goes through."""

    listen: WebListen
    token: str
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: set[str] = field(default_factory=set)
    #: nonce -> expiry of the login codes already used (each works once), pruned as they expire.
    used_codes: dict[str, int] = field(default_factory=dict)

    @property
    def allowed_hosts(self) -> set[str] | None:
        """Host headers we answer to; ``None`` (any) only on a non-loopback listen, where the login guards."""
        if not self.listen.loopback:
            return None
        return {self.listen.netloc, f"localhost:{self.listen.port}"}

    def check_host(self, request: Request) -> None:
        allowed = self.allowed_hosts
        if allowed is not None and request.headers.get("host", "") not in allowed:
            raise Refused(421, f"this UI answers to {self.listen.url} only (Host header mismatch)")

    @property
    def cookie_name(self) -> str:
        """Per port: browsers send a host's cookies to all its ports, and two daemons may share a host."""
        return f"banger_session_{self.listen.port}"

    def session(self, request: Request) -> str | None:
        """The caller's session id, ``""`` for a bearer token (no cookie), ``None`` when not logged in."""
        cookie = request.cookies.get(self.cookie_name, "")
        if cookie and any(hmac.compare_digest(cookie, known) for known in self.sessions):
            return cookie
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(bearer.strip()):
            return ""
        return None

    def token_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def use_login_code(self, code: str) -> None:
        """Accept a ``banger web`` link's code once; ``CodeRefused`` says why not."""
        now = time.time()
        self.used_codes = {nonce: expires for nonce, expires in self.used_codes.items() if expires >= now}
        nonce, expires = check_login_code(self.token, code, now)
        if nonce in self.used_codes:
            raise CodeRefused("this login link was used already: run `banger web` for a new one")
        self.used_codes[nonce] = expires

    def new_session(self) -> Response:
        """Log the browser in: a fresh session id in an HttpOnly, SameSite=Strict cookie."""
        session = secrets.token_urlsafe(32)
        self.sessions.add(session)
        response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(self.cookie_name, session, httponly=True, samesite="strict", path="/")
        return response

    def csrf_token(self, session: str) -> str:
        return hmac.new(self.secret, f"csrf:{session}".encode(), hashlib.sha256).hexdigest()

    def check_same_origin(self, request: Request) -> None:
        """POSTs only from pages we served: Origin (or, without it, Sec-Fetch-Site) must be ours."""
        origin = request.headers.get("origin")
        if origin is not None:
            if urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
                raise Refused(403, f"cross-origin request refused (Origin {origin})")
            return
        if request.headers.get("sec-fetch-site") != "same-origin":
            raise Refused(403, "request refused: no Origin header (send it, or use the page's own forms)")

    async def check_csrf(self, request: Request, session: str) -> dict[str, str]:
        values = await read_form(request)
        if not hmac.compare_digest(values.get("csrf", ""), self.csrf_token(session)):
            raise Refused(403, "request refused: missing or stale form token (reload the page and retry)")
        return values


async def read_form(request: Request) -> dict[str, str]:
    """Our forms are small and urlencoded: parsed here (starlette's parser needs python-multipart)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, "form too large")
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))


# -- HTML --------------------------------------------------------------------

NAV = (("/", "VMs"), ("/images", "Images & kernels"), ("/plugins", "Plugins"), ("/doctor", "Doctor"))


def page(title: str, body: str, *, csrf: str | None = None, logged_in: bool = False, status: int = 200) -> HTMLResponse:
    nav = "".join(f'<a href="{esc(href)}">{esc(label)}</a>' for href, label in NAV)
    logout = ""
    if logged_in and csrf is not None:
        logout = (
            f'<form method="post" action="/logout" class="logout">{_csrf_field(csrf)}<button>Log out</button></form>'
        )
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)} · banger</title><link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><header><a class="brand" href="/">banger</a><nav>{nav}</nav>{logout}</header>'
        f"<main><h1>{esc(title)}</h1>{body}</main>"
        '<script src="/static/app.js"></script></body></html>'
    )
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def _csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], empty: str) -> str:
    """``rows`` cells are HTML already (escape values before passing them)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def badge(status: str) -> str:
    return f'<span class="badge badge-{esc(status)}">{esc(status)}</span>'


def vm_path(name: str, suffix: str = "") -> str:
    return "/vms/" + urllib.parse.quote(name, safe="") + suffix


def when(moment: datetime | None) -> str:
    """A stored timestamp (UTC) as ``2026-12-01 02:49:14 UTC``."""
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def uptime(vm: VmView, now: float) -> str:
    if vm.state is not VmState.RUNNING or vm.started_at is None:
        return "-"
    seconds = max(0, int(now - vm.started_at.replace(tzinfo=UTC).timestamp()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def actions_for(vm: VmView) -> list[str]:
    """Buttons that make sense in the VM's state; the service still decides (and says why not)."""
    if vm.state in (VmState.RUNNING, VmState.STARTING):
        return ["stop", "delete"]
    return ["start", "delete"]


def action_links(vm: VmView) -> str:
    return " ".join(
        f'<a class="button button-{esc(op)}" href="{esc(vm_path(vm.name, "/" + op))}">{esc(op.capitalize())}</a>'
        for op in actions_for(vm)
    )


# -- routes ------------------------------------------------------------------

Handler = Callable[[Daemon, Request, str], Awaitable[Response]]


def web_route(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Host check, login, same-origin + CSRF for POSTs, errors as pages, security headers."""

    async def endpoint(request: Request) -> Response:
        daemon: Daemon = request.app.state.daemon
        guard: WebGuard = request.app.state.guard
        try:
            guard.check_host(request)
            session = guard.session(request)
            if session is None:
                if request.method == "GET":
                    return RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
                raise Refused(401, "log in first")
            if request.method == "POST":
                guard.check_same_origin(request)
                request.state.form = await guard.check_csrf(request, session)
            response = await fn(daemon, request, session)
        except Refused as exc:
            return page("Refused", f'<p class="error">{esc(exc)}</p>', status=exc.status)
        except BangerError as exc:
            csrf = guard.csrf_token(session or "")
            body = f'<p class="error">{esc(exc)}</p><p><a href="/">Back to the VM list</a></p>'
            return page("Error", body, csrf=csrf, logged_in=bool(session), status=exc.http_status)
        except Exception as exc:
            log.exception("web %s %s failed", request.method, request.url.path)
            return page(
                "Error", f'<p class="error">internal error: {esc(type(exc).__name__)}: {esc(exc)}</p>', status=500
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    return endpoint


def render(request: Request, session: str, title: str, body: str) -> HTMLResponse:
    guard: WebGuard = request.app.state.guard
    return page(title, body, csrf=guard.csrf_token(session), logged_in=bool(session))


@web_route
async def vm_list_page(d: Daemon, request: Request, session: str) -> Response:
    vms = await d.run_blocking(d.vms.all)
    now = time.time()
    rows = (
        [
            f'<a href="{esc(vm_path(vm.name))}">{esc(vm.name)}</a>',
            badge(vm.state),
            esc(vm.address or "-"),
            esc(vm.image),
            esc(vm.backend),
            esc(uptime(vm, now)),
            action_links(vm),
        ]
        for vm in vms
    )
    body = table(
        ["Name", "State", "Address", "Image", "Backend", "Uptime", ""],
        rows,
        "No VMs yet: create one with banger vm create or banger vm run.",
    )
    return render(request, session, "Virtual machines", body)


@web_route
async def vm_page(d: Daemon, request: Request, session: str) -> Response:
    name = request.path_params["name"]
    vm = await d.run_blocking(lambda: d.vms.get(name))
    now = time.time()
    facts = [
        ("State", badge(vm.state)),
        ("Address", esc(vm.address or "-")),
        ("Image", esc(vm.image)),
        ("Kernel", esc(vm.kernel)),
        ("Backend", esc(vm.backend)),
        ("Network", esc(vm.network)),
        ("vCPUs / memory", f"{esc(vm.vcpus)} / {esc(vm.memory_mib)} MiB"),
        ("Created", esc(when(vm.created_at))),
        ("Uptime", esc(uptime(vm, now))),
    ]
    if vm.last_error:
        facts.append(("Last error", f'<span class="error">{esc(vm.last_error)}</span>'))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    body = (
        f'<dl class="facts">{dl}</dl><p class="actions">{action_links(vm)}</p>'
        f'<h2>Serial log <span id="log-status" class="muted">loading…</span></h2>'
        f'<pre id="serial-log" class="log" data-log-src="{esc(vm_path(name, "/logs?follow=1"))}"></pre>'
    )
    return render(request, session, f"VM {name}", body)


@web_route
async def vm_confirm_page(d: Daemon, request: Request, session: str) -> Response:
    name, op = request.path_params["name"], request.path_params["op"]
    if op not in VM_ACTIONS:
        raise Refused(404, f"unknown action {op!r}")
    vm = await d.run_blocking(lambda: d.vms.get(name))
    guard: WebGuard = request.app.state.guard
    warning = {
        "start": "It boots with its existing disks.",
        "stop": "The guest is asked to power off; unsaved work in it is lost.",
        "delete": "Its disks are deleted for good; this cannot be undone.",
    }[op]
    force = (
        '<label><input type="checkbox" name="force" value="1"> force (kill the VMM if it does not stop in time)</label>'
        if op in ("stop", "delete") and vm.state in ACTIVE
        else ""
    )
    body = (
        f'<form method="post" action="{esc(vm_path(name, "/" + op))}" class="confirm">'
        f"<p>{esc(op.capitalize())} VM <strong>{esc(name)}</strong> (now {badge(vm.state)})? {esc(warning)}</p>"
        f"{force}{_csrf_field(guard.csrf_token(session))}"
        f'<p><button type="submit" class="button-{esc(op)}" id="confirm">{esc(op.capitalize())}</button> '
        f'<a href="{esc(vm_path(name))}">Cancel</a></p></form>'
    )
    return render(request, session, f"{op.capitalize()} {name}?", body)


@web_route
async def vm_action(d: Daemon, request: Request, session: str) -> Response:
    name, op = request.path_params["name"], request.path_params["op"]
    force = request.state.form.get("force") == "1"
    if op == "start":
        await d.run_blocking(lambda: d.vms.start(name, NullProgress()))
    elif op == "stop":
        await d.run_blocking(lambda: d.vms.stop(name, NullProgress(), force=force))
    elif op == "delete":
        await d.run_blocking(lambda: d.vms.delete(name, NullProgress(), force=force))
        return RedirectResponse("/", status_code=303)
    else:
        raise Refused(404, f"unknown action {op!r}")
    return RedirectResponse(vm_path(name), status_code=303)


@web_route
async def vm_log_stream(d: Daemon, request: Request, session: str) -> Response:
    return await vm_logs(request)


def _size(size: int | None) -> str:
    return "-" if size is None else f"{size / (1 << 20):.1f} MiB"


@web_route
async def images_page(d: Daemon, request: Request, session: str) -> Response:
    images = await d.run_blocking(d.store.list_images)
    kernels = await d.run_blocking(d.store.list_kernels)
    image_rows = (
        [esc(i.name), esc(i.version), esc(i.source), esc(i.kernel_ref), esc(_size(i.size)), esc(when(i.created_at))]
        for i in images
    )  # fmt: skip
    kernel_rows = (
        [esc(k.ref), esc(k.version), esc(k.provider), esc(k.boot_protocol), esc(when(k.created_at))] for k in kernels
    )
    body = (
        "<h2>Images</h2>"
        + table(
            ["Name", "Version", "Source", "Kernel", "Size", "Pulled"],
            image_rows,
            "No images yet: banger image pull NAME.",
        )
        + "<h2>Kernels</h2>"
        + table(
            ["Ref", "Version", "Provider", "Boot", "Pulled"], kernel_rows, "No kernels yet: banger kernel pull REF."
        )
    )
    return render(request, session, "Images & kernels", body)


@web_route
async def plugins_page(d: Daemon, request: Request, session: str) -> Response:
    records = d.rt.pm.plugin_records()
    rows = (
        [esc(r.name), esc(r.version or "-"), esc(r.source), badge(r.status), esc(", ".join(r.hooks) or "-")]
        for r in records
    )
    return render(request, session, "Plugins", table(["Name", "Version", "Source", "Status", "Hooks"], rows, "none"))


@web_route
async def doctor_page(d: Daemon, request: Request, session: str) -> Response:
    rows = await d.run_blocking(lambda: run_checks(d.rt.pm, d.rt.ctx))
    cells = (
        [
            badge(r["status"]),
            esc(r["name"]),
            esc(r["summary"]) + (f'<div class="hint">→ {esc(r["hint"])}</div>' if r["hint"] else ""),
        ]
        for r in rows
    )
    blocking = [r for r in rows if r["status"] == "fail" and r["blocks_vm_run"]]
    verdict = (
        f'<p class="error">{len(blocking)} failing check(s) block <code>banger vm run</code>.</p>'
        if blocking
        else '<p class="ok"><code>banger vm run</code> can work on this host.</p>'
    )
    return render(request, session, "Doctor", verdict + table(["Status", "Check", "Finding"], cells, "no checks"))


# -- login -------------------------------------------------------------------


async def login(request: Request) -> Response:
    guard: WebGuard = request.app.state.guard
    try:
        guard.check_host(request)
        message = ""
        if request.method == "POST":
            guard.check_same_origin(request)
            form = await read_form(request)
            if "code" in form:
                try:
                    guard.use_login_code(form["code"].strip())
                    return guard.new_session()
                except CodeRefused as exc:
                    message = f'<p class="error">{esc(exc)}</p>'
            elif guard.token_matches(form.get("token", "").strip()):
                return guard.new_session()
            else:
                message = '<p class="error">Wrong token.</p>'
    except Refused as exc:
        return page("Refused", f'<p class="error">{esc(exc)}</p>', status=exc.status)
    body = (
        f"{message}<p>Run <code>banger web</code> on the host running bangerd, as its user, for a login link "
        f"(<code>banger web --open</code> opens it). Or paste the daemon's token from "
        f"<code>{esc(request.app.state.token_file)}</code> (a new one at each daemon start):</p>"
        '<form method="post" action="/login" class="login"><input type="password" name="token" id="token" '
        'autocomplete="current-password" required autofocus> <button type="submit">Log in</button></form>'
        # app.js fills this from the link's #code=... fragment (which browsers never send) and submits it.
        '<form method="post" action="/login" id="link-login" hidden><input type="hidden" name="code"></form>'
    )
    return page("Log in", body, status=401 if message else 200)


@web_route
async def logout(d: Daemon, request: Request, session: str) -> Response:
    guard: WebGuard = request.app.state.guard
    guard.sessions.discard(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(guard.cookie_name, path="/")
    return response


def static_file(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    content = (STATIC / name).read_bytes()

    async def endpoint(request: Request) -> Response:
        return Response(content, media_type=media_type, headers=SECURITY_HEADERS)

    return endpoint


def create_web_app(daemon: Daemon, guard: WebGuard, token_file: Path) -> Starlette:
    routes = [
        Route("/", vm_list_page, methods=["GET"]),
        Route("/vms/{name}", vm_page, methods=["GET"]),
        Route("/vms/{name}/logs", vm_log_stream, methods=["GET"]),
        Route("/vms/{name}/{op}", vm_confirm_page, methods=["GET"]),
        Route("/vms/{name}/{op}", vm_action, methods=["POST"]),
        Route("/images", images_page, methods=["GET"]),
        Route("/plugins", plugins_page, methods=["GET"]),
        Route("/doctor", doctor_page, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/style.css", static_file("style.css", "text/css"), methods=["GET"]),
        Route("/static/app.js", static_file("app.js", "text/javascript"), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.daemon = daemon
    app.state.guard = guard
    app.state.token_file = token_file
    return app


# -- serving -----------------------------------------------------------------


class _WebServer(uvicorn.Server):
    """The API server owns SIGTERM/SIGINT; this one is stopped by the daemon's shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class WebUi:
    server: _WebServer
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await self.task


def _bind(listen: WebListen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _write_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # EXCL: never through a planted symlink
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o600)
        fh.write(token + "\n")
    return token


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("web UI stopped: %s", task.exception())


def _not_started(daemon: Daemon, why: str) -> None:
    daemon.web_ui = f"not started: {why}"
    log.error("web UI %s", daemon.web_ui)


async def start_web_ui(daemon: Daemon) -> WebUi | None:
    """Serve the UI when ``web_listen_addr`` is set; a bad setting is logged and the API runs without it."""
    try:
        listen = web_listen(daemon.rt.config)
    except ConfigError as exc:
        _not_started(daemon, str(exc))
        return None
    if listen is None:
        return None
    try:
        sock = _bind(listen)
    except OSError as exc:
        _not_started(daemon, f"web_listen_addr {listen.netloc!r}: {exc.strerror or exc}")
        return None
    token_file = token_path(daemon.rt.layout.runtime_dir)
    token_file.unlink(missing_ok=True)  # a token from an earlier daemon must not keep working
    guard = WebGuard(listen, _write_token(token_file))
    config = uvicorn.Config(
        create_web_app(daemon, guard, token_file),
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    server = _WebServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    task.add_done_callback(_log_crash)
    daemon.web_url = listen.url
    daemon.web_ui = f"{listen.url} (log in: banger web --open)"
    log.info("web UI on %s", daemon.web_ui)
    return WebUi(server, task)
