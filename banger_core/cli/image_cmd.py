"""``banger image``: the local image store (pulled through image source plugins)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.common import get_client
from banger_core.cli.completion import complete_image_sources, complete_images
from banger_core.cli.output import print_models, table
from banger_core.cli.progress import ProgressPrinter
from banger_core.common.config import format_size
from banger_core.common.errors import BangerError

if TYPE_CHECKING:
    from banger_core.api.models import Pushed


@click.group(name="image")
def cli() -> None:
    """Pull, list, delete, export and push images (root filesystems VMs boot from)."""


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
@click.option(
    "--with-sshd",
    is_flag=True,
    help="An OCI image without openssh-server installs it with its own package manager at first boot "
    "(the VM needs network; docs/oci-import.md).",
)
@click.option(
    "--kernel-ref",
    metavar="KERNEL",
    help="Boot the image with this kernel instead of the one its source names (OCI images: generic-6.1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the image as JSON when done.")
@pass_app
def pull(
    app: App, ref: str, source: str | None, force: bool, with_sshd: bool, kernel_ref: str | None, as_json: bool
) -> None:
    """Get image REF and its kernel: from the catalog when reachable, else built locally.

    REF is a name (debian-bookworm) or an OCI reference (alpine:3.20,
    ghcr.io/org/app:1, 127.0.0.1:5000/team/base@sha256:...). The first pull of
    debian-bookworm without a reachable catalog builds it with debootstrap (a
    few minutes); later pulls are instant. Pulling a registry tag again asks
    the registry for its digest only, and pulls again when the tag moved.
    """
    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    image = get_client(app).images.pull(
        ref, source=source, force=force, with_sshd=with_sshd, kernel_ref=kernel_ref, progress=printer
    )
    printer.done()
    if as_json:
        print_models(image)
        return
    how = f"from {image.used_source}" if image.pulled else "already present"
    click.echo(f"{image.name}: {how} ({format_size(image.size)}, kernel {image.kernel_ref or '-'})")


@cli.command(name="register")
@click.option("--name", required=True, help="Name of the new image (refused if an image has it).")
@click.option(
    "--rootfs",
    required=True,
    metavar="/ABS/PATH",
    help="Absolute path of an ext4 file system image (a regular file, cleanly unmounted, not open for writing).",
)
@click.option("--kernel-ref", metavar="KERNEL", help="Kernel it boots with (default: generic-6.1, pulled if missing).")
@click.option("--json", "as_json", is_flag=True, help="Print the image as JSON when done.")
@pass_app
def register(app: App, name: str, rootfs: str, kernel_ref: str | None, as_json: bool) -> None:
    """Adopt an ext4 root filesystem you already have (--rootfs) as a new image (--name).

    The file is checked (regular file, ext4, cleanly unmounted, not open for
    writing), hard-linked into banger's store when it is on the same file
    system (else copied, holes kept), and never modified. A hard link is the
    same file: do not write to it while VMs use the image (copy it first if you
    keep editing it). banger does not change it, so it must already boot as a
    banger image (one banger built or exported). Then it boots like any other:

    \b
        banger image register --name base --rootfs /srv/images/base.ext4
        banger vm run --image base
    """
    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    image = get_client(app).images.register(name, rootfs, kernel_ref=kernel_ref, progress=printer)
    printer.done()
    if as_json:
        print_models(image)
        return
    click.echo(f"{image.name}: registered from {rootfs} ({format_size(image.size)}, kernel {image.kernel_ref or '-'})")


@cli.command(name="show")
@click.argument("name", shell_complete=complete_images)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def show(app: App, name: str, as_json: bool) -> None:
    """Show one image: where it came from (reference, digest), its kernel, its file."""
    image = get_client(app).images.get(name)
    if as_json:
        print_models(image)
        return
    fields: list[tuple[str, object]] = [
        ("name", image.name),
        ("source", image.source),
        ("reference", image.reference),
        ("digest", image.digest),
    ]
    # A tag naming an image index resolves to the index; the linux/amd64 manifest under it is another digest.
    manifest_digest = image.meta.get("manifest_digest")
    if manifest_digest is not None and manifest_digest != image.digest:
        fields.append(("manifest digest", manifest_digest))
    fields += [
        ("kernel", image.kernel_ref),
        ("version", image.version),
        ("size", format_size(image.size)),
        ("sha256", image.sha256),
        ("created", image.created_at.isoformat()[:19]),
        ("path", image.path),
    ]
    width = max(len(key) for key, _ in fields)
    for key, value in fields:
        click.echo(f"{key:<{width}}  {value if value is not None else '-'}")


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


@cli.command(name="push")
@click.argument("name", shell_complete=complete_images)
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print what was pushed as JSON.")
@pass_app
def push(app: App, name: str, target: str, as_json: bool) -> None:
    """Publish image NAME at TARGET (REGISTRY/REPO:TAG) as banger's OCI artifact.

    Prints the pinned reference (REGISTRY/REPO@sha256:...) last: `banger image
    pull` of it, or a catalog entry naming it, gets exactly this image.
    """
    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    pushed = get_client(app).images.push(name, target, progress=printer)
    printer.done()
    report_push(app, pushed, as_json)


def report_push(app: App, pushed: Pushed, as_json: bool) -> None:
    """What ``image push`` and ``kernel push`` print: a summary line, then the reference to pin."""
    if as_json:
        print_models(pushed)
        return
    if not app.quiet:
        sent = f"{pushed.uploaded} bytes" if pushed.uploaded else "nothing new"
        click.echo(
            f"{pushed.kind} {pushed.name} pushed to {pushed.target} (bundle {pushed.bundle_size} bytes, {sent} sent)"
        )
    click.echo(pushed.reference)
