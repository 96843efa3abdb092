"""``/etc/banger/install.toml``: what was installed, for whom, where; read by the CLI, doctor and bangerd-root."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from banger_core.common.errors import BangerError


@dataclass(frozen=True)
class NetworkBounds:
    """The ``[network]`` table: the only bridge and subnet bangerd-root agrees to set up."""

    bridge_name: str
    bridge_ip: str
    cidr: str


@dataclass(frozen=True)
class InstallRecord:
    """One install (the file's keys; paths as the target system sees them)."""

    version: str
    commit: str
    built_at: str
    owner: str
    owner_uid: int
    prefix: str
    venv: str
    socket: str
    root_socket: str
    state_dir: str
    cache_dir: str
    runtime_dir: str
    root_runtime_dir: str
    units: list[str]
    network: NetworkBounds
    #: Directories the install created (deepest last): uninstall removes them again when they are empty.
    created_dirs: list[str] = field(default_factory=list)

    def to_toml(self) -> str:
        def text(value: str | int | list[str]) -> str:
            return json.dumps(value)  # a JSON string, int or list of strings is valid TOML

        lines = [
            "# Written by `banger system install`; `banger system uninstall` reverts it (docs/install.md).",
            *(f"{key} = {text(getattr(self, key))}" for key in ("version", "commit", "built_at", "owner", "owner_uid")),
            "",
            "[paths]",
            *(
                f"{key} = {text(getattr(self, key))}"
                for key in (
                    "prefix",
                    "venv",
                    "socket",
                    "root_socket",
                    "state_dir",
                    "cache_dir",
                    "runtime_dir",
                    "root_runtime_dir",
                    "units",
                    "created_dirs",
                )
            ),
            "",
            "# What bangerd-root accepts: this bridge, this address, this subnet, nothing else.",
            "[network]",
            f"bridge_name = {text(self.network.bridge_name)}",
            f"bridge_ip = {text(self.network.bridge_ip)}",
            f"cidr = {text(self.network.cidr)}",
        ]
        return "\n".join(lines) + "\n"


class _Table:
    """One TOML table of the record, read with the type each key must have."""

    def __init__(self, data: object, where: Path) -> None:
        self.data = data if isinstance(data, dict) else {}
        self.where = where

    def _bad(self, key: str, kind: str) -> BangerError:
        return BangerError(
            f"{self.where}: key {key!r} is missing or not {kind}: reinstall with `banger system install`"
        )

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def number(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(key, "an integer")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.data.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return [str(v) for v in value]


def load_record(path: Path) -> InstallRecord:
    """The record at ``path``; a missing or damaged file is one line naming it."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise BangerError(
            f"banger is not installed as a service (no {path}): `banger system install` installs it"
        ) from None
    except (OSError, ValueError) as exc:
        raise BangerError(f"{path}: cannot read the install record ({exc}): fix or remove it") from None
    top, paths, network = _Table(data, path), _Table(data.get("paths"), path), _Table(data.get("network"), path)
    return InstallRecord(
        version=top.text("version"),
        commit=top.text("commit"),
        built_at=top.text("built_at"),
        owner=top.text("owner"),
        owner_uid=top.number("owner_uid"),
        prefix=paths.text("prefix"),
        venv=paths.text("venv"),
        socket=paths.text("socket"),
        root_socket=paths.text("root_socket"),
        state_dir=paths.text("state_dir"),
        cache_dir=paths.text("cache_dir"),
        runtime_dir=paths.text("runtime_dir"),
        root_runtime_dir=paths.text("root_runtime_dir"),
        units=paths.texts("units"),
        created_dirs=paths.texts("created_dirs"),
        network=NetworkBounds(
            bridge_name=network.text("bridge_name"), bridge_ip=network.text("bridge_ip"), cidr=network.text("cidr")
        ),
    )
