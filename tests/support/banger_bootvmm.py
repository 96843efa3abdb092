"""Test plugin: ``bootvmm``, the fake VMM whose "guest" boots.

The fake VMM of :mod:`tests.support.banger_fake` (a real child process
answering on its control socket), whose guest prints banger's ready marker on
the serial console, as the real images do once their sshd is up.
"""

from __future__ import annotations

from collections.abc import Iterable

from banger_hookspecs import Progress, VmmBackend, VmProcess, VmSpec, hookimpl
from banger_hookspecs.boot import READY_MARKER
from tests.support.banger_fake import FakeVmm


class BootingVmm(FakeVmm):
    def launch(self, spec: VmSpec, progress: Progress) -> VmProcess:
        proc = FakeVmm.launch(self, spec, progress)
        with open(spec.serial_log, "ab") as console:
            console.write(f"{READY_MARKER} fake-boot\n".encode())
        return VmProcess("bootvmm", proc.pid, proc.start_time, proc.control_socket)


@hookimpl
def banger_vmm_backends() -> Iterable[VmmBackend]:
    return [VmmBackend("bootvmm", "the fake VMM, whose guest prints the ready marker", BootingVmm)]
