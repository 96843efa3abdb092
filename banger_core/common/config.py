"""``config.toml``: typed, every key optional, unknown keys are errors.

Keys are declared by ``banger_config_options`` hooks (the core declares its
own in :mod:`banger_core.common.essential`), so a third-party plugin's keys are
validated exactly like the core's. Every effective value remembers where it
came from, for ``banger config show``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypedDict

from banger_core.common import paths
from banger_core.common.errors import ConfigError as ConfigError  # re-exported: config users import it from here
from banger_core.common.plugins import PluginManager
from banger_core.common.sizes import format_size as format_size  # re-exported: callers import it from here
from banger_hookspecs import ConfigOption

_SIZE_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: Far above any disk or memory a VM can have, far below what SQLite's 64-bit integers hold.
MAX_SIZE = 1 << 50
_SIZE_FORMS = {
    "": "a whole number of bytes (17179869184) or a number with a unit K, M, G or T (16G, 1.5G, 512MiB)",
    "m": "a whole number of MiB (2048) or a number with a unit K, M, G or T (2G, 1.5G, 512MiB)",
}


#: A value JSON can hold (``banger config show --json``).
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


class ConfigRow(TypedDict):
    """One key as ``banger config show`` reports it."""

    key: str
    value: JsonValue
    source: str
    plugin: str
    help: str
    type: str
    default: JsonValue
    aliases: list[str]


#: Other names a key is accepted under (the original banger's spellings): alias -> key.
#: An alias whose key no active plugin declares stays unknown, under the name the file uses.
ALIASES: dict[str, str] = {"default_image_name": "default_image", "default_dns": "guest_dns"}


def aliases_of(key: str) -> list[str]:
    return sorted(alias for alias, target in ALIASES.items() if target == key)


def parse_size(value: object, *, default_unit: str = "") -> int:
    """``"16G"`` → bytes (binary units); a number without a unit counts in ``default_unit`` (bytes, or ``"m"``).

    Raises ``ValueError`` with one line naming the accepted forms: for ``1e9``,
    ``-1``, ``12Q``, ``0``, a non-size type, or more than :data:`MAX_SIZE`.
    """
    forms = _SIZE_FORMS[default_unit]
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size, got {shown}: use {forms}")
    if isinstance(value, int):
        number, factor = Fraction(value), _SIZE_UNITS[default_unit]
    else:
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(f"{shown} is not a size: use {forms}")
        number, factor = Fraction(match.group(1)), _SIZE_UNITS[match.group(2).lower() or default_unit]
    # Exact arithmetic: a float would turn 30 digits into inf and then into a traceback.
    size = int(number * factor)
    if size <= 0:
        raise ValueError(f"a size must be more than 0, got {value}")
    if size > MAX_SIZE:
        raise ValueError(f"{shown} is too large: sizes go up to {format_size(MAX_SIZE)}")
    return size


_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "path": "an absolute path (or ~/...)",
    "size": "a size like 8G or 512M",
    "list[str]": "a list of strings",
    "table": "a table",
    "list[table]": "an array of tables ([[...]])",
}


def type_text(option: ConfigOption) -> str:
    """What a value of ``option`` must be, in words: ``a string: one of microvm, q35``."""
    words = _TYPE_WORDS[option.type]
    if option.choices:
        words += f": one of {', '.join(option.choices)}"
    return words


def _coerce(option: ConfigOption, value: object, where: str, env: Mapping[str, str]) -> object:
    """Validate one value; ``where`` names it in errors (``key 'x' in [t]``)."""
    expected = _TYPE_WORDS[option.type]

    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"{where} must be {expected}{extra}, got {value!r}")

    kind = option.type
    if kind == "str":
        if not isinstance(value, str):
            raise bad()
        if option.choices and value not in option.choices:
            raise ConfigError(f"{where} must be one of {', '.join(option.choices)}, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise bad()
        try:
            return paths.expand_path(value, env)
        except ValueError as exc:
            raise ConfigError(f"{where} {exc}") from None
    if kind == "size":
        try:
            return parse_size(value)
        except ValueError:
            raise bad() from None
    if kind == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
        return list(value)
    if kind == "table":
        if not isinstance(value, dict):
            raise bad()
        return _table(option, value, where, env)
    if kind == "list[table]":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad()
        return [_table(option, v, f"{where} entry {i + 1}", env) for i, v in enumerate(value)]
    raise ConfigError(f"{where}: unsupported option type {kind}")


def _table(option: ConfigOption, value: dict[str, object], where: str, env: Mapping[str, str]) -> dict[str, object]:
    fields = {f.key: f for f in option.fields}
    out: dict[str, object] = {}
    for key, item in value.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        out[key] = _coerce(fields[key], item, f"{where}: key {key!r}", env)
    for name, sub in fields.items():
        if sub.required and name not in out:
            raise ConfigError(f"{where}: missing required key {name!r}")
    return out


#: What tells a changed file apart without reading it: inode, size, mtime and ctime (ns).
FileStamp = tuple[int, int, int, int]


@dataclass
class Config(Mapping[str, Any]):
    """Effective configuration: values plus where each came from."""

    path: Path
    data: dict[str, Any]
    sources: dict[str, str]
    options: dict[str, ConfigOption]
    owners: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: sha256 of the file as read (None: there was no file), and its :func:`file_stamp` at that moment.
    digest: str | None = None
    stamp: FileStamp | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def rows(self) -> list[ConfigRow]:
        """Rows for ``banger config show``: key, value, source, plugin, help, type, default, aliases."""
        rows: list[ConfigRow] = []
        for key in sorted(self.options):
            value = self.data.get(key)
            option = self.options[key]
            rows.append(
                {
                    "key": key,
                    "value": _jsonable(value),
                    "source": self.sources.get(key, "default"),
                    "plugin": self.owners.get(key, ""),
                    "help": option.help,
                    "type": option.type,
                    "default": _jsonable(option.default),
                    "aliases": aliases_of(key),
                }
            )
        return rows


def _jsonable(value: object) -> JsonValue:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return str(value)  # a Path


def bridge_addresses(config: Mapping[str, Any]) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    """The guest subnet (``cidr``) and the host's address in it (``bridge_ip``), checked together.

    Only tap networking uses them, so callers check them when a bridge VM or
    the host's bridge needs them, not when the config is loaded: a typo there
    must not stop a daemon whose VMs use usernet.

    Raises:
        ConfigError: one line naming the key and the fix.
    """
    cidr_value, ip_value = config.get("cidr"), config.get("bridge_ip")
    try:
        cidr = ipaddress.IPv4Network(cidr_value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"cidr {cidr_value!r} is not an IPv4 network like 172.16.0.0/24: fix it in config.toml"
        ) from None
    try:
        bridge_ip = ipaddress.IPv4Address(ip_value)
    except (ValueError, TypeError):
        raise ConfigError(f"bridge_ip {ip_value!r} is not an IPv4 address: fix it in config.toml") from None
    # A /31 or /32 has no network and broadcast addresses to avoid.
    if bridge_ip not in cidr or (cidr.prefixlen < 31 and bridge_ip in (cidr.network_address, cidr.broadcast_address)):
        raise ConfigError(f"bridge_ip {bridge_ip} is not a usable address inside cidr {cidr}: fix it in config.toml")
    return cidr, bridge_ip


def display_path(path: Path, env: Mapping[str, str] = os.environ) -> str:
    """``path`` with the home directory written as ``~``."""
    home = env.get("HOME")
    text = str(path)
    if home and (text == home or text.startswith(home.rstrip("/") + "/")):
        return "~" + text[len(home.rstrip("/")) :]
    return text


def load_config(
    pm: PluginManager, env: Mapping[str, str] = os.environ, path: Path | None = None, *, content: bytes | None = None
) -> Config:
    """Read and validate the config file (missing file = all defaults).

    With ``content``, validate that text as if it were the file at ``path``
    (``banger config edit`` checks an edit before it replaces the file).
    """
    path = path or paths.config_file(env)
    shown = display_path(path, env)
    provided = pm.config_options()
    options = {key: p.value for key, p in provided.items()}
    owners = {key: p.plugin.name for key, p in provided.items()}

    raw: dict[str, object] = {}
    digest: str | None = None
    stamp: FileStamp | None = None
    try:
        if content is None:
            with path.open("rb") as fh:
                # Stamped before reading: a change made while we read shows up as a newer stamp later.
                stamp = _stamp(os.fstat(fh.fileno()))
                content = fh.read()
        digest = hashlib.sha256(content).hexdigest()
        raw = _resolve_aliases(tomllib.loads(content.decode()), options, shown)
    except FileNotFoundError:
        pass
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: invalid TOML: the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}") from None

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, option in options.items():
        if option.default is not None:
            values[key] = option.default
            sources[key] = "default"
    inactive = sorted(r.name for r in pm.records.values() if r.status != "active")
    warnings: list[str] = []
    for key, value in raw.items():
        if key not in options:
            if inactive:
                # The key may belong to a blocked or broken plugin: refusing to
                # run would make BANGER_DISABLE_PLUGINS unusable, so warn.
                warnings.append(f"{shown}: ignoring unknown key {key!r} (inactive plugins: {', '.join(inactive)})")
                continue
            raise ConfigError(f"{shown}: unknown key {key!r}: remove it or check its spelling")
        values[key] = _coerce(options[key], value, f"{shown}: key {key!r}", env)
        sources[key] = shown
    for key, default, origin in (
        ("state_dir", paths.default_state_dir(env), "default (XDG_DATA_HOME)"),
        ("cache_dir", paths.default_cache_dir(env), "default (XDG_CACHE_HOME)"),
        ("runtime_dir", paths.default_runtime_dir(env), "default (XDG_RUNTIME_DIR)"),
    ):
        if key in options and key not in values:
            values[key] = default
            sources[key] = origin
    return Config(
        path=path,
        data=values,
        sources=sources,
        options=options,
        owners=owners,
        warnings=warnings,
        digest=digest,
        stamp=stamp,
    )


def _resolve_aliases(raw: dict[str, object], options: Mapping[str, ConfigOption], shown: str) -> dict[str, object]:
    """``raw`` with each alias of a declared key renamed to that key; both set differently is an error."""
    resolved = dict(raw)
    for alias, key in ALIASES.items():
        if alias not in resolved or key not in options:
            continue
        value = resolved.pop(alias)
        if key in resolved and resolved[key] != value:
            raise ConfigError(
                f"{shown}: {alias} = {value!r} and {key} = {resolved[key]!r} set the same key "
                f"({alias} is another name for {key}): keep one"
            )
        resolved[key] = value
    return resolved


def _stamp(st: os.stat_result) -> FileStamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_stamp(path: Path) -> FileStamp | None:
    """The :data:`FileStamp` of ``path`` now, or None when it does not exist."""
    try:
        return _stamp(path.stat())
    except FileNotFoundError:
        return None
