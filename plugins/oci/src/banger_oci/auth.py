"""Registry credentials (a Docker-style ``config.json``) and the ``WWW-Authenticate`` challenge.

Credentials come from one file in Docker's format: ``{"auths": {"HOST[:PORT]":
{"auth": base64("user:password")}}}`` (or ``username``/``password`` fields).
The file is ``oci_auth_file`` when set, else ``$DOCKER_CONFIG/config.json``,
else ``~/.docker/config.json``. Passwords live only in that file, never in
banger's ``config.toml`` (which ``banger config show`` prints), and are kept out
of every ``repr``, log line and error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banger_oci.reference import OciError

#: Docker Hub's historical key in config.json.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")
_CHALLENGE_PARAM_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


class AuthError(OciError):
    """The registry refused us, or the credentials file cannot be used."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password for one registry; ``origin`` says where they were found (for messages)."""

    username: str
    password: str = field(repr=False)
    origin: str = ""


def default_auth_file() -> Path:
    """``$DOCKER_CONFIG/config.json`` if set, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _registry_key(key: str) -> str:
    """``https://host:port/v1/`` -> ``host:port``: config.json keys are written in several forms."""
    key = re.sub(r"^[a-z]+://", "", key.strip()).split("/", 1)[0]
    return "docker.io" if key in _DOCKER_HUB_KEYS else key


def find_credentials(registry: str, auth_file: Path) -> Credentials | None:
    """The credentials ``auth_file`` holds for ``registry`` (``host[:port]``), or None.

    A missing file means anonymous access. An unreadable or malformed file, or an
    entry that cannot be decoded, is an :class:`AuthError` naming the file and
    the registry (never the secret).
    """
    try:
        text = auth_file.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuthError(f"cannot read registry credentials {auth_file}: {exc.strerror}") from None
    try:
        auths = json.loads(text).get("auths", {})
    except (ValueError, AttributeError):
        raise AuthError(f"{auth_file} is not a Docker config.json (JSON with an 'auths' object)") from None
    if not isinstance(auths, dict):
        raise AuthError(f"{auth_file}: 'auths' must be an object of registry -> credentials")
    for key, entry in auths.items():
        if _registry_key(str(key)) != registry or not isinstance(entry, dict):
            continue
        origin = f"{auth_file} entry {key!r}"
        username, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                username, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthError(f"{origin}: 'auth' is not base64 of user:password") from None
        if isinstance(username, str) and isinstance(password, str) and username:
            return Credentials(username, password, origin)
    return None


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: ``Bearer realm=...,service=...,scope=...`` or ``Basic realm=...``."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse one challenge; unknown or empty headers give an empty scheme."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM_RE.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme.lower(), params)


def configured_credentials(config: Mapping[str, Any], registry: str) -> Credentials | None:
    """The credentials for ``registry`` from config ``oci_auth_file`` (else :func:`default_auth_file`)."""
    auth_file = config.get("oci_auth_file")
    return find_credentials(registry, Path(auth_file) if auth_file is not None else default_auth_file())
