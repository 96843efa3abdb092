"""web_listen_addr / web_allow_remote: what is accepted, and the one-line refusals naming the key."""

from __future__ import annotations

import re

import pytest

from banger_core.common.config import ConfigError
from banger_core.common.webaddr import WebListen, web_listen


def test_unset_means_off() -> None:
    assert web_listen({}) is None
    assert web_listen({"web_listen_addr": "", "web_allow_remote": True}) is None


@pytest.mark.parametrize(
    ("text", "host", "port", "url"),
    [
        ("127.0.0.1:7777", "127.0.0.1", 7777, "http://127.0.0.1:7777/"),
        ("localhost:8080", "127.0.0.1", 8080, "http://127.0.0.1:8080/"),
        ("127.9.9.9:1", "127.9.9.9", 1, "http://127.9.9.9:1/"),
        ("[::1]:7777", "::1", 7777, "http://[::1]:7777/"),
    ],
)
def test_loopback_addresses_are_accepted(text: str, host: str, port: int, url: str) -> None:
    listen = web_listen({"web_listen_addr": text, "web_allow_remote": False})
    assert listen == WebListen(host, port)
    assert listen.loopback and listen.url == url


@pytest.mark.parametrize("text", ["0.0.0.0:7777", "192.0.2.7:7777", "[::]:7777"])
def test_non_loopback_needs_allow_remote(text: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^web_listen_addr '{re.escape(text)}' is not a loopback address: use 127\.0\.0\.1"
    ):
        web_listen({"web_listen_addr": text, "web_allow_remote": False})
    listen = web_listen({"web_listen_addr": text, "web_allow_remote": True})
    assert listen is not None and not listen.loopback


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("127.0.0.1", "expected IP:PORT"),
        ("7777", "expected IP:PORT"),
        ("web.example:7777", "expected IP:PORT"),
        ("::1:7777", "expected IP:PORT"),
        ("127.0.0.1:http", "expected IP:PORT"),
        ("127.0.0.1:-1", "expected IP:PORT"),
        ("127.0.0.1:0", "the port must be 1-65535"),
        ("127.0.0.1:70000", "the port must be 1-65535"),
    ],
)
def test_unparsable_addresses_name_the_key(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"^web_listen_addr '{re.escape(text)}': {why}"):
        web_listen({"web_listen_addr": text})
