"""Response models: what the daemon answers, as the SDK returns it.

Field names are the JSON keys of the API (and of ``--json`` output): renaming
one is a breaking change for SDK users and scripts. Routes serialize these with
``model.model_dump(mode="json")``; the SDK parses them back with
``Model.model_validate``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainSerializer

from banger_core.api.ports import PortMapping
from banger_core.api.state import VmState

#: A moment as the API has always written it: ``datetime.isoformat()`` (``...+00:00``, not pydantic's ``Z``).
Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")]


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
    state: VmState
    image: str
    kernel: str
    backend: str
    network: str
    vcpus: int
    memory_mib: int
    disk_size: int
    guest_ip: str | None
    mac: str
    created_at: Timestamp
    started_at: Timestamp | None
    last_error: str | None
    remove_on_exit: bool
    host_access: bool
    #: Where each spec value came from: ``flag``, ``config``, ``default``, ``image`` or ``auto: ...``.
    spec_sources: dict[str, str]
    #: The VMM's pid while it runs.
    pid: int | None = None
    ssh: SshEndpoint | None = None
    #: How to reach the guest: its IP on a bridge, ``127.0.0.1:PORT`` with usernet.
    address: str | None = None
    #: Ports published on 127.0.0.1 (``-p``), host ports as picked at create; kept while the VM is stopped.
    ports: list[PortMapping] = Field(default_factory=list)
    #: While it runs: ``cold`` (booted its kernel) or ``warm`` (restored from a template).
    booted: Literal["cold", "warm"] | None = None


class VmDetail(VmView):
    """One VM as ``GET /v1/vms/NAME`` and the lifecycle operations return it: with its console log's path."""

    serial_log: str


class Deleted(ApiModel):
    """A VM or an image that is gone."""

    name: str
    deleted: Literal[True] = True


class KernelDeleted(ApiModel):
    """A kernel that is gone."""

    ref: str
    deleted: Literal[True] = True


class SshTargetView(ApiModel):
    """How the CLI reaches a running VM's sshd with banger's key and pinned host key."""

    name: str
    host: str
    port: int
    key: str
    known_hosts: str
    user: str
    #: The daemon's shared ssh connection socket, reused by later commands.
    control_path: str | None


class PlanValues(ApiModel):
    """The effective spec of a create."""

    vcpus: int
    memory_mib: int
    #: Bytes.
    disk_size: int
    image: str
    #: False when the image is not pulled yet (``vm run`` pulls it first).
    image_present: bool
    #: ``"the image's"`` while the image is not pulled (its kernel is known once it is).
    kernel: str
    network: str
    host_access: bool
    backend: str
    #: Published ports; ``host_port`` None: picked when the VM is created.
    ports: list[PortMapping] = Field(default_factory=list)


class RunPlan(ApiModel):
    """What ``POST /v1/vms/plan`` returns, and what a create announces before it makes anything."""

    values: PlanValues
    #: Where each value came from, by field name: ``flag``, ``config``, ``default``, ``image``, ``auto: ...``.
    sources: dict[str, str]


def spec_line(plan: RunPlan) -> str:
    """The one line that shows a spec and where each value came from (``vm run``, ``vm create``)."""
    from banger_core.common.config import format_size

    v, s = plan.values, plan.sources
    access = " with host access" if v.host_access else ""
    if v.ports:
        access += ", ports " + ", ".join(str(p) for p in v.ports)
    return (
        f"spec: {v.vcpus} vCPU ({s['vcpus']}), {v.memory_mib} MiB RAM ({s['memory_mib']}), "
        f"{format_size(v.disk_size)} disk ({s['disk_size']}), backend {v.backend} ({s['backend']}), "
        f"network {v.network} ({s['network']}){access}, image {v.image} ({s['image']}), "
        f"kernel {v.kernel} ({s['kernel']})"
    )


