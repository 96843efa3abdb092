"""Which resolver a guest on the bridge should use: the host's own upstream, never its loopback stub."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

#: systemd-resolved writes the real upstream servers to the first file; the
#: second then usually names only its 127.0.0.53 stub, which a guest cannot reach.
RESOLV_CONF_FILES = (Path("/run/systemd/resolve/resolv.conf"), Path("/etc/resolv.conf"))


def upstream_nameserver(files: Sequence[Path], exclude: ipaddress.IPv4Network) -> str | None:
    """The first IPv4 ``nameserver`` in ``files`` that a guest behind NAT can reach.

    Loopback, unspecified and link-local addresses are skipped (they mean
    something else inside the guest), and so are addresses inside ``exclude``
    (the guest subnet itself).

    Args:
        files: resolv.conf-style files, in order of preference; unreadable ones are skipped.
        exclude: the guest subnet.

    Returns:
        The address as a string, or None when no file names a usable server.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "resolv.conf"
        >>> _ = f.write_text("nameserver 127.0.0.53\\nnameserver 192.0.2.53\\n")
        >>> upstream_nameserver([f], ipaddress.IPv4Network("172.16.0.0/24"))
        '192.0.2.53'
    """
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 2 or fields[0] != "nameserver":
                continue
            try:
                address = ipaddress.IPv4Address(fields[1])
            except ValueError:
                continue  # IPv6 or garbage: guests get IPv4 config only
            if address.is_loopback or address.is_unspecified or address.is_link_local or address in exclude:
                continue
            return str(address)
    return None
