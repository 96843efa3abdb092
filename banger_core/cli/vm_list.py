"""``banger vm list``'s table, without click, pydantic or httpx.

:func:`banger_core.cli.main` answers a bare ``banger vm list`` with
:func:`answer` before importing click: click alone costs about 2.4 interpreter
start-ups, which leaves no room for the request under the 4x target
(docs/performance.md). Any other spelling (``-v``, ``--json``, ``--help``)
goes through click and ``vm_cmd``, which renders the same table with
:func:`render`.
"""

from __future__ import annotations

import os
import sys

from banger_core.cli.tables import table
from banger_core.client.connection import Connection
from banger_core.common.errors import BangerError, OperationFailed
from banger_core.common.sizes import format_mib, format_size

#: ``typing`` costs more to import than this module's work: mypy recognises the flag by its name.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic import JsonValue

#: The columns: header, the field of the VM's JSON (a VmView) shown under it, and the JSON type it must have.
COLUMNS: tuple[tuple[str, str, type[str] | type[int] | type[list[object]]], ...] = (
    ("NAME", "name", str),
    ("STATE", "state", str),
    ("IMAGE", "image", str),
    ("BACKEND", "backend", str),
    ("NETWORK", "network", str),
    ("ADDRESS", "address", str),
    ("PORTS", "ports", list),
    ("VCPU", "vcpus", int),
    ("MEM", "memory_mib", int),
    ("DISK", "disk_size", int),
)
#: How the sizes are shown (other numbers as they are).
SIZES: dict[str, Callable[[int], str]] = {"memory_mib": format_mib, "disk_size": format_size}


def _port_text(port: JsonValue) -> str | None:
    """A published port as the API writes it (an api ``PortMapping``): ``8080->80/tcp``; None if it is not one."""
    if not isinstance(port, dict):
        return None
    host, guest, protocol = port.get("host_port"), port.get("guest_port"), port.get("protocol")
    if isinstance(host, int) and isinstance(guest, int) and protocol in ("tcp", "udp"):
        return f"{host}->{guest}/{protocol}"
    return None


def rows(listed: JsonValue) -> list[list[str]]:
    """The table's rows from ``GET /v1/vms``'s JSON, each shown field type-checked.

    Not the SDK's pydantic models (importing them costs several interpreter
    start-ups); an answer of another shape is still one clear error, not a traceback.
    """
    table_rows = []
    for vm in listed if isinstance(listed, list) else [listed]:
        row = []
        for _, field, kind in COLUMNS:
            value = vm.get(field) if isinstance(vm, dict) else None
            if value is None and field == "address":  # none until the VM has one
                row.append("-")
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                row.append(SIZES.get(field, str)(value))
            elif kind is str and isinstance(value, str):
                row.append(value)
            elif kind is list and isinstance(value, list) and None not in (shown := [_port_text(p) for p in value]):
                row.append(",".join(s for s in shown if s) or "-")
            else:
                raise OperationFailed(
                    f"bangerd answered with an unexpected VM list (field {field!r} is {value!r}): "
                    "is the daemon another banger version? `banger daemon restart`"
                )
        table_rows.append(row)
    return table_rows


def render(env: Mapping[str, str], notify: Callable[[str], None]) -> str:
    """The VMs as a table (starting the daemon if none answers, saying so through ``notify``)."""
    listed = rows(Connection(env, notify=notify).query("GET", "/v1/vms"))
    if not listed:
        return "no VMs: `banger vm run` boots one"
    return table([header for header, _, _ in COLUMNS], listed)


def answer() -> int:
    """Print the table and return the exit status, the way the click command would (errors are one line)."""
    try:
        print(render(os.environ, notify=lambda line: print(line, file=sys.stderr)))
        sys.stdout.flush()
    except BangerError as exc:
        print(f"banger: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `banger vm list | head -1`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug: one line, like the click path (which shows the traceback with -v)
        print(f"banger: error: internal error: {type(exc).__name__}: {exc} (run with -v for details)", file=sys.stderr)
        return 70
    return 0