class ImageView(ApiModel):
    """An image in the local store."""

    name: str
    version: str
    source: str
    kernel_ref: str | None
    sha256: str
    size: int
    created_at: Timestamp
    path: str
    meta: dict[str, JsonValue]
    #: The reference it was pulled by (``registry/repo:tag``, ``register:/abs/rootfs.ext4``); None for an image
    #: pulled before banger recorded references.
    reference: str | None = None
    #: The digest the reference resolved to (OCI: the manifest, or index, digest), when the source has one.
    digest: str | None = None


class ImagePulled(ImageView):
    """The outcome of an image pull: the image, its kernel, and whether anything was fetched."""

    #: The image's kernel (pulled along with it), if it names one.
    kernel: str | None
    #: False when the image was already present (and ``force`` was not given).
    pulled: bool
    #: The image source that provided it, when ``pulled``.
    used_source: str | None = None


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
    created_at: Timestamp
    path: str
    meta: dict[str, JsonValue]


class KernelPulled(KernelView):
    """The outcome of a kernel pull."""

    pulled: bool
    used_source: str | None = None


class DaemonConfig(ApiModel):
    """The config file the daemon runs with."""

    path: str
    #: None when there is no file (defaults only).
    sha256: str | None
    #: The file's modification time (seconds since the epoch) when it was loaded.
    mtime: float | None
    loaded_at: float
    #: Why the file on disk is not applied (it does not parse, a key needs a restart), else None.
    problem: str | None


class DaemonStatus(BaseModel):
    """``GET /v1/daemon``.

    Lenient where other models are strict: a CLI reads this from a daemon of
    another version too (``daemon stop`` after an upgrade), so unknown keys are
    ignored and the keys added over time may be missing.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    pid: int
    version: str
    commit: str
    #: Start time, seconds since the epoch.
    started: float
    uptime: float
    socket: str
    log_file: str
    state_dir: str
    vms: int
    running_vms: int
    #: The web UI's URL, ``off``, or ``not started: <why>``.
    web_ui: str | None = None
    config: DaemonConfig | None = None
    #: The web UI's URL while it is served, else None.
    web_url: str | None = None
    #: Operations a restart would cut short, by kind (``{"vm create": 1}``); ``banger update`` waits for none.
    in_progress: dict[str, int] = Field(default_factory=dict)


class Pushed(ApiModel):
    """``POST /v1/images/{name}/push`` and ``/v1/kernels/{ref}/push``: what was published, pinned by digest."""

    kind: Literal["image", "kernel"]
    #: The image name or kernel ref that was pushed.
    name: str
    #: Where it was pushed, as given (``REGISTRY/REPO:TAG``).
    target: str
    #: The artifact publisher that pushed it (``oci``).
    publisher: str
    #: ``REGISTRY/REPO@sha256:...``: pull this to get exactly what was pushed.
    reference: str
    digest: str
    #: sha256 and size of the bundle that was published.
    bundle_sha256: str
    bundle_size: int
    #: Bytes sent (what the destination already held is not sent again).
    uploaded: int


class Stopping(ApiModel):
    """``POST /v1/daemon/shutdown``: the daemon stops shortly after answering."""

    stopping: Literal[True] = True


class ErrorInfo(ApiModel):
    """An error as the API reports it: the :mod:`~banger_core.common.errors` class name and its one line."""

    type: str
    message: str


class ErrorBody(ApiModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorInfo


class WarmTemplateView(ApiModel):
    """A warm-start template: a booted guest of ``image`` saved paused, restored by matching creates."""

    image: str
    kernel: str
    vcpus: int
    memory_mib: int
    disk_size: int
    backend: str
    network: str
    #: The VMM build the state was saved under (a template loads only into the same one).
    vmm: str
    digest: str


class WarmTemplatesRemoved(ApiModel):
    """``image warm --rm``: how many templates of ``image`` were deleted."""

    image: str
    removed: int
