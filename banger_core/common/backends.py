"""Which VMM backend runs a VM: the one rule the daemon (at create) and ``banger doctor`` share.

An explicit choice (the ``--backend`` flag, else ``vmm_backend`` in the
config) is taken as is, if it can attach the network's kind of NIC and is
usable here. ``auto`` picks the most preferred usable backend among those
that can attach that NIC kind (Firecracker has no user-mode networking, so
with ``usernet`` auto picks QEMU). Callers turn the :class:`BackendChoice`
into their own output: an error for a create, a row for doctor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from banger_core.common.errors import BangerError
from banger_core.common.plugins import PluginManager
from banger_hookspecs import Availability

AUTO = "auto"


@dataclass(frozen=True)
class BackendFinding:
    """What one backend can do here for the requested network."""

    name: str
    #: False when the backend cannot attach the network's kind of NIC (it is not asked about availability then).
    compatible: bool
    usable: bool
    preference: int
    reason: str

    def line(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class BackendChoice:
    """The findings behind a choice and the backend chosen, if any."""

    network: str
    #: The backend asked for by name (flag or config); None under ``auto``.
    explicit: str | None
    source: Literal["flag", "config", "auto"]
    #: The explicit backend only, or every installed backend under ``auto``, sorted by name.
    findings: tuple[BackendFinding, ...]

    @property
    def chosen(self) -> BackendFinding | None:
        usable = [f for f in self.findings if f.compatible and f.usable]
        if not usable:
            return None
        return max(usable, key=lambda f: (f.preference, f.name))

    @property
    def why(self) -> str:
        """Provenance as the VM's ``spec_sources`` records it: ``flag``, ``config`` or ``auto: <reason>``."""
        chosen = self.chosen
        if self.source != AUTO or chosen is None:
            return self.source
        return f"auto: {chosen.reason}"

    def reasons(self) -> str:
        return "; ".join(f.line() for f in self.findings) or "none installed"


def choose_backend(
    pm: PluginManager,
    *,
    network: str,
    nic_kind: str | None,
    configured: str,
    requested: str | None,
    availability: Callable[[str], Availability],
) -> BackendChoice:
    """Evaluate the backends for a VM on ``network`` (whose NIC kind is ``nic_kind``; None: unknown, no filter).

    ``availability(name)`` asks backend ``name`` whether it can run VMs here;
    an exception from it is a finding (the backend is unusable), not a crash.
    """
    registrations = pm.vmm_backends()
    explicit = requested or (configured if configured != AUTO else None)
    source: Literal["flag", "config", "auto"] = "flag" if requested else "config" if explicit else "auto"
    names = [explicit] if explicit else sorted(registrations)
    findings: list[BackendFinding] = []
    for name in names:
        if name not in registrations:
            findings.append(BackendFinding(name, True, False, 0, "not installed"))
        elif nic_kind is not None and nic_kind not in registrations[name].value.nic_kinds:
            findings.append(BackendFinding(name, False, False, 0, f"cannot attach {network} NICs ({nic_kind})"))
        else:
            findings.append(_ask(name, availability))
    return BackendChoice(network, explicit, source, tuple(findings))


def _ask(name: str, availability: Callable[[str], Availability]) -> BackendFinding:
    try:
        found = availability(name)
    except Exception as exc:  # a backend that cannot even say is unusable, and the others still count
        why = str(exc) if isinstance(exc, BangerError) else f"{type(exc).__name__}: {exc}"
        return BackendFinding(name, True, False, 0, why)
    return BackendFinding(name, True, found.usable, found.preference, found.reason)
