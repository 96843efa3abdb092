"""Spec resolution: a create request's effective values and where each came from."""

from __future__ import annotations

import shutil

from banger_core.api.models import PlanValues
from banger_core.api.requests import CreateRequest
from banger_core.common.backends import choose_backend
from banger_core.common.config import Config, format_size, parse_size
from banger_core.common.defaults import effective_defaults
from banger_core.common.errors import BangerError, Conflict, Unavailable
from banger_core.common.names import validate_image_name
from banger_core.daemon.images import Store
from banger_core.daemon.runtime import Runtime
from banger_core.daemon.vm import ports

MIN_DISK = 1 << 30
MAX_DISK = 2 << 40


def _config_source(config: Config, key: str) -> str:
    return "default" if config.sources.get(key) == "default" else "config"


def resolve(
    rt: Runtime, store: Store, req: CreateRequest, *, image_may_be_missing: bool = False
) -> tuple[PlanValues, dict[str, str]]:
    """Effective spec values and where each came from (flag, config, image, host heuristic).

    With ``image_may_be_missing`` (planning before an automatic pull) an
    image that is not pulled yet is fine and its kernel is reported as
    coming from the image once pulled.
    """
    config = rt.config
    defaults = effective_defaults(config.get("vm_defaults"), rt.ctx.host.cpus, rt.ctx.host.memory_mib)
    sources: dict[str, str] = {}

    def sized(key: str, flag: int | None) -> int:
        value, sources[key] = (flag, "flag") if flag is not None else defaults[key]
        return value

    vcpus = sized("vcpus", req.vcpus)
    memory_mib = sized("memory_mib", req.memory_mib)
    disk_size = sized("disk_size", parse_size(req.disk_size) if req.disk_size is not None else None)
    if not 1 <= vcpus <= 64:
        raise BangerError(f"vCPUs must be between 1 and 64, got {vcpus}")
    if not 128 <= memory_mib <= 1 << 20:
        raise BangerError(f"memory must be between 128 and 1048576 MiB, got {memory_mib}")
    if not MIN_DISK <= disk_size <= MAX_DISK:
        raise BangerError(
            f"disk size must be between 1G and 2T, got {format_size(disk_size)}: pass e.g. --disk-size 8G"
        )

    if req.image:
        image_name, sources["image"] = validate_image_name(req.image), "flag"
    else:
        image_name, sources["image"] = str(config["default_image"]), _config_source(config, "default_image")
    image = None
    if not image_may_be_missing or store.has_image(image_name):
        image = store.get_image(image_name)
    if req.kernel:
        kernel, sources["kernel"] = validate_image_name(req.kernel, "kernel"), "flag"
    elif config.get("default_kernel"):
        kernel, sources["kernel"] = str(config["default_kernel"]), "config"
    elif image is None:
        kernel, sources["kernel"] = "the image's", "known once pulled"
    elif image.kernel_ref:
        kernel, sources["kernel"] = image.kernel_ref, "image"
    else:
        raise BangerError(f"image {image.name} names no kernel: pass --kernel or set default_kernel")
    if image is not None:
        store.get_kernel(kernel)

    network = req.network or str(config["network_backend"])
    sources["network"] = "flag" if req.network else _config_source(config, "network_backend")
    rt.network(network)  # its settings (cidr for a bridge) are checked here, before anything exists
    host_access_value, sources["host_access"] = host_access(rt, req.host_access, network)

    backend, sources["backend"] = select_backend(rt, req.backend, network)
    if req.ports:
        udp_to_isolated_user_nic(rt, req, network, host_access_value)
        ports.check_bindable(req.ports)
        sources["ports"] = "flag"
    values = PlanValues(
        vcpus=vcpus,
        memory_mib=memory_mib,
        disk_size=disk_size,
        image=image_name,
        image_present=image is not None,
        kernel=kernel,
        network=network,
        host_access=host_access_value,
        backend=backend,
        ports=list(req.ports),
    )
    return values, sources


def host_access(rt: Runtime, requested: bool, network: str) -> tuple[bool, str]:
    """``--host-access``: honoured by user-mode NICs only, refused elsewhere rather than ignored."""
    if not requested:
        return False, "default"
    if nic_kind(rt, network) != "user":
        raise BangerError(
            f"--host-access only applies to user-mode networking (--network usernet): a {network} guest "
            "never reaches the host's 127.0.0.1"
        )
    return True, "flag"


def udp_to_isolated_user_nic(rt: Runtime, req: CreateRequest, network: str, host_access: bool) -> None:
    """Refuse a UDP port an isolated user-mode guest could never answer on.

    By :class:`~banger_hookspecs.NicSpec`'s rule an isolated user NIC runs on
    passt when it is installed and ``usernet_egress`` is on, else on QEMU's
    ``restrict=on``, which drops every UDP datagram the guest sends (replies to
    a forward included: libslirp's udp_input). The QEMU backend refuses it too,
    at start, for the case this cannot see (passt installed, no default route).
    """
    if host_access or nic_kind(rt, network) != "user" or not any(p.protocol == "udp" for p in req.ports):
        return
    if rt.config.get("usernet_egress", True) and shutil.which("passt") is not None:
        return
    raise BangerError(
        "UDP ports cannot reach an isolated usernet guest here (QEMU's restrict=on drops the guest's UDP "
        "replies): install passt (with usernet_egress = true), use --network bridge, or add --host-access"
    )


def select_backend(rt: Runtime, requested: str | None, network: str) -> tuple[str, str]:
    """``(backend, why)`` by the rule doctor shows (:func:`~banger_core.common.backends.choose_backend`)."""
    kind = nic_kind(rt, network)
    choice = choose_backend(
        rt.pm,
        network=network,
        nic_kind=kind,
        configured=str(rt.config["vmm_backend"]),
        requested=requested,
        availability=lambda name: rt.vmm(name).availability(),
    )
    if choice.explicit:
        # An unknown name fails here, listing the known ones.
        registration = rt.pm.vmm_backends().require(choice.explicit).value
        finding = choice.findings[0]
        if not finding.compatible:
            raise Conflict(
                f"VMM backend {choice.explicit} cannot attach {network} NICs ({kind}): "
                f"use --network with a {'/'.join(registration.nic_kinds)} backend (e.g. --network bridge)"
            )
        if not finding.usable:
            raise Unavailable(f"VMM backend {choice.explicit} cannot run VMs here: {finding.reason}")
        return choice.explicit, choice.why
    chosen = choice.chosen
    if chosen is None:
        raise Unavailable(
            f"no VMM backend can run VMs here with network {network} ({choice.reasons()}): see `banger doctor`"
        )
    return chosen.name, choice.why


def nic_kind(rt: Runtime, network: str) -> str:
    """The kind of NIC (``tap`` or ``user``) network backend ``network`` gives a VM."""
    return str(rt.pm.network_backends().require(network).value.nic_kind)
