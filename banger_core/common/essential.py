"""The core's own hook implementations, registered even with ``BANGER_NO_PLUGINS=1``.

It declares the core's config keys, the ``manual`` DNS router (always
applicable: it only explains) and the doctor rows about banger's own needs.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable

from banger_core.common.config import ConfigError
from banger_core.common.defaults import effective_defaults
from banger_core.common.webaddr import web_listen
from banger_core.common.weblogin import token_path
from banger_hookspecs import (
    CheckResult,
    ConfigOption,
    DnsRouter,
    DoctorCheck,
    PluginContext,
    hookimpl,
)

VM_DEFAULT_FIELDS = (
    ConfigOption("vcpu", "int", help="virtual CPUs (default: a quarter of the host's CPUs, 2 to 4)"),
    ConfigOption("memory_mib", "int", help="memory in MiB (default: an eighth of the host's memory, 512 MiB to 8 GiB)"),
    ConfigOption("disk_size", "size", help="writable disk size, e.g. 16G (default 8G)"),
)
FILE_SYNC_FIELDS = (
    ConfigOption("host", "str", required=True, help="file or directory under your home"),
    ConfigOption("guest", "str", required=True, help="destination under ~/ or /root/"),
    ConfigOption("mode", "str", help="octal file mode, e.g. 0644 (default 0600)"),
)


@hookimpl
def banger_config_options() -> Iterable[ConfigOption]:
    return [
        ConfigOption(
            "state_dir", "path", help="Where images, kernels, VM disks and the database live (read at daemon start)."
        ),
        ConfigOption("cache_dir", "path", help="Where downloads and build caches go."),
        ConfigOption(
            "runtime_dir", "path", help="Where the daemon's socket and the per-VM sockets live (read at daemon start)."
        ),
        ConfigOption(
            "ssh_key_path",
            "path",
            help="Private key banger uses to ssh into VMs (its .pub goes into each new VM); made with ssh-keygen "
            "when missing. Unset: a key of banger's own under state_dir/ssh.",
        ),
        ConfigOption(
            "sigstore_trusted_root",
            "path",
            help="A Sigstore trusted_root.json to verify release and catalog signatures against, for forks and "
            "tests. Unset: the Sigstore public-good root pinned in banger.",
        ),
        ConfigOption(
            "default_image",
            "str",
            "debian-bookworm",
            help="Image new VMs boot when no --image is given; pulled on first use "
            "(`banger image list --available` lists them).",
        ),
        ConfigOption(
            "default_kernel", "str", help="Kernel new VMs boot when no --kernel is given (unset: the image's own)."
        ),
        ConfigOption(
            "vmm_backend",
            "str",
            "auto",
            help="VMM backend for new VMs: auto (the best one usable here, see `banger doctor`) or a backend name.",
        ),
        ConfigOption(
            "network_backend", "str", "usernet", help="Network for new VMs: usernet (no root) or bridge (root)."
        ),
        ConfigOption("dns_router", "str", "auto", help="How the host resolves *.vm names: auto or a DNS router name."),
        ConfigOption(
            "cidr", "str", "172.16.0.0/24", help="IPv4 subnet bridge-network guests get their addresses from."
        ),
        ConfigOption(
            "bridge_ip", "str", "172.16.0.1", help="The host's address in cidr: the bridge guests' gateway and DNS."
        ),
        ConfigOption("dns_port", "int", 53, help="Port of banger's .vm DNS server on bridge_ip."),
        ConfigOption(
            "dns_loopback_port", "int", help="Also serve .vm names on 127.0.0.1 at this port (tests, debugging)."
        ),
        ConfigOption(
            "ssh_ready_timeout",
            "int",
            300,
            help="Seconds a booting VM gets to answer on ssh before it is called failed.",
        ),
        ConfigOption(
            "warm_auto",
            "bool",
            True,
            help="Save a warm-start template of an image after its first cold boot, so later VMs restore it.",
        ),
        ConfigOption(
            "vm_defaults", "table", fields=VM_DEFAULT_FIELDS, help="Sizes of new VMs when no flag gives them."
        ),
        ConfigOption(
            "file_sync",
            "list[table]",
            fields=FILE_SYNC_FIELDS,
            help="Files and directories from your home copied into every new VM (e.g. ~/.gitconfig).",
        ),
        ConfigOption(
            "web_listen_addr",
            "str",
            help='Serve the web UI at IP:PORT, e.g. "127.0.0.1:7777" (unset: no web UI).',
        ),
        ConfigOption(
            "web_allow_remote",
            "bool",
            False,
            help="Allow a web_listen_addr that is not loopback (the UI always needs a login).",
        ),
        ConfigOption(
            "log_level", "str", "info", choices=("debug", "info", "warning", "error"), help="The daemon's log level."
        ),
    ]


class ManualDnsRouter:
    """Changes nothing on the host; explains how to route ``*.vm`` by hand."""

    def detect(self) -> bool:
        return True

    def route(self, link: str, server: str, domain: str) -> None:
        return None

    def instructions(self, link: str, server: str, domain: str) -> str:
        return (
            f"banger does not change your resolver on this host. To resolve *.{domain} names, "
            f"send queries for {domain} to {server} (see docs/dns-routing.md), e.g. with dnsmasq: "
            f"server=/{domain}/{server}"
        )


@hookimpl
def banger_dns_routers() -> Iterable[DnsRouter]:
    return [
        DnsRouter(
            name="manual",
            description="changes nothing; prints how to route *.vm by hand",
            factory=lambda ctx: ManualDnsRouter(),
            priority=100,
        )
    ]


def _core_checks(ctx: PluginContext) -> Iterable[CheckResult]:
    version = ".".join(map(str, sys.version_info[:3]))
    yield CheckResult("python", "ok", f"Python {version}")
    for tool, package in (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        found = shutil.which(tool)
        yield CheckResult(
            tool,
            "ok" if found else "fail",
            f"{tool} at {found}" if found else f"{tool} not found",
            hint=None if found else f"install it: apt-get install {package}",
            blocks_vm_run=not found,
        )
    mkfs = shutil.which("mkfs.ext4") or ("/usr/sbin/mkfs.ext4" if os.path.exists("/usr/sbin/mkfs.ext4") else None)
    yield CheckResult(
        "mkfs.ext4",
        "ok" if mkfs else "fail",
        f"mkfs.ext4 at {mkfs}" if mkfs else "mkfs.ext4 not found (needed for VM disks)",
        hint=None if mkfs else "install it: apt-get install e2fsprogs",
        blocks_vm_run=not mkfs,
    )
    kvm_status = {"hardware": "ok", "software": "warn", "unusable": "warn", "absent": "warn"}[ctx.host.kvm]
    yield CheckResult(
        "kvm",
        kvm_status,  # type: ignore[arg-type]
        ctx.host.kvm_detail,
        hint=None if ctx.host.kvm == "hardware" else "VMs still run under QEMU TCG emulation, much slower",
    )
    defaults = effective_defaults(ctx.config.get("vm_defaults"), ctx.host.cpus, ctx.host.memory_mib)
    vcpus, memory, disk = defaults["vcpus"], defaults["memory_mib"], defaults["disk_size"]
    yield CheckResult(
        "vm-defaults",
        "info",
        f"new VMs get {vcpus[0]} vCPU ({vcpus[1]}), {memory[0]} MiB RAM ({memory[1]}), "
        f"{disk[0] >> 30} GiB disk ({disk[1]}); host: {ctx.host.cpus} CPUs, {ctx.host.memory_mib} MiB",
        hint="set [vm_defaults] vcpu, memory_mib, disk_size in config.toml, or pass --vcpu/--memory/--disk-size",
    )
    state = ctx.state_dir
    probe = state
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    writable = os.access(probe, os.W_OK)
    yield CheckResult(
        "state-dir",
        "ok" if writable else "fail",
        f"{state} is writable" if writable else f"{state} is not writable",
        hint=None if writable else f"fix the permissions of {probe} or set state_dir in config.toml",
        blocks_vm_run=not writable,
    )
    yield _web_ui_check(ctx)


def _web_ui_check(ctx: PluginContext) -> CheckResult:
    try:
        listen = web_listen(ctx.config)
    except ConfigError as exc:
        return CheckResult("web-ui", "fail", f"not served: {exc}", hint="fix web_listen_addr in config.toml")
    if listen is None:
        return CheckResult("web-ui", "info", 'off (set web_listen_addr = "127.0.0.1:7777" to turn it on)')
    return CheckResult(
        "web-ui",
        "ok",
        f"bangerd serves it at {listen.url}; log in with `banger web --open` (or the token in "
        f"{token_path(ctx.runtime_dir)})",
        hint="`banger daemon status` says whether it started",
    )


@hookimpl
def banger_doctor_checks() -> Iterable[DoctorCheck]:
    return [DoctorCheck(name="core", run=_core_checks)]
