"""The environment ``bangerd`` runs with: an allowlist of what it needs, nothing else inherited.

The CLI starts the daemon with it (auto-start), and the daemon applies it to
itself at start (``bangerd.service``, or a daemon started by hand), so QEMU,
ssh, mkfs and every other child inherit it too. What is kept and why:

* ``HOME``, ``USER``, ``LOGNAME``, ``XDG_*``, ``BANGER_*``: where banger's
  config, state and sockets are, and banger's own switches;
* ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``: locale, time, scratch space;
* proxies, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` and ``DOCKER_CONFIG``: how
  downloads and registry pulls reach the network and authenticate;
* ``PATH`` and ``PYTHONPATH`` with only their absolute entries: the tools and
  the plugins of the user the daemon runs as (a relative entry or an empty
  one would mean "the current directory" and is dropped).

Dropped, among everything else: ``LD_PRELOAD``, ``LD_LIBRARY_PATH``,
``PYTHONHOME``, ``PYTHONSTARTUP``, ``PYTHONINSPECT``, ``IFS``, ``BASH_ENV``,
``SSH_AUTH_SOCK``. The root helper keeps nothing at all (:mod:`banger_core.host.rootd`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_KEPT = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "DOCKER_CONFIG",
    }
)
_KEPT_PREFIXES = ("XDG_", "BANGER_", "LC_")
_SEARCH_PATHS = ("PATH", "PYTHONPATH")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _absolute_entries(value: str) -> str:
    return os.pathsep.join(entry for entry in value.split(os.pathsep) if entry.startswith("/"))


def daemon_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of ``env`` (see the module docstring); PATH defaults to the system directories.

    Example:
        >>> daemon_environment({"HOME": "/home/a", "LD_PRELOAD": "x.so", "PATH": ".:/usr/bin"})
        {'HOME': '/home/a', 'PATH': '/usr/bin'}
    """
    clean = {k: v for k, v in env.items() if k in _KEPT or k.startswith(_KEPT_PREFIXES)}
    for name in _SEARCH_PATHS:
        entries = _absolute_entries(env.get(name, ""))
        if entries:
            clean[name] = entries
    clean.setdefault("PATH", DEFAULT_PATH)
    return clean
