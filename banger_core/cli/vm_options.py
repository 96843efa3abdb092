"""Options and argument parsing shared by `vm create`, `vm run` and `vm ssh`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar, cast

import click

from banger_core.cli.completion import complete_backends, complete_images, complete_kernels, complete_networks

if TYPE_CHECKING:
    from banger_core.api.ports import PortMapping
    from banger_core.api.requests import VmOptions

F = TypeVar("F", bound=Callable[..., object])


class CommandAfterDashes(click.Command):
    """Everything after the first ``--`` is the guest command, untouched by option parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["banger.command"] = args[cut + 1 :]
            args = args[:cut]
        else:
            ctx.meta["banger.command"] = []
        return super().parse_args(ctx, args)


class SizeParam(click.ParamType[int, object]):
    """A size option parsed by the CLI itself, so a bad value fails before any request.

    ``--disk-size`` is in bytes unless a unit is given (16G); ``--memory`` in
    MiB unless a unit is given (2048 or 2G) and is passed on as whole MiB.
    """

    def __init__(self, name: str, default_unit: str) -> None:
        self.name = name
        self.default_unit = default_unit

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from banger_core.common.config import parse_size

        try:
            size = parse_size(value, default_unit=self.default_unit)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.default_unit == "m":
            if size < 1 << 20:
                self.fail(f"{value} is less than 1 MiB", param, ctx)
            return size >> 20
        return size


class PublishParam(click.ParamType[object, object]):
    """``-p HOST:GUEST[/udp]`` or ``-p GUEST``, parsed here so a bad spec fails before any request."""

    name = "HOST:GUEST"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        from banger_core.api.ports import parse_publish

        try:
            return parse_publish(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DISK_SIZE = SizeParam("size", default_unit="")
MEMORY = SizeParam("memory", default_unit="m")


def create_options(fn: F) -> F:
    """The VM spec flags shared by `vm create` and `vm run`."""
    options = [
        click.option("--name", help="VM name (a DNS label); default: a generated adjective-noun."),
        click.option(
            "--image",
            shell_complete=complete_images,
            help="Image to boot (default: config default_image, debian-bookworm).",
        ),
        click.option("--kernel", shell_complete=complete_kernels, help="Kernel ref (default: the image's own)."),
        click.option(
            "--backend", shell_complete=complete_backends, help="VMM backend: firecracker, qemu (default: auto)."
        ),
        click.option(
            "--network",
            shell_complete=complete_networks,
            help="Network backend: usernet, bridge (default: config network_backend).",
        ),
        click.option("--vcpu", "vcpus", type=click.IntRange(1, 64), help="Virtual CPUs."),
        click.option("--memory", "memory_mib", type=MEMORY, help="Memory: MiB (2048) or a size (2G)."),
        click.option("--disk-size", type=DISK_SIZE, help="Writable disk size, e.g. 16G."),
        click.option(
            "-p",
            "--publish",
            "ports",
            type=PublishParam(),
            multiple=True,
            help="Publish a guest port on the host's 127.0.0.1: HOST:GUEST (8080:80), GUEST (a free host port "
            "is picked; `banger vm port NAME` shows it), /udp for UDP (5353:53/udp). Repeatable.",
        ),
        click.option(
            "--host-access",
            is_flag=True,
            help="usernet: let the guest open connections, including to services on the host's 127.0.0.1 "
            "(as 10.0.2.2). Off by default: the guest is isolated.",
        ),
        click.option(
            "--cold",
            is_flag=True,
            help="Boot the kernel even when a warm template of the image matches (see `banger image warm`).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def spec_body(values: Mapping[str, object]) -> VmOptions:
    """The values of :func:`create_options` as the SDK's spec keywords (click has checked their types)."""
    from banger_core.api.requests import VmOptions

    spec = {key: values.get(key) for key in VmOptions.__annotations__}
    spec["host_access"] = bool(values.get("host_access"))
    spec["cold"] = bool(values.get("cold"))
    spec["ports"] = list(cast("tuple[PortMapping, ...]", values.get("ports") or ()))
    return cast("VmOptions", spec)
