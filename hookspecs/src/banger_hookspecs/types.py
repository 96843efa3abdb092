"""Typed value objects exchanged between banger's core and its plugins.

Everything here is plain data (frozen dataclasses) or a ``Protocol`` that the
core or a plugin implements. Nothing imports anything heavier than the
standard library: plugins import this module at load time, and the CLI loads
plugins on its fast paths.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol, runtime_checkable

from banger_hookspecs.bundle import BundleManifest

__all__ = [
    "PROVIDER_NAME_RE",
    "ArtifactPublisher",
    "ArtifactPublisherDriver",
    "Availability",
    "CheckResult",
    "CheckStatus",
    "ConfigOption",
    "Disk",
    "DnsRouter",
    "DnsRouterDriver",
    "DoctorCheck",
    "DocumentFetcher",
    "DocumentRefused",
    "FetchedDocument",
    "GuestNetConfig",
    "GuestResult",
    "GuestShell",
    "HostFacts",
    "HostOps",
    "IdentifyingImageSource",
    "ImageArtifact",
    "ImageIdentity",
    "ImageListing",
    "ImageRefused",
    "ImageSource",
    "ImageSourceDriver",
    "KernelArtifact",
    "KernelProvider",
    "KernelProviderDriver",
    "NetAttachment",
    "NetworkBackend",
    "NetworkDriver",
    "NicRequest",
    "NicSpec",
    "PluginContext",
    "PortForward",
    "Progress",
    "PublishedArtifact",
    "PublishedElsewhere",
    "SignatureRefused",
    "SignatureVerifier",
    "SourceUnavailable",
    "SshdInstallingImageSource",
    "VmInfo",
    "VmProcess",
    "VmSpec",
    "VmmBackend",
    "VmmDriver",
    "VmmSnapshots",
    "WorkspaceOptions",
    "WorkspacePlan",
    "WorkspaceRoundTrip",
    "WorkspaceSyncer",
    "WorkspaceSyncerDriver",
    "validate_provider_name",
]

#: Provider names: lowercase, start with a letter, at most 32 characters.
PROVIDER_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def validate_provider_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid provider name, else raise ``ValueError``.

    Args:
        kind: what is being named, for the error message (``"image source"``).
        name: the proposed name.

    Returns:
        The name, unchanged.
    """
    if not isinstance(name, str) or not PROVIDER_NAME_RE.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-32 characters of a-z, 0-9 and '-', starting with a letter"
        )
    return name


class SourceUnavailable(Exception):
    """A provider cannot serve a request right now (catalog unreachable, tool missing).

    Raising this (instead of any other error) tells the core it may fall back to
    the next provider that claims the same reference. The message is a user
    sentence.
    """


class DocumentRefused(Exception):
    """A document was fetched but is not what was asked for (another artifact type, too large, a digest mismatch).

    :attr:`PluginContext.fetch_document` raises it (and :class:`SourceUnavailable` when the
    location cannot be reached); the message is one user sentence.
    """


class SignatureRefused(Exception):
    """A Sigstore signature does not vouch for a file under the policy asked for, or cannot be checked.

    :attr:`PluginContext.verify_signature` raises it; the message is one user
    sentence saying what failed (digest, identity, issuer, trust root, log key)
    and how to fix it.
    """


class PublishedElsewhere(Exception):
    """A provider's answer that what it was asked for is published at another reference.

    The ``catalog`` raises it for an entry whose ``url`` is an OCI artifact
    (``oci://REGISTRY/REPO@sha256:...``). The core then pulls ``target``
    through whichever provider claims it (once: a second redirect is an
    error) and keeps the result only if it carries the name that was asked
    for.

    Attributes:
        target: the reference to pull instead (``ghcr.io/team/golden@sha256:...``).
    """

    def __init__(self, target: str) -> None:
        super().__init__(f"published at {target}")
        self.target = target


# --------------------------------------------------------------------------
# Services the core hands to plugins
# --------------------------------------------------------------------------


class Progress(Protocol):
    """Progress sink for long operations; the daemon streams it to the CLI."""

    def step(self, message: str) -> None:
        """Start a new phase, e.g. ``"downloading kernel package"``."""

    def advance(self, done: int, total: int | None = None, unit: str = "B") -> None:
        """Report progress inside the current phase (bytes, files, ...)."""

    def log(self, message: str) -> None:
        """A detail line (tool output); shown with ``-v`` and kept in the daemon log."""


