"""Request bodies: what a client may send, checked strictly (:mod:`banger_core.api.validation`).

``None`` means "use the default" (config, then host heuristics). Path
parameters and query flags are not here: routes read those themselves.
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from pydantic import BeforeValidator

from banger_core.api.ports import PortMapping, requested_ports
from banger_core.api.validation import ApiRequest


def _requested_size(value: object) -> int | None:
    """A create's ``disk_size``: bytes (an integer) or a size string, checked before anything is created."""
    from banger_core.common.config import parse_size

    return None if value is None else parse_size(value)


class CreateRequest(ApiRequest):
    """``POST /v1/vms`` and ``POST /v1/vms/plan``: the VM a client asks for; ``disk_size`` comes back in bytes."""

    name: str | None = None
    image: str | None = None
    kernel: str | None = None
    backend: str | None = None
    network: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    disk_size: Annotated[int | str | None, BeforeValidator(_requested_size)] = None
    start: bool = True
    remove_on_exit: bool = False
    host_access: bool = False
    #: Boot the kernel even when a warm template matches (``vm run --cold``).
    cold: bool = False
    #: Published ports: ``"8080:80"``, ``"80"`` (host port picked), ``"5353:53/udp"``, or :class:`PortMapping`.
    ports: Annotated[tuple[PortMapping, ...], BeforeValidator(requested_ports)] = ()


class ImagePull(ApiRequest):
    """``POST /v1/images/pull``."""

    ref: str = ""
    source: str | None = None
    force: bool = False
    #: An image without openssh-server installs it at first boot (sources that can: ``oci``).
    with_sshd: bool = False
    #: The kernel the image boots with, instead of the one its source names.
    kernel_ref: str | None = None


class ImageRegister(ApiRequest):
    """``POST /v1/images/register``: adopt an ext4 file on the daemon's host as image ``name``."""

    name: str = ""
    rootfs: str = ""
    kernel_ref: str | None = None


class KernelPull(ApiRequest):
    """``POST /v1/kernels/pull``."""

    ref: str = ""
    provider: str | None = None
    force: bool = False


class ArtifactPush(ApiRequest):
    """``POST /v1/images/{name}/push`` and ``POST /v1/kernels/{ref}/push``."""

    target: str = ""


class VmOptions(TypedDict, total=False):
    """The spec keywords of :meth:`Client.vms.create <banger_core.client.sdk.Vms.create>`, ``plan`` and
    ``ephemeral``: the fields of :class:`CreateRequest` that describe the VM (left out: the default)."""

    name: str | None
    image: str | None
    kernel: str | None
    backend: str | None
    network: str | None
    vcpus: int | None
    memory_mib: int | None
    #: Bytes, or a size string (``"16G"``).
    disk_size: int | str | None
    host_access: bool
    #: Boot the kernel even when a warm template matches.
    cold: bool
    #: Published ports on 127.0.0.1: ``"8080:80"``, ``"80"`` (host port picked), ``"5353:53/udp"``.
    ports: list[str | PortMapping]
