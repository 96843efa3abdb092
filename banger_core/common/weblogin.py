"""Login links for the web UI: short-lived single-use codes derived from the daemon's token.

The daemon writes a random token to ``<runtime_dir>/web-token`` (0600, in the
0700 runtime dir) whenever the UI runs, so whoever can read that file is the
daemon's owner. ``banger web`` reads it and signs a code with it; the daemon
checks the signature, the expiry and that the code was not used before. No
network round trip and no new API: possession of the file is the authorization.

The code travels in the URL's fragment (``/login#code=...``), which browsers
never send to the server; the login page's script POSTs it. Stdlib only: the
CLI imports this without the web server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

TOKEN_FILE = "web-token"  # noqa: S105 -- the file name, not a secret
#: How long a login link works, in seconds: long enough to click it, short enough to be useless in a history file.
CODE_LIFETIME = 60


class CodeRefused(Exception):
    """A login code that does not log in; ``str`` says why in one line."""


def token_path(runtime_dir: Path) -> Path:
    return runtime_dir / TOKEN_FILE


def _mac(token: str, body: str) -> str:
    return hmac.new(token.encode(), f"banger-web-login:{body}".encode(), hashlib.sha256).hexdigest()


def make_login_code(token: str, now: float | None = None) -> str:
    """``EXPIRES.NONCE.MAC``: the MAC (keyed with the token) makes it unforgeable, the nonce single-use."""
    expires = int(time.time() if now is None else now) + CODE_LIFETIME
    body = f"{expires}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_mac(token, body)}"


def check_login_code(token: str, code: str, now: float) -> tuple[str, int]:
    """The code's ``(nonce, expiry)`` when it is genuine and current; the caller refuses a nonce seen before."""
    expires_text, _, rest = code.partition(".")
    nonce, _, mac = rest.partition(".")
    if not (expires_text.isdigit() and nonce and mac):
        raise CodeRefused("this is not a login link: run `banger web` for one")
    if not hmac.compare_digest(mac, _mac(token, f"{expires_text}.{nonce}")):
        raise CodeRefused("this login link is not from this daemon (it restarted?): run `banger web` for a new one")
    expires = int(expires_text)
    if now > expires:
        raise CodeRefused("this login link expired: run `banger web` for a new one")
    return nonce, expires