class HostOps(Protocol):
    """Privileged host operations (CAP_NET_ADMIN), with strictly validated arguments.

    The core implements this in-process when the daemon runs as root, and
    forwards it to the ``bangerd-root`` helper when the daemon runs as its
    owner (every method here is callable through the helper, by name). Interface names must start with the
    configured prefix (``banger`` for bridges, ``bgr`` for taps) and addresses
    must lie inside the configured CIDR, or the call raises ``ValueError``.
    """

    def ensure_bridge(self, name: str, address: str) -> bool:
        """Create or repair bridge ``name`` with ``address`` (``"172.16.0.1/24"``), up.

        Returns True when something had to be created or repaired.
        """

    def delete_bridge(self, name: str) -> None:
        """Delete bridge ``name`` if it exists."""

    def create_tap(self, name: str, bridge: str, owner_uid: int) -> None:
        """Create tap ``name`` owned by ``owner_uid``, enslaved to ``bridge``, up."""

    def rename_tap(self, name: str, new_name: str) -> None:
        """Rename existing tap ``name`` to ``new_name``, keeping its owner, bridge and up state.

        Lets a network backend hand a pre-created tap to a VM under a name derived from the VM.
        """

    def delete_tap(self, name: str) -> None:
        """Delete tap ``name`` if it exists."""

    def list_links(self, prefix: str) -> list[str]:
        """Names of links whose name starts with ``prefix``."""

    def ensure_nat(self, cidr: str, bridge: str) -> None:
        """Enable IPv4 forwarding and masquerade traffic from ``cidr`` leaving ``bridge``."""

    def remove_nat(self, cidr: str, bridge: str) -> None:
        """Undo :meth:`ensure_nat`."""

    def host_routes(self) -> list[str]:
        """IPv4 routes of the host's main table as CIDR strings (for overlap checks).

        Routes through banger's own bridges (names with the bridge prefix) are left
        out, so a second setup does not see its own bridge as a conflict.
        """

    def spawn_jailed_vmm(
        self, jailer: str, firecracker: str, vm_id: str, uid: int, gid: int, chroot_base: str, console_fifo: str
    ) -> int:
        """Start ``firecracker`` through the Firecracker ``jailer`` as ``uid:gid``; return its pid.

        The jailed process chroots to ``<chroot_base>/<firecracker's name>/<vm_id>/root``,
        listens on ``/run/firecracker.socket`` there, and writes its stdout and stderr
        into ``console_fifo`` (a FIFO the caller owns and holds the read end of).
        The root side accepts only its configured binaries and chroot base, a banger
        VM id and the owner's uid/gid, and adds no other argument.

        Raises:
            NotImplementedError: these host ops have no root side (no root helper):
                the caller may run Firecracker unjailed instead.
            ValueError: an argument the root side does not allow.
        """

    def bind_dns_socket(self, address: str, port: int) -> socket.socket:
        """A UDP socket bound to ``address:port``, for the ``.vm`` DNS server on the bridge.

        ``address`` must be the bridge's own address. Port 53 needs
        CAP_NET_BIND_SERVICE: the root helper binds it and hands the socket over.
        """

    def route_dns(self, link: str, server: str, domain: str) -> None:
        """Have systemd-resolved send ``*.domain`` queries, and only those, to ``server`` on ``link``.

        ``link`` must be banger's bridge, ``server`` its address (optionally
        ``:PORT``) and ``domain`` ``"vm"``. Changing a link's DNS needs root
        (polkit refuses other users on stock hosts): the root helper runs
        ``resolvectl`` for an owner daemon.
        """


KvmKind = Literal["hardware", "software", "unusable", "absent"]


@dataclass(frozen=True)
class HostFacts:
    """What the core found out about the host, once, for every plugin.

    Attributes:
        kvm: ``hardware`` (vmx/svm and a working /dev/kvm: stock kernels boot),
            ``software`` (/dev/kvm works but is a software hypervisor such as
            PVM that cannot boot stock guest kernels), ``unusable`` (present but
            cannot be opened or refuses to create a VM), ``absent``.
        kvm_detail: one line explaining ``kvm``.
        tsc_khz: the host TSC frequency in kHz, if known.
        cpus: online CPUs.
        memory_mib: total memory.
    """

    kvm: KvmKind
    kvm_detail: str
    tsc_khz: int | None
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class FetchedDocument:
    """A small document fetched by :attr:`PluginContext.fetch_document`.

    Attributes:
        data: its bytes, checked against the digest that pins them.
        reference: where it came from, pinned by digest (``REGISTRY/REPO@sha256:...`` for a registry).
        digest: the digest of the artifact holding it (an OCI manifest's).
    """

    data: bytes
    reference: str
    digest: str


