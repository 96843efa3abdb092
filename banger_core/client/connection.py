"""Reaching bangerd: find its socket, start it when none answers, send one query, decode the JSON answer.

The lower half of the SDK (:class:`banger_core.client.sdk.Client` extends
:class:`Connection` with httpx streams and typed models). It imports neither
pydantic nor httpx, so a command that only needs a query's JSON — ``banger vm
list`` — answers in a few interpreter start-ups (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import time

from banger_core.client import transport
from banger_core.common import locate
from banger_core.common.errors import DaemonUnavailable, OperationFailed, error_for

#: ``typing`` costs more to import than this module's work: mypy recognises the flag by its name.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from pydantic import JsonValue

START_TIMEOUT = 30.0
#: Seconds a query may take to connect, and to send or receive each part of its answer.
QUERY_TIMEOUT = 30.0
PING_TIMEOUT = 5.0


class Connection:
    """bangerd's socket, resolved from ``env``, and the JSON queries sent on it.

    Args:
        env: environment to resolve the socket from (default ``os.environ``).
        autostart: start the daemon when none answers (never when banger is installed as a
            service: then the CLI talks to the service's socket, see ``banger system install``).
        notify: called with one line when the daemon had to be started.
        socket: talk to the daemon on this socket instead of the configured one.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        autostart: bool = True,
        notify: Callable[[str], None] | None = None,
        socket: str | os.PathLike[str] | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        service = None if socket is not None else locate.installed_socket(self.env)
        #: A string, not a Path: pathlib's import would cost ``banger vm list`` 0.4 interpreter start-ups.
        self.socket = os.fspath(socket) if socket is not None else service or locate.user_socket_file(self.env)
        #: Talking to the installed bangerd.service: systemd starts it, this CLI never does.
        self.service = service is not None
        self.autostart = autostart and not self.service
        self.notify = notify
        self._checked = False

    def ping(self) -> bool:
        try:
            status, _ = transport.exchange(self.socket, "GET", "/v1/daemon", timeout=PING_TIMEOUT)
        except OSError:
            return False
        return status == 200

    def ensure_daemon(self) -> None:
        """Make sure a daemon answers, starting one (once, even under races) if allowed.

        Never a second daemon for one state dir: when the state lock is held by
        a daemon that does not answer here, this says so instead of starting one.
        """
        if self._checked or self.ping():
            self._checked = True
            return
        if self.service:
            raise DaemonUnavailable(
                f"the installed bangerd service does not answer on {self.socket}: `sudo banger system restart` "
                "starts it again (`systemctl status bangerd.service` and `journalctl -u bangerd.service` say why "
                "it stopped)"
            )
        if not self.autostart:
            raise DaemonUnavailable(f"bangerd is not running (no answer on {self.socket}): run any banger command")
        import fcntl
        from pathlib import Path

        from banger_core.common import paths

        state = paths.ensure_private_dir(paths.state_dir(self.env), "state_dir")
        # In the state dir, not the runtime dir: CLIs that disagree about the runtime dir still queue here.
        with open(state / "bangerd.start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # racing CLIs queue here; the first one starts it
            if not self._wait_for_holder(state):
                self._spawn(paths.ensure_private_dir(Path(self.socket).parent, "runtime_dir"))
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
            if holder.socket is not None and os.fspath(holder.socket) != self.socket:
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
        import subprocess
        import sys

        from banger_core.common.daemonenv import daemon_environment

        errors = runtime / "bangerd.stderr"
        with open(errors, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "banger_core.daemon", "--background"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=daemon_environment(self.env),  # the daemon inherits an allowlist, not the shell
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

    def query(
        self, method: str, path: str, *, body: JsonValue = None, params: Mapping[str, str] | None = None
    ) -> JsonValue:
        """Send one query (``body`` as JSON unless None) and return its JSON answer; errors raise their class."""
        if params:
            from urllib.parse import urlencode

            path = f"{path}?{urlencode(params)}"
        payload = None if body is None else json.dumps(body).encode()
        # Optimistic: talk first, start the daemon only if nobody answered (saves a round trip).
        try:
            try:
                status, content = transport.exchange(self.socket, method, path, payload, timeout=QUERY_TIMEOUT)
            except transport.Unreachable:
                self.ensure_daemon()
                status, content = transport.exchange(self.socket, method, path, payload, timeout=QUERY_TIMEOUT)
        except OSError as exc:
            raise DaemonUnavailable(f"lost the connection to bangerd: {exc}") from exc
        self._checked = True
        return decode(status, content)


def decode(status: int, content: bytes) -> JsonValue:
    """The JSON of an answer; a 4xx/5xx ``{"error": {"type", "message"}}`` raises the class it names."""
    try:
        data: JsonValue = json.loads(content)
    except ValueError:
        raise OperationFailed(f"bangerd answered {status} without JSON") from None
    if status >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str):
            raise error_for(str(error["type"]), str(error["message"]))
        raise OperationFailed(f"bangerd answered {status}: {str(data)[:200]}")
    return data
