"""Response models: a VM, an image, a kernel, as the daemon reports them.

Field names are the JSON keys of the API (and of ``--json`` output): renaming
one is a breaking change for SDK users and scripts.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, JsonValue


class ApiModel(BaseModel):
    """Base of every API model: unknown keys are an error, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SshEndpoint(ApiModel):
    """Where the host reaches the guest's sshd."""

    host: str
    port: int


class VmView(ApiModel):
    """One VM: its recorded spec and state, plus live fields while its VMM runs."""

    id: str
    name: str
    state: str
    image: str
    kernel: str
    backend: str
    network: str
    vcpus: int
    memory_mib: int
    disk_size: int
    guest_ip: str | None
    mac: str
    created_at: datetime
    started_at: datetime | None
    last_error: str | None
    remove_on_exit: bool
    host_access: bool
    #: Where each spec value came from: ``request``, ``config``, ``default`` or ``host``.
    spec_sources: dict[str, str]
    #: The VMM's pid while it runs.
    pid: int | None = None
    ssh: SshEndpoint | None = None
    #: How to reach the guest: its IP on a bridge, ``127.0.0.1:PORT`` with usernet.
    address: str | None = None


class ImageView(ApiModel):
    """An image in the local store."""

    name: str
    version: str
    source: str
    kernel_ref: str | None
    sha256: str
    size: int
    created_at: datetime
    path: str
    meta: dict[str, JsonValue]


class AvailableImage(ApiModel):
    """An image an image source says it can provide (``image list --available``)."""

    name: str
    description: str
    source: str


class KernelView(ApiModel):
    """A kernel in the local store."""

    ref: str
    version: str
    provider: str
    boot_protocol: int
    #: SHA-256 of each kernel file, by file name.
    sha256: dict[str, str]
    created_at: datetime
    path: str
    meta: dict[str, JsonValue]
