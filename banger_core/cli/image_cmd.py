"""``banger image``: the local image store (pulled through image source plugins)."""

from __future__ import annotations

from pathlib import Path

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.common import get_client
from banger_core.cli.completion import complete_image_sources, complete_images
from banger_core.cli.output import print_models, table
from banger_core.cli.progress import ProgressPrinter
from banger_core.common.config import format_size
from banger_core.common.errors import BangerError


@click.group(name="image")
def cli() -> None:
    """Pull, list and delete images (root filesystems VMs boot from)."""


@cli.command(name="list")
@click.option("--available", is_flag=True, help="What the image sources can provide, instead of what is pulled.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def list_images(app: App, available: bool, as_json: bool) -> None:
    """List pulled images (or, with --available, what can be pulled)."""
    client = get_client(app)
    if available:
        offered = client.images.available()
        if as_json:
            print_models(offered)
        else:
            click.echo(table(["NAME", "SOURCE", "DESCRIPTION"], [(i.name, i.source, i.description) for i in offered]))
        return
    images = client.images.list()
    if as_json:
        print_models(images)
        return
    if not images:
        click.echo("no images: `banger image pull debian-bookworm` gets the default one")
        return
    rows = [
        (
            i.name,
            i.source,
            i.version[:16],
            i.kernel_ref or "-",
            format_size(i.size),
            i.created_at.isoformat()[:19],
        )
        for i in images
    ]
    click.echo(table(["NAME", "SOURCE", "VERSION", "KERNEL", "SIZE", "CREATED"], rows))


@cli.command(name="pull")
@click.argument("ref")
@click.option(
    "--source", shell_complete=complete_image_sources, help="Use only this image source (catalog, debootstrap, ...)."
)
@click.option("--force", is_flag=True, help="Pull again even if the image is present.")
@click.option("--json", "as_json", is_flag=True, help="Print the image as JSON when done.")
@pass_app
def pull(app: App, ref: str, source: str | None, force: bool, as_json: bool) -> None:
    """Get image REF and its kernel: from the catalog when reachable, else built locally.

    The first pull of debian-bookworm without a reachable catalog builds it
    with debootstrap (a few minutes); later pulls are instant.
    """
    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    image = get_client(app).images.pull(ref, source=source, force=force, progress=printer)
    printer.done()
    if as_json:
        print_models(image)
        return
    how = f"from {image.used_source}" if image.pulled else "already present"
    click.echo(f"{image.name}: {how} ({format_size(image.size)}, kernel {image.kernel_ref or '-'})")


@cli.command(name="delete")
@click.argument("name", shell_complete=complete_images)
@pass_app
def delete(app: App, name: str) -> None:
    """Delete a pulled image (refused while VMs use it)."""
    get_client(app).images.delete(name)
    click.echo(f"{name} deleted")


@cli.command(name="warm")
@click.argument("name", shell_complete=complete_images)
@click.option("--rm", "remove", is_flag=True, help="Delete the image's warm templates instead.")
@pass_app
def warm(app: App, name: str, remove: bool) -> None:
    """Save a booted, paused VM of image NAME: new VMs of the default size then restore it (docs/warm-start.md).

    `vm run --cold` still boots the kernel. Templates are remade when the image, kernel or QEMU changes.
    """
    client = get_client(app)
    if remove:
        removed = client.images.unwarm(name)
        click.echo(f"{name}: {removed.removed} warm template{'s' if removed.removed != 1 else ''} deleted")
        return
    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    template = client.images.warm(name, progress=printer)
    printer.done()
    click.echo(
        f"{name}: warm template saved ({template.vcpus} vCPUs, {template.memory_mib} MiB, "
        f"{template.backend} on {template.network}, {template.vmm})"
    )


@cli.command(name="export")
@click.argument("name", shell_complete=complete_images)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Bundle file (default: NAME.tar.zst)."
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@pass_app
def export(app: App, name: str, output: Path | None, force: bool) -> None:
    """Write image NAME as a tar+zstd bundle (what catalogs serve; see docs/bundles.md)."""
    export_bundle(
        app, "image", Path(get_client(app).images.get(name).path).parent, output or Path(f"{name}.tar.zst"), force
    )


def export_bundle(app: App, kind: str, source: Path, output: Path, force: bool) -> None:
    from banger_core.api.events import EventSink
    from banger_core.common.bundles import write_bundle

    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    try:
        info = write_bundle(kind, source, output, EventSink(printer), overwrite=force)  # type: ignore[arg-type]
    except Exception as exc:
        printer.done()
        raise BangerError(str(exc)) from exc
    printer.done()
    click.echo(f"{info.path}: {format_size(info.size)}, sha256 {info.sha256}")