class DocumentFetcher(Protocol):
    """Fetches the one document of an artifact (see :meth:`ArtifactPublisherDriver.fetch_document`)."""

    def __call__(self, reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
        """The ``media_type`` document of the ``artifact_type`` artifact at ``reference``, at most ``max_size`` bytes.

        Raises:
            SourceUnavailable: nothing can fetch ``reference``, or its location is unreachable.
            DocumentRefused: the artifact is of another type, the document too large, or a digest does not match.
        """
        ...


def _refuse_document_fetch(reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
    raise SourceUnavailable(f"{reference} can be fetched only by the daemon, through its artifact publishers")


class SignatureVerifier(Protocol):
    """Checks a Sigstore bundle over a file against a signing policy, with the trust root banger is configured for."""

    def __call__(self, path: Path, signature: bytes, *, identity: str, issuer: str, subject: str | None = None) -> None:
        """Return if ``signature`` (a Sigstore bundle, JSON) signs the file at ``path`` as ``identity``.

        Args:
            path: the signed file; it is read (streamed), never changed.
            signature: the Sigstore bundle published beside it (``FILE.sigstore.json``).
            identity: the signing certificate's identity (SAN) that must match exactly.
            issuer: the OIDC issuer that must have vouched for ``identity``, matched exactly.
            subject: names the file in the refusal (default: its file name).

        Raises:
            SignatureRefused: the signature does not verify (one line, with the fix).
        """
        ...


def _refuse_signature_check(
    path: Path, signature: bytes, *, identity: str, issuer: str, subject: str | None = None
) -> None:
    raise SignatureRefused(f"the signature of {path} can be checked only by banger's core, which was not asked to")


@dataclass(frozen=True)
class PluginContext:
    """What a provider factory receives: effective config, directories, host services.

    Attributes:
        config: effective configuration (core keys and every plugin's keys).
        state_dir: durable data (images, kernels, VMs); a plugin keeps its own
            files under ``state_dir / "plugins" / <its name>``.
        cache_dir: re-creatable data (downloads, build caches).
        runtime_dir: sockets and pid files (0700).
        host_ops: privileged operations.
        logger: where to log; the daemon's log file.
        owner_uid: the uid that owns the VMs (the daemon's user).
        owner_gid: its gid.
        host: facts about the host (KVM kind, TSC frequency, CPUs, memory).
        fetch_document: fetches a small document stored as an artifact where an artifact
            publisher publishes (a catalog in an OCI registry); the daemon routes it to the
            publisher claiming the reference. Outside the daemon it refuses with
            :class:`SourceUnavailable`.
        verify_signature: checks a Sigstore signature over a file (see :class:`SignatureVerifier`)
            against the trust root banger pins (config ``sigstore_trusted_root`` replaces it).
            Plugins never import sigstore themselves, so every signature is judged the same way.
    """

    # Any: each value has the type its ConfigOption declares, known only at runtime.
    config: Mapping[str, Any]
    state_dir: Path
    cache_dir: Path
    runtime_dir: Path
    host_ops: HostOps
    logger: logging.Logger
    owner_uid: int
    owner_gid: int
    host: HostFacts
    fetch_document: DocumentFetcher = field(default=_refuse_document_fetch)
    verify_signature: SignatureVerifier = field(default=_refuse_signature_check)

    def plugin_dir(self, name: str, *, cache: bool = False) -> Path:
        """The directory a plugin named ``name`` owns (created on demand, 0700)."""
        base = (self.cache_dir if cache else self.state_dir) / "plugins" / name
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        return base


# --------------------------------------------------------------------------
# Configuration and doctor
# --------------------------------------------------------------------------

ConfigType = Literal["str", "int", "bool", "path", "size", "list[str]", "table", "list[table]"]


@dataclass(frozen=True)
class ConfigOption:
    """A key that may appear in ``config.toml``.

    Attributes:
        key: the TOML key (top level), e.g. ``"firecracker_bin"``.
        type: value type; ``path`` expands ``~`` and must be absolute afterwards,
            ``size`` accepts ``"16G"``/``"512M"``/an int of bytes.
        default: value when unset (``None`` = unset).
        help: one line shown by ``banger config show``.
        choices: allowed values for ``str`` options.
        fields: the allowed keys of a ``table`` (or of each ``list[table]`` entry).
        required: for a field: the entry is invalid without it.
    """

    key: str
    type: ConfigType
    default: object = None
    help: str = ""
    choices: tuple[str, ...] = ()
    fields: tuple[ConfigOption, ...] = ()
    required: bool = False

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9_]{0,63}$", self.key):
            raise ValueError(f"invalid config key {self.key!r}: use a-z, 0-9 and '_'")


CheckStatus = Literal["ok", "warn", "fail", "info"]


@dataclass(frozen=True)
class CheckResult:
    """One row of ``banger doctor``.

    Attributes:
        name: short row title, e.g. ``"kvm"``.
        status: ``ok``, ``warn``, ``fail`` or ``info``.
        summary: one line saying what was found.
        hint: what the user should do, when status is not ok.
        blocks_vm_run: a ``fail`` that makes ``banger vm run`` impossible.
    """

    name: str
    status: CheckStatus
    summary: str
    hint: str | None = None
    blocks_vm_run: bool = False


@dataclass(frozen=True)
class DoctorCheck:
    """A registered doctor check; ``run`` yields one or more rows."""

    name: str
    run: Callable[[PluginContext], Iterable[CheckResult]]

    def __post_init__(self) -> None:
        validate_provider_name("doctor check", self.name)


# --------------------------------------------------------------------------
# Images and kernels
# --------------------------------------------------------------------------


class ImageRefused(ValueError):
    """An image source refuses what the reference names (a bad file, a bad name), for a reason the user can fix.

    The core reports the message as the user's error, as it stands (so it
    should be a whole sentence: what is wrong and how to fix it), with no
    traceback and without trying the next source. Example::

        raise ImageRefused(f"{path} is not an ext4 file system: give the path of an ext4 image")
    """


@dataclass(frozen=True)
class ImageArtifact:
    """A pulled image: the files a source wrote into its destination directory.

    Attributes:
        name: image name (``debian-bookworm``).
        version: source-defined version string (recipe hash, digest, date).
        rootfs: path of the ext4 root filesystem inside the destination dir.
        kernel_ref: kernel the image wants (``generic-6.1``), or None for the default.
        sha256: hex digest of ``rootfs`` as written.
        size: size of ``rootfs`` in bytes.
        metadata: extra manifest fields (recipe hash, build time, origin URL).
        digest: the content digest the reference resolved to (an OCI manifest
            or index digest), when the source has one: ``banger image show``
            prints it, and :meth:`IdentifyingImageSource.identify` is compared
            with it to answer "already present" without downloading.
    """

    name: str
    version: str
    rootfs: Path
    kernel_ref: str | None
    sha256: str
    size: int
    metadata: Mapping[str, object] = field(default_factory=dict)
    digest: str | None = None


@dataclass(frozen=True)
class ImageIdentity:
    """What a reference names right now, found without downloading the image.

    Attributes:
        name: the image name a pull of the reference stores.
        digest: the digest a pull would record as :attr:`ImageArtifact.digest`.
    """

    name: str
    digest: str


@dataclass(frozen=True)
class ImageListing:
    """Something a source can provide, for ``banger image list --available``."""

    name: str
    description: str
    source: str


class ImageSourceDriver(Protocol):
    """What an image source does once constructed."""

    def claims(self, ref: str) -> bool:
        """True if this source can try to provide ``ref``."""

    def available(self) -> list[ImageListing]:
        """Images this source knows it can provide (may be empty)."""

    def pull(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Write the image for ``ref`` into the empty directory ``dest``.

        Raise :class:`SourceUnavailable` when the core should fall back to the
        next source, :class:`PublishedElsewhere` when ``ref`` is served at
        another reference; any other exception fails the pull. The core deletes
        ``dest`` on failure and moves it into place on success.
        """


@runtime_checkable
class SshdInstallingImageSource(Protocol):
    """An image source that can make an image without sshd install it at first boot (``image pull --with-sshd``)."""

    def pull_with_sshd(self, ref: str, dest: Path, progress: Progress) -> ImageArtifact:
        """Like :meth:`ImageSourceDriver.pull`; an image without openssh-server installs it at its first boot."""


@runtime_checkable
class IdentifyingImageSource(Protocol):
    """Optional for an image source: tell cheaply which image a reference names now.

    A source whose references can move (a registry tag) implements it so that
    pulling a reference again answers "already present" when the store holds
    the image it names; the core then neither downloads nor rebuilds anything.
    Sources without it are asked to :meth:`ImageSourceDriver.pull` again, as
    before (plain image names are answered from the store without asking).

    Example::

        def identify(self, ref, progress):
            return ImageIdentity(name="app-1", digest=registry.head_manifest(ref))
    """

    def identify(self, ref: str, progress: Progress) -> ImageIdentity:
        """The name and digest of ``ref`` now: at most one small request (an OCI manifest HEAD).

        Raise :class:`SourceUnavailable` when it cannot tell (the core then pulls as usual).
        """


@dataclass(frozen=True)
class ImageSource:
    """Registration of an image source (``catalog``, ``debootstrap``, ...).

    Attributes:
        name: normalized provider name.
        description: one line.
        factory: builds the driver; may import heavy modules (called lazily).
        priority: order in which the core asks sources that claim a ref
            (lower first), unless configured otherwise.
    """

    name: str
    description: str
    factory: Callable[[PluginContext], ImageSourceDriver]
    priority: int = 50

    def __post_init__(self) -> None:
        validate_provider_name("image source", self.name)


@dataclass(frozen=True)
class KernelArtifact:
    """A pulled kernel: ELF ``vmlinux`` plus banger's initramfs.

    Attributes:
        ref: kernel ref (``generic-6.1``).
        version: kernel release (``6.1.0-37-cloud-amd64``).
        vmlinux: ELF kernel image (what Firecracker needs; QEMU boots it too).
        initrd: banger's initramfs speaking :mod:`banger_hookspecs.boot`.
        boot_protocol: the boot protocol version the initramfs implements.
        sha256: digests of the files by file name.
        metadata: extra manifest fields.
    """

    ref: str
    version: str
    vmlinux: Path
    initrd: Path
    boot_protocol: int
    sha256: Mapping[str, str]
    metadata: Mapping[str, object] = field(default_factory=dict)


class KernelProviderDriver(Protocol):
    """What a kernel provider does once constructed."""

    def claims(self, ref: str) -> bool:
        """True if this provider can try to provide kernel ``ref``."""

    def pull(self, ref: str, dest: Path, progress: Progress) -> KernelArtifact:
        """Write ``vmlinux``, ``initrd`` and anything else into empty dir ``dest``."""


@dataclass(frozen=True)
class KernelProvider:
    """Registration of a kernel provider (``catalog``, ``debian``)."""

    name: str
    description: str
    factory: Callable[[PluginContext], KernelProviderDriver]
    priority: int = 50

    def __post_init__(self) -> None:
        validate_provider_name("kernel provider", self.name)


@dataclass(frozen=True)
class PublishedArtifact:
    """What an artifact publisher pushed.

    Attributes:
        reference: where it can be pulled from, pinned by digest (``REG/REPO@sha256:...``).
        digest: the digest of what was published (an OCI manifest's, for a registry).
        uploaded: bytes actually sent (blobs the destination already held are not sent again).
    """

    reference: str
    digest: str
    uploaded: int


class ArtifactPublisherDriver(Protocol):
    """What an artifact publisher does once constructed."""

    def claims(self, target: str) -> bool:
        """True if ``target`` (``REGISTRY/REPO:TAG``, a URL, ...) is a destination this publisher understands."""

    def publish(self, bundle: Path, manifest: BundleManifest, target: str, progress: Progress) -> PublishedArtifact:
        """Publish ``bundle`` (a verified bundle file, :mod:`banger_hookspecs.bundle`) at ``target``.

        ``manifest`` is the bundle's own manifest. Raise an exception whose message is one user
        sentence when the destination refuses it.
        """

    def fetch_document(self, reference: str, *, artifact_type: str, media_type: str, max_size: int) -> FetchedDocument:
        """Fetch the one ``media_type`` document of the ``artifact_type`` artifact at ``reference`` (claimed).

        What :attr:`PluginContext.fetch_document` routes to (a catalog.json stored in a registry).
        Refuse anything else, a document over ``max_size`` bytes, or one that does not match its
        digest; raise :class:`SourceUnavailable` when the location cannot be reached. Any other
        exception's message is one user sentence (the core turns it into :class:`DocumentRefused`).
        """


@dataclass(frozen=True)
class ArtifactPublisher:
    """Registration of an artifact publisher (``oci``: push image and kernel bundles to a registry)."""

    name: str
    description: str
    factory: Callable[[PluginContext], ArtifactPublisherDriver]
    priority: int = 50

    def __post_init__(self) -> None:
        validate_provider_name("artifact publisher", self.name)


# --------------------------------------------------------------------------
# Networking
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PortForward:
    """A host port forwarded to a guest port (usernet's ssh, and ports published with ``-p``)."""

    host_address: str
    host_port: int
    guest_port: int
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True)
class NicSpec:
    """How the VMM should attach the VM's NIC.

    ``kind == "tap"``: attach to the existing tap ``tap_name``.
    ``kind == "user"``: user-mode networking with ``forwards``. Unless
    ``host_access`` is True the guest must not reach the host's ``127.0.0.1``,
    which QEMU's NAT maps every address of the guest's subnet (``10.0.2.2``,
    ...) to with no per-destination filter: the VMM backend then uses passt
    with ``--no-map-gw`` when installed (egress, no host loopback), else QEMU's
    ``restrict=on`` (no connection at all). ``egress`` False asks for the
    latter even where passt is installed (config ``usernet_egress = false``:
    a guest that opens no connection at all). ``forwards`` reach the guest
    either way.
    """

    kind: Literal["tap", "user"]
    mac: str
    tap_name: str | None = None
    forwards: tuple[PortForward, ...] = ()
    host_access: bool = False
    egress: bool = True


@dataclass(frozen=True)
class GuestNetConfig:
    """Static IPv4 configuration the initramfs applies to eth0."""

    address: str
    prefix: int
    gateway: str
    dns: str


@dataclass(frozen=True)
class NicRequest:
    """What the core asks a network backend for when a VM starts.

    Attributes:
        vm_id: the VM's stable id (hex); tap names derive from it.
        vm_name: DNS label of the VM.
        mac: MAC address allocated by the core.
        guest_ip: IPv4 address allocated by the core from the configured CIDR.
        host_access: the user asked (``--host-access``) that the guest may
            reach the host's own services; only user-mode NICs honour it (a
            bridged guest never reaches the host's ``127.0.0.1``).
        published: ports the user published (``-p``): each listens on its
            ``host_address`` (always ``127.0.0.1``) and reaches the guest's
            ``guest_port``, however the backend carries it.
    """

    vm_id: str
    vm_name: str
    mac: str
    guest_ip: str
    host_access: bool = False
    published: tuple[PortForward, ...] = ()


@dataclass(frozen=True)
class NetAttachment:
    """A network backend's answer: the NIC, the guest's config, and how to reach ssh.

    Attributes:
        backend: network backend name.
        nic: NIC for the VMM.
        guest: guest-side IPv4 config (goes on the kernel command line).
        ssh_host: address the daemon connects to for the guest's sshd.
        ssh_port: port for that.
        dns_address: address ``<name>.vm`` should resolve to, or None when the
            guest is not directly reachable (user-mode networking).
        state: backend-private values to persist in ``handles.json``.
    """

    backend: str
    nic: NicSpec
    guest: GuestNetConfig
    ssh_host: str
    ssh_port: int
    dns_address: str | None
    state: Mapping[str, str] = field(default_factory=dict)


class NetworkDriver(Protocol):
    """What a network backend does once constructed."""

    def setup_host(self, progress: Progress) -> None:
        """Idempotently prepare the host (bridge, NAT).

        Called before the first VM that uses this backend starts, and at daemon
        start for the default backend.
        """

    def attach(self, request: NicRequest) -> NetAttachment:
        """Give one VM a NIC before its VMM launches."""

    def detach(self, attachment: NetAttachment) -> None:
        """Release what :meth:`attach` made (idempotent; called on stop and reconcile)."""

    def dns_link(self) -> tuple[str, str] | None:
        """``(link name, address)`` where the ``.vm`` DNS server should listen, if any."""


@dataclass(frozen=True)
class NetworkBackend:
    """Registration of a network backend (``bridge``, ``usernet``).

    Attributes:
        nic_kind: the kind of :class:`NicSpec` its ``attach`` returns.
    """

    name: str
    description: str
    factory: Callable[[PluginContext], NetworkDriver]
    nic_kind: Literal["tap", "user"] = "tap"

    def __post_init__(self) -> None:
        validate_provider_name("network backend", self.name)


class DnsRouterDriver(Protocol):
    """Makes the host's resolver send ``*.vm`` queries to banger's DNS server."""

    def detect(self) -> bool:
        """True if this router applies to this host (e.g. systemd-resolved runs)."""

    def route(self, link: str, server: str, domain: str) -> None:
        """Route ``~domain`` to ``server`` on ``link``."""

    def instructions(self, link: str, server: str, domain: str) -> str:
        """Human-readable description of what routing does or must be done by hand."""


@dataclass(frozen=True)
class DnsRouter:
    """Registration of a DNS router (``resolved``, ``manual``)."""

    name: str
    description: str
    factory: Callable[[PluginContext], DnsRouterDriver]
    priority: int = 50

    def __post_init__(self) -> None:
        validate_provider_name("dns router", self.name)


# --------------------------------------------------------------------------
# VMM
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """A block device for the guest, in the order the guest sees them (vda, vdb, ...)."""

    path: Path
    read_only: bool
    role: Literal["image", "overlay", "work"]


@dataclass(frozen=True)
class VmSpec:
    """Everything a VMM backend needs to launch one VM.

    Attributes:
        vm_id: stable hex id.
        name: VM name (DNS label).
        kernel: ELF vmlinux.
        initrd: banger initramfs.
        cmdline: kernel command line from the core; a backend may append its own
            arguments (``tsc_early_khz=``, ``reboot=``) but never drop these.
        disks: image (read-only), overlay, work, in this order.
        vcpus: virtual CPUs.
        memory_mib: memory.
        nic: the NIC, or None for no network.
        vsock_cid: guest CID for vsock, or None.
        run_dir: per-VM directory (0700) for sockets, pid files and config files.
        serial_log: file that receives the serial console; write it through
            :func:`banger_hookspecs.logpump.start_log_pump` so it stays capped.
    """

    vm_id: str
    name: str
    kernel: Path
    initrd: Path
    cmdline: str
    disks: tuple[Disk, ...]
    vcpus: int
    memory_mib: int
    nic: NicSpec | None
    vsock_cid: int | None
    run_dir: Path
    serial_log: Path


@dataclass(frozen=True)
class VmProcess:
    """A running VMM: enough to find it again after a daemon restart.

    Attributes:
        backend: backend name.
        pid: the VMM's pid.
        start_time: the process start time (field 22 of ``/proc/PID/stat``),
            so a recycled pid is never mistaken for the VM.
        control_socket: API/QMP socket path.
        extra: backend-private values (jail root, ...), persisted in handles.json.
    """

    backend: str
    pid: int
    start_time: int
    control_socket: str
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run VMs on this host, and how much ``auto`` wants it.

    Attributes:
        usable: the backend can launch VMs here.
        preference: ``auto`` picks the usable backend with the highest value.
        reason: one line (``"hardware KVM works"``, ``"firecracker not found"``).
        version: the VMM's version string, if found.
    """

    usable: bool
    preference: int
    reason: str
    version: str | None = None


class VmmDriver(Protocol):
    """What a VMM backend does once constructed."""

    def availability(self) -> Availability:
        """Probe the host: binary, version, acceleration."""

    def launch(self, spec: VmSpec, progress: Progress) -> VmProcess:
        """Start the VM and return once the VMM process runs the guest.

        Raises an exception with the log tail in its message when the VMM
        exits or refuses the configuration.
        """

    def is_running(self, proc: VmProcess) -> bool:
        """True only if ``proc`` is alive, is the same process, and its control socket answers."""

    def stop(self, proc: VmProcess, timeout: float) -> None:
        """Ask the guest to shut down; kill the VMM if still alive after ``timeout``."""

    def kill(self, proc: VmProcess) -> None:
        """Kill the VMM now and remove its sockets."""

    def log_tail(self, proc: VmProcess, lines: int = 20) -> str:
        """The last lines of the VMM's own log and of the serial console, for error messages.

        The core calls it when :meth:`is_running` turns False unexpectedly, to
        tell the user why the VM died. Empty when there is nothing to show.
        """


@runtime_checkable
class VmmSnapshots(Protocol):
    """What a VMM driver implements, beside :class:`VmmDriver`, to save and restore a paused guest (warm starts).

    The core checks ``isinstance(driver, VmmSnapshots)``; a backend without it always cold boots.
    """

    def snapshot_compat(self) -> str:
        """What a saved state depends on besides the spec (e.g. ``"qemu 7.2.0 microvm tcg"``).

        A template saved under another value is never restored.
        """

    def save_snapshot(self, proc: VmProcess, state_file: Path) -> None:
        """Pause the guest, write its whole state to ``state_file``, then stop the VMM.

        The disks must be flushed and untouched afterwards: the core copies them as the template's.
        """

    def restore(self, spec: VmSpec, state_file: Path, progress: Progress) -> VmProcess:
        """Start the VMM for ``spec`` from ``state_file`` and resume the guest; return once it runs.

        ``spec`` has the saved VM's devices; its disks are copies of the snapshot-time disks.
        """


@dataclass(frozen=True)
class VmmBackend:
    """Registration of a VMM backend (``firecracker``, ``qemu``).

    Attributes:
        nic_kinds: the :class:`NicSpec` kinds it can attach; ``auto`` only picks
            a backend that can attach the chosen network backend's NICs.
    """

    name: str
    description: str
    factory: Callable[[PluginContext], VmmDriver]
    nic_kinds: tuple[Literal["tap", "user"], ...] = ("tap", "user")

    def __post_init__(self) -> None:
        validate_provider_name("VMM backend", self.name)


# --------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestResult:
    """Exit status and captured output of a command run in the guest."""

    returncode: int
    stdout: bytes
    stderr: bytes


@runtime_checkable
class GuestShell(Protocol):
    """Runs commands in a guest over ssh; the core provides it.

    ``argv`` is quoted with :func:`shlex.quote` by the shell, never joined raw.
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
        stdout: IO[bytes] | None = None,
    ) -> GuestResult:
        """Run ``argv`` in the guest and wait for it, feeding ``stdin`` (bytes or a stream).

        With ``stdout`` (a binary file object with a file descriptor, e.g. a
        pipe's write end), the command's output goes there as it comes instead
        of into :attr:`GuestResult.stdout`, which is then empty: the caller
        can read it incrementally and stop at a size it chooses.
        """


@dataclass(frozen=True)
class WorkspaceOptions:
    """How to pick the files of a workspace.

    Attributes:
        include_untracked: also untracked files that are not ignored.
        ref: a branch, tag or commit whose tracked tree to ship instead of the
            working tree, or None.
    """

    include_untracked: bool = False
    ref: str | None = None


@dataclass(frozen=True)
class WorkspacePlan:
    """The exact files a sync would ship (relative POSIX paths, sorted).

    Attributes:
        root: the workspace directory on the host.
        files: what will be shipped, relative to ``root``.
        options: the options the plan was made with.
        total_bytes: the size of ``files`` together.
        warnings: user sentences about what was left out and why (a tracked
            file deleted in the working tree, a symlink leaving the tree);
            ``sync`` also reports them through ``Progress.log``.
        revision: the commit ``options.ref`` resolved to when planning, so
            ``sync`` ships exactly what was planned even if the ref moves.
    """

    root: Path
    files: tuple[str, ...]
    options: WorkspaceOptions
    total_bytes: int
    warnings: tuple[str, ...] = ()
    revision: str | None = None


class WorkspaceSyncerDriver(Protocol):
    """What a workspace syncer does once constructed."""

    def claims(self, path: Path) -> bool:
        """True if ``path`` is a workspace this syncer understands (a git repo)."""

    def plan(self, path: Path, options: WorkspaceOptions) -> WorkspacePlan:
        """List the files to ship; raises ``ValueError`` with a user sentence on bad input."""

    def sync(
        self, plan: WorkspacePlan, shell: GuestShell, guest_path: str, progress: Progress, *, incremental: bool
    ) -> int:
        """Ship ``plan`` to ``guest_path`` in the guest; return the number of files sent.

        With ``incremental``, send only files that differ and delete files
        that the plan no longer has.
        """


@runtime_checkable
class WorkspaceRoundTrip(Protocol):
    """What a syncer driver may add to bring work done in the guest back (optional).

    The core checks ``isinstance(driver, WorkspaceRoundTrip)``; a driver
    without these methods still syncs, and ``banger vm workspace pull|diff``
    then says the syncer cannot.
    """

    def pull(
        self, path: Path, shell: GuestShell, guest_path: str, branch: str, progress: Progress, *, force: bool
    ) -> str:
        """Bring the guest workspace's commits and uncommitted changes into ``path`` as branch ``branch``.

        Never touches the host repository's checked-out branch, index or
        working tree. Returns a one-line summary; raises ``ValueError`` with a
        user sentence when it refuses (nothing on the host is changed then).
        """

    def diff(self, path: Path, shell: GuestShell, guest_path: str, progress: Progress) -> bytes:
        """What changed in the guest workspace since it was shipped, as a patch (host unchanged)."""


@dataclass(frozen=True)
class WorkspaceSyncer:
    """Registration of a workspace syncer (``git``)."""

    name: str
    description: str
    factory: Callable[[PluginContext], WorkspaceSyncerDriver]

    def __post_init__(self) -> None:
        validate_provider_name("workspace syncer", self.name)


# --------------------------------------------------------------------------
# Lifecycle events
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VmInfo:
    """A snapshot of a VM record, passed to lifecycle hooks."""

    id: str
    name: str
    state: str
    image: str
    kernel: str
    backend: str
    network: str
    vcpus: int
    memory_mib: int
    guest_ip: str | None
