"""``banger kernel``: the local kernel store (vmlinux + banger's initramfs)."""

from __future__ import annotations

from pathlib import Path

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.common import get_client
from banger_core.cli.completion import complete_kernel_providers, complete_kernels
from banger_core.cli.output import print_models, table
from banger_core.cli.progress import ProgressPrinter


@click.group(name="kernel")
def cli() -> None:
    """Pull, list, delete, export and push kernels (an image names the kernel it boots with)."""


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def list_kernels(app: App, as_json: bool) -> None:
    """List pulled kernels."""
    kernels = get_client(app).kernels.list()
    if as_json:
        print_models(kernels)
        return
    if not kernels:
        click.echo("no kernels: `banger kernel pull generic-6.1` (image pulls get theirs automatically)")
        return
    rows = [(k.ref, k.provider, k.version, k.boot_protocol, k.created_at.isoformat()[:19]) for k in kernels]
    click.echo(table(["REF", "PROVIDER", "VERSION", "BOOT PROTOCOL", "CREATED"], rows))


@cli.command(name="pull")
@click.argument("ref")
@click.option(
    "--provider", shell_complete=complete_kernel_providers, help="Use only this kernel provider (catalog, debian, ...)."
)
@click.option("--force", is_flag=True, help="Pull again even if present.")
@pass_app
def pull(app: App, ref: str, provider: str | None, force: bool) -> None:
    """Get kernel REF (e.g. generic-6.1)."""
    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    kernel = get_client(app).kernels.pull(ref, provider=provider, force=force, progress=printer)
    printer.done()
    how = f"from {kernel.used_source}" if kernel.pulled else "already present"
    click.echo(f"{kernel.ref}: {how} ({kernel.version})")


@cli.command(name="delete")
@click.argument("ref", shell_complete=complete_kernels)
@pass_app
def delete(app: App, ref: str) -> None:
    """Delete a pulled kernel (refused while VMs use it)."""
    get_client(app).kernels.delete(ref)
    click.echo(f"{ref} deleted")


@cli.command(name="export")
@click.argument("ref", shell_complete=complete_kernels)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Bundle file (default: REF.tar.zst)."
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@pass_app
def export(app: App, ref: str, output: Path | None, force: bool) -> None:
    """Write kernel REF as a tar+zstd bundle (what catalogs serve; see docs/bundles.md)."""
    from banger_core.cli.image_cmd import export_bundle

    kernels = {k.ref: k for k in get_client(app).kernels.list()}
    if ref not in kernels:
        from banger_core.common.errors import NotFound

        raise NotFound(f"kernel {ref!r} is not pulled: run `banger kernel pull {ref}`")
    export_bundle(app, "kernel", Path(kernels[ref].path), output or Path(f"{ref}.tar.zst"), force)


@cli.command(name="push")
@click.argument("ref", shell_complete=complete_kernels)
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print what was pushed as JSON.")
@pass_app
def push(app: App, ref: str, target: str, as_json: bool) -> None:
    """Publish kernel REF at TARGET (REGISTRY/REPO:TAG) as banger's OCI artifact.

    Prints the pinned reference (REGISTRY/REPO@sha256:...) last; `banger kernel
    pull` of it gets exactly this kernel, under its ref.
    """
    from banger_core.cli.image_cmd import report_push

    printer = ProgressPrinter(app.verbose, quiet=app.quiet or as_json)
    pushed = get_client(app).kernels.push(ref, target, progress=printer)
    printer.done()
    report_push(app, pushed, as_json)
