"""``bangerd``: the daemon process.

Start-up order: umask 077 → private state and runtime dirs → the
single-instance locks, held until the process is gone (one daemon per state
dir, see :mod:`banger_core.common.instance`) → state database (a broken one stops us
here, untouched) → reconcile VMs → host network setup → DNS server → API
socket (0600). SIGTERM/SIGINT stop the API and leave running VMs running: they
live in their own sessions and are adopted by the next daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import signal
import socket
import sys
from pathlib import Path

from banger_core.common.buildinfo import build_info
from banger_core.common.daemonenv import daemon_environment
from banger_core.common.errors import BangerError
from banger_core.common.instance import AlreadyHeld, hold_for_life
from banger_core.common.paths import ensure_private_dir
from banger_core.daemon.layout import MAX_SOCKET_PATH, Layout

log = logging.getLogger("banger.daemon")
LOG_MAX_BYTES = 5 << 20
LOG_BACKUPS = 3
LIVENESS_INTERVAL = 3.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def setup_logging(log_file: Path, level: str, foreground: bool) -> None:
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    if foreground:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def claim(layout: Layout) -> None:
    """Hold the state-dir and runtime-dir locks for the rest of our life, or refuse naming who has them."""
    try:
        hold_for_life(layout.state_lock, layout.socket, layout.state_dir)
    except AlreadyHeld as exc:
        where = f" (listening on {exc.holder.socket})" if exc.holder.socket else ""
        raise BangerError(
            f"another {exc.holder.who} already runs on state dir {layout.state_dir}{where}: "
            "`banger daemon stop` it first"
        ) from None
    try:
        hold_for_life(layout.runtime_lock, layout.socket, layout.state_dir)
    except AlreadyHeld as exc:
        raise BangerError(
            f"another {exc.holder.who} (state dir {exc.holder.state_dir or 'unknown'}) already listens in "
            f"{layout.runtime_dir}: give each state dir its own runtime_dir in config.toml, or stop that daemon"
        ) from None


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` with mode 0600 (we hold the runtime-dir lock)."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise BangerError(f"socket path {path} is too long for a Unix socket: set a shorter runtime_dir")
    path.unlink(missing_ok=True)  # stale from a crashed daemon; the runtime lock proves it is not live
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(env: dict[str, str], foreground: bool) -> int:
    import uvicorn

    from banger_core.daemon.app import Daemon, create_app
    from banger_core.daemon.runtime import Runtime
    from banger_core.daemon.web import start_web_ui
    from banger_core.host.hostops import describe

    rt = Runtime(env)
    ensure_private_dir(rt.layout.state_dir, "state_dir")
    setup_logging(rt.layout.log_file, rt.config["log_level"], foreground)
    ensure_private_dir(rt.layout.runtime_dir, "runtime_dir")
    claim(rt.layout)
    info = build_info()
    log.info("bangerd %s (commit %s) starting, pid %d", info.version, info.short_commit, os.getpid())
    log.info("privileged host operations: %s", describe(rt.ctx.host_ops))
    rt.open()
    daemon = Daemon(rt)
    summary = await daemon.run_blocking(daemon.vms.reconcile)
    log.info("reconcile: adopted %s, marked stopped %s", summary["adopted"] or "none", summary["demoted"] or "none")
    await daemon.start_services()
    sock = bind_socket(rt.layout.socket)
    config = uvicorn.Config(
        create_app(daemon), log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    def request_exit() -> None:
        server.should_exit = True

    daemon.shutdown_requested = request_exit
    # uvicorn re-raises the signal that stopped it when serve() returns, under the handlers it found
    # installed: with Python's defaults SIGTERM killed us before the shutdown below (no DNS stop, socket
    # left behind, database not closed, a warm template's VMM orphaned). These only note it; the
    # defaults come back, and the signal is raised again, once the shutdown is done.
    received: list[int] = []
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, lambda number, _frame: received.append(number))
    web_ui = await start_web_ui(daemon)  # None when web_listen_addr is unset or unusable (logged)
    watcher = asyncio.get_running_loop().create_task(daemon.watch_liveness(LIVENESS_INTERVAL))
    log.info("listening on %s", rt.layout.socket)
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        if web_ui is not None:
            await web_ui.stop()
        await daemon.stop_services()
        rt.layout.socket.unlink(missing_ok=True)
        rt.close()
        log.info("bangerd stopped; running VMs keep running")
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_DFL)  # a boot thread still running must not outlive a SIGTERM
        if received:
            signal.raise_signal(received[0])
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bangerd", description="banger's daemon (the CLI starts it on demand).")
    parser.add_argument("--version", action="store_true", help="print one version line")
    parser.add_argument(
        "--background", action="store_true", help="log to the log file only (used when the CLI starts the daemon)"
    )
    args = parser.parse_args(argv)
    if args.version:
        print(build_info().line("bangerd"))
        return
    os.umask(0o077)
    # Also for the children (QEMU, ssh, mkfs): whoever started us passes on only the allowlist.
    env = daemon_environment(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        code = asyncio.run(serve(env, foreground=not args.background))
    except BangerError as exc:
        print(f"bangerd: error: {exc}", file=sys.stderr)
        log.error("%s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
