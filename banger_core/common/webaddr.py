"""Where the opt-in web UI listens: ``web_listen_addr`` and ``web_allow_remote`` checked in one place.

Light on purpose (stdlib only): ``banger doctor`` reports a bad address with
the same sentence the daemon logs, without importing the web server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from banger_core.common.config import ConfigError

EXAMPLE = "127.0.0.1:7777"


@dataclass(frozen=True)
class WebListen:
    """A validated listen address (a non-loopback one only when ``web_allow_remote`` is set)."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}/"


def _split(text: str) -> tuple[str, int]:
    bad = ConfigError(f'web_listen_addr {text!r}: expected IP:PORT, e.g. "{EXAMPLE}" or "[::1]:7777"')
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise bad
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise bad  # an IPv6 address needs brackets, or the port is ambiguous
    if host == "localhost":
        host = "127.0.0.1"
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise bad from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"web_listen_addr {text!r}: the port must be 1-65535")
    return host, port


def web_listen(config: Mapping[str, Any]) -> WebListen | None:
    """The web UI's address, ``None`` when it is off; ``ConfigError`` naming the key when unusable."""
    text = config.get("web_listen_addr")
    if not text:
        return None
    host, port = _split(text)
    if not ipaddress.ip_address(host).is_loopback and not config.get("web_allow_remote"):
        raise ConfigError(
            f"web_listen_addr {text!r} is not a loopback address: use {EXAMPLE} (reach it from elsewhere "
            "with ssh -L 7777:127.0.0.1:7777), or set web_allow_remote = true to serve it on other interfaces"
        )
    return WebListen(host, port)
