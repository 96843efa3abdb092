"""``banger vm run``: the one command — a fresh VM, your repo inside, your command's exit code."""

from __future__ import annotations

import os
import posixpath
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from banger_core.api.state import VmState
from banger_core.cli.app import App
from banger_core.cli.common import get_client, ssh_target
from banger_core.cli.completion import complete_vms
from banger_core.cli.progress import ProgressPrinter
from banger_core.cli.vm_options import CommandAfterDashes, create_options, spec_body
from banger_core.common.errors import BangerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from banger_core.api.events import ProgressUpdate
    from banger_core.api.models import AgentTargetView, RunPlan, VmView
    from banger_core.client import Client
    from banger_core.common.ssh import SshTarget
    from banger_hookspecs import WorkspacePlan, WorkspaceSyncerDriver

    #: The syncer that claimed a workspace and its plan (the files to ship).
    Workspace = tuple[WorkspaceSyncerDriver, WorkspacePlan]

if TYPE_CHECKING:
    from banger_core.client import Client

TOOLING_LOG = "/root/.cache/banger/vm-run-tooling-{repo}.log"
MISE_FILES = (".mise.toml", "mise.toml", ".tool-versions")
#: Seconds to wait for the ssh call that starts `mise install` (it returns once mise is in the background).
TOOLING_START_TIMEOUT = 60.0


def pull_missing_image(client: Client, plan: RunPlan, printer: ProgressPrinter) -> None:
    """Pull the image a create with ``plan`` boots when the store lacks it (as `docker run`/`create` do)."""
    if not plan.values.image_present:
        client.images.pull(plan.values.image, progress=printer)
        printer.done()


def guest_workdir(guest_path: str | None, repo: Path) -> str:
    """``/root/<repo>`` by default; ``~/x`` means ``/root/x``; must be absolute and normalized."""
    path = guest_path or f"/root/{repo.resolve().name}"
    if path == "~" or path.startswith("~/"):
        path = "/root" + path[1:]
    normalized = posixpath.normpath(path)
    if not normalized.startswith("/") or normalized in ("/", "/root") or "\0" in normalized:
        raise BangerError(f"--guest-path {guest_path!r} must be an absolute directory such as /root/src")
    return normalized


def remote_command(command: list[str], workdir: str | None) -> list[str]:
    """Run ``command`` in ``workdir``; `; exit $?` keeps the shell waiting so a signal death reads 128+n."""
    script = shlex.join(command) + "; exit $?"
    if workdir:
        script = f"cd {shlex.quote(workdir)} && {script}"
    return ["sh", "-c", script]


@click.command(name="run", cls=CommandAfterDashes)
@click.argument("path", required=False, type=click.Path(file_okay=False, path_type=Path))
@create_options
@click.option("--rm", "remove", is_flag=True, help="Delete the VM when the session or command ends (even on Ctrl-C).")
@click.option("--guest-path", help="Where the workspace goes in the guest (default /root/<repo-name>).")
@click.option("--include-untracked", is_flag=True, help="Also copy untracked files that git does not ignore.")
@click.option("--branch", help="Ship this branch's tracked tree instead of the working tree.")
@click.option("--from", "from_ref", metavar="REF", help="Ship this commit/tag's tracked tree instead.")
@click.option("--dry-run", is_flag=True, help="Print the files that would be copied (or the spec) and stop.")
@click.option(
    "--pull-back",
    is_flag=True,
    help="After the session or command, bring the guest's commits and changes back as branch banger/NAME.",
)
@click.pass_context
def cli(ctx: click.Context, /, path: Path | None, remove: bool, guest_path: str | None, include_untracked: bool,
        branch: str | None, from_ref: str | None, dry_run: bool, pull_back: bool, **spec: object) -> None:  # fmt: skip
    """Boot a fresh VM, optionally copy a repo in, then open a shell or run a command.

    \b
      banger vm run                          a shell in a new VM (left running afterwards)
      banger vm run ./repo                   ... with the repo's git-tracked files at /root/repo
      banger vm run ./repo -- make test      run a command there; exits with its status
      banger vm run --rm -- ./script.sh      ... and delete the VM afterwards

    The first run pulls the default image and kernel (from the catalog, or built
    locally). With a command, its stdout/stderr stream through and its exit
    status is banger's (a signal n reads as 128+n). A VM that fails to boot is
    kept so `banger vm logs NAME` can show why.
    """
    app: App = ctx.ensure_object(App)
    command: list[str] = ctx.meta.get("banger.command", [])
    if branch and from_ref:
        raise click.UsageError("--branch and --from both pick a ref: use one")
    if pull_back and path is None:
        raise click.UsageError("--pull-back brings a workspace back: pass the repository PATH too")
    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    workspace = _plan_workspace(app, path, include_untracked, branch or from_ref) if path else None
    if dry_run:
        if workspace is None:
            from banger_core.api.models import spec_line

            click.echo(spec_line(get_client(app).vms.plan(**spec_body(spec))))
            return
        _, plan = workspace
        for name in plan.files:
            click.echo(name)
        for warning in plan.warnings:
            click.echo(f"skipped: {warning}", err=True)
        click.echo(f"{len(plan.files)} files, {plan.total_bytes} bytes (dry run: nothing created)", err=True)
        return
    workdir = guest_workdir(guest_path, path) if path else None

    from banger_core.api.events import CreatedEvent, SpecEvent

    client = get_client(app)
    body = spec_body(spec)
    planned = client.vms.plan(**body)
    printer(SpecEvent(plan=planned))
    pull_missing_image(client, planned, printer)
    name_holder: dict[str, str] = {}

    def progress(event: ProgressUpdate) -> None:
        if isinstance(event, CreatedEvent):
            name_holder["name"] = event.name
        if not isinstance(event, SpecEvent):  # shown already, from the plan
            printer(event)

    try:
        if remove:
            with client.vms.ephemeral(progress=progress, **body) as vm:
                printer.done()
                code = _session(app, client, vm, workspace, workdir, command, printer)
                if pull_back:
                    code = _pull_back(app, client, vm.name, workspace, workdir, code)
            _wait_deleted(client, vm.name)
        else:
            vm = client.vms.create(progress=progress, **body)
            printer.done()
            code = _session(app, client, vm, workspace, workdir, command, printer)
            if pull_back:
                code = _pull_back(app, client, vm.name, workspace, workdir, code)
            click.echo(
                f"banger: {vm.name} keeps running: `banger vm ssh {vm.name}` to get back, "
                f"`banger vm delete --force {vm.name}` to remove it",
                err=True,
            )
    except KeyboardInterrupt:
        # Only reachable while the VM is being made (the session itself leaves
        # Ctrl-C to ssh): dropping the stream makes the daemon undo the create.
        printer.done()
        created = name_holder.get("name")
        click.echo(f"\nbanger: interrupted; the daemon removes {created or 'what was created'}", err=True)
        sys.exit(130)
    except BangerError as exc:
        printer.done()
        created = name_holder.get("name")
        if created and _failed_to_boot(client, created):
            raise type(exc)(
                f"{exc} -- VM {created} was kept for inspection: `banger vm logs {created}`, "
                f"then `banger vm delete {created}`"
            ) from exc
        raise
    sys.exit(code)


def _pull_back(app: App, client: Client, name: str, workspace: Workspace | None, workdir: str | None, code: int) -> int:
    """``--pull-back``: the command's exit code, or 1 when it succeeded but the pull did not."""
    assert workspace is not None and workdir is not None
    driver, plan = workspace
    try:
        summary = _pull(app, client, driver, name, Path(plan.root), workdir, f"banger/{name}", False)
    except BangerError as exc:
        click.echo(f"banger: --pull-back failed: {exc}", err=True)
        return code or 1
    click.echo(f"banger: {summary}", err=True)
    return code


def _pull(
    app: App, client: Client, driver: WorkspaceSyncerDriver, name: str, root: Path, workdir: str, branch: str,
    force: bool,
) -> str:  # fmt: skip
    from banger_core.api.events import EventSink
    from banger_core.common.ssh import SshGuestShell
    from banger_hookspecs import WorkspaceRoundTrip

    if not isinstance(driver, WorkspaceRoundTrip):
        raise BangerError("this workspace's syncer cannot bring work back from the guest (no pull support)")
    target = ssh_target(client, name)
    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    try:
        return str(driver.pull(root, SshGuestShell(target), workdir, branch, EventSink(printer), force=force))
    except ValueError as exc:
        raise BangerError(str(exc)) from None
    finally:
        printer.done()


#: Seconds between `--rm` checks: a restored VM is gone ~0.1 s after its command ends; a coarser poll
#: was a visible share of a warm `vm run` (docs/performance.md).
DELETE_POLL = 0.025


def _wait_deleted(client: Client, name: str, timeout: float = 60.0) -> None:
    """The daemon deletes an --rm VM once its session closes; report when it is really gone."""
    from banger_core.common.errors import NotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.vms.get(name)
        except NotFound:
            click.echo(f"banger: {name} deleted (--rm)", err=True)
            return
        time.sleep(DELETE_POLL)
    click.echo(f"banger: {name} is still being deleted (--rm); `banger vm list` shows when it is gone", err=True)


def _failed_to_boot(client: Client, name: str) -> bool:
    try:
        return client.vms.get(name).state is VmState.ERROR
    except BangerError:
        return False


def _plan_workspace(app: App, path: Path, include_untracked: bool, ref: str | None) -> Workspace:
    from banger_hookspecs import WorkspaceOptions

    driver = _claiming_syncer(app, path, "pass a git repository (`git init` makes one), or omit PATH for a bare VM")
    try:
        plan = driver.plan(path, WorkspaceOptions(include_untracked=include_untracked, ref=ref))
    except ValueError as exc:
        raise BangerError(str(exc)) from None
    return driver, plan


def _claiming_syncer(app: App, path: Path, fix: str) -> WorkspaceSyncerDriver:
    """The first workspace syncer (by name) that claims directory ``path``; ``fix`` ends the error otherwise."""
    if not path.is_dir():
        raise BangerError(f"{path} is not a directory: {fix}")
    ctx = app.plugin_context()
    for _name, provided in sorted(app.pm.workspace_syncers().items()):
        driver: WorkspaceSyncerDriver = provided.value.factory(ctx)
        if driver.claims(path):
            return driver
    raise BangerError(f"{path} is not a git repository: {fix}")


def _session(
    app: App,
    client: Client,
    vm: VmView,
    workspace: Workspace | None,
    workdir: str | None,
    command: list[str],
    printer: ProgressPrinter,
) -> int:
    from banger_core.api.events import EventSink
    from banger_core.common.ssh import SshGuestShell, SshTarget

    tty = sys.stdin is not None and sys.stdin.isatty()  # None: started with fd 0 closed
    # A command without a terminal runs through the guest agent when the VM has its ssh login's
    # environment recorded (restored from a template): no ssh handshake before it starts.
    agent = client.vms.agent_target(vm.name) if command and not tty else None
    through_agent = agent is not None and agent.login_env is not None
    if workspace is not None or not through_agent:
        target = ssh_target(client, vm.name)  # once sshd accepts banger's key (a restored VM's may be reloading)
    else:
        assert agent is not None
        target = SshTarget(**agent.ssh.model_dump())  # only for the ssh client's config: no login
    if workspace is not None and workdir is not None:
        driver, plan = workspace
        driver.sync(plan, SshGuestShell(target), workdir, EventSink(printer), incremental=False)
        printer.done()
        if any(f in MISE_FILES for f in plan.files):
            _start_tooling(target, workdir, Path(plan.root).name)
    if through_agent:
        assert agent is not None
        sys.stdout.flush()
        sys.stderr.flush()
        return run_through_agent(agent, target, remote_command(command, workdir))
    if command:
        argv = target.command_argv(remote_command(command, workdir), tty=tty)
    else:
        shell = 'exec "${SHELL:-/bin/sh}" -l'
        script = f"cd {shlex.quote(workdir)} && {shell}" if workdir else shell
        argv = [*target.argv(tty=tty, batch=False), script]
    sys.stdout.flush()
    sys.stderr.flush()
    return run_foreground(argv)


def run_through_agent(agent: AgentTargetView, target: SshTarget, command: list[str]) -> int:
    """Run ``command`` through the VM's guest agent exactly as sshd would run it for ``target``'s login.

    sshd runs the user's login shell with ``-c`` and the command line as the ssh client sent it
    (:meth:`SshTarget.command_argv` quotes ``command`` into one), in the user's home, with the
    login's environment and resource limits plus the client variables its ``AcceptEnv`` lets in:
    the same here, from what the VM's template recorded and this process's ``ssh -G``. Output streams as it
    comes, stdin is forwarded, and the exit status is the command's (a signal n reads as 128+n).
    """
    from banger_core.common.agent_client import AgentClient
    from banger_core.common.agent_login import (
        LoginEnvironment,
        client_sent,
        command_environment,
        effective_ssh_config,
    )
    from banger_core.common.agent_transport import Transport, VirtioSerialTransport, VsockUdsTransport

    assert agent.login_env is not None
    login = LoginEnvironment(agent.login_env, tuple(agent.accept_env), agent.login_limits)
    env = command_environment(login, client_sent(effective_ssh_config(target), os.environ))
    transport: Transport
    if agent.vsock_port is not None:
        transport = VsockUdsTransport(Path(agent.socket), agent.vsock_port)
    else:
        transport = VirtioSerialTransport(Path(agent.socket))
    token = Path(agent.token_file).read_text().strip()
    runner = AgentClient(transport, token, Path(agent.lock_file))
    argv = [env.get("SHELL") or "/bin/sh", "-c", shlex.join(command)]
    try:
        status = runner.exec(
            argv,
            stdout=_writer(sys.stdout.buffer),
            stderr=_writer(sys.stderr.buffer),
            # No stdin at all (started with fd 0 closed, so fd 0 may be anything now): end of input.
            stdin=_StdinReader(sys.stdin.fileno()) if sys.stdin is not None else b"",
            cwd=env.get("HOME") or "/",
            env=env,
            env_exact=True,
            rlimits=login.limits,
        )
    except KeyboardInterrupt:
        return 130  # the connection is gone with us: the agent kills the command
    return 128 - status if status < 0 else status


def _writer(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


class _StdinReader:
    """This process's stdin as the agent's input: each read returns what is there (a pipe is not a file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, size: int) -> bytes:
        return os.read(self.fd, size)


def run_foreground(argv: list[str]) -> int:
    """Run ``argv`` as the foreground job: Ctrl-C is its business (it reaches it directly), not ours.

    Returns its exit status, a death by signal n as 128+n like a shell.
    """
    proc = subprocess.Popen(argv)  # started first: an ignored SIGINT would be inherited
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - code if code < 0 else code


def _start_tooling(target: SshTarget, workdir: str, repo: str) -> None:
    """Best effort: `mise install` in the background when the guest has mise; never fails the run."""
    log = TOOLING_LOG.format(repo=repo)
    script = (
        "command -v mise >/dev/null 2>&1 || exit 0; "
        f"mkdir -p /root/.cache/banger && cd {shlex.quote(workdir)} && "
        f"nohup mise install >{shlex.quote(log)} 2>&1 </dev/null &"
    )
    try:
        subprocess.run(
            target.command_argv(["sh", "-c", script]), capture_output=True, timeout=TOOLING_START_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        click.echo(f"banger: starting `mise install` took over {TOOLING_START_TIMEOUT:g} s; skipped it", err=True)


@click.group(name="workspace")
def workspace_cli() -> None:
    """Sync a repository into a running VM again, or bring the work done there back."""


@workspace_cli.command(name="sync")
@click.argument("name", shell_complete=complete_vms)
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--guest-path", help="Where the workspace is in the guest (default /root/<repo-name>).")
@click.option("--include-untracked", is_flag=True, help="Also copy untracked files that git does not ignore.")
@click.option("--branch", "ref", help="Ship this branch's (or ref's) tracked tree instead of the working tree.")
@click.option("--full", is_flag=True, help="Send every file again instead of only the changed ones (no deletions).")
@click.option("--dry-run", is_flag=True, help="Print the files that would be considered and stop.")
@click.pass_obj
def workspace_sync(
    app: App,
    name: str,
    path: Path,
    guest_path: str | None,
    include_untracked: bool,
    ref: str | None,
    full: bool,
    dry_run: bool,
) -> None:
    """Re-sync PATH into running VM NAME: only changed files are sent, deleted files are removed.

    Only files banger shipped are ever deleted in the guest; files you created there stay.
    """
    from banger_core.api.events import EventSink
    from banger_core.common.ssh import SshGuestShell

    driver, plan = _plan_workspace(app, path, include_untracked, ref)
    if dry_run:
        for file in plan.files:
            click.echo(file)
        for warning in plan.warnings:
            click.echo(f"skipped: {warning}", err=True)
        return
    workdir = guest_workdir(guest_path, path)
    target = ssh_target(get_client(app), name)
    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    sent = driver.sync(plan, SshGuestShell(target), workdir, EventSink(printer), incremental=not full)
    printer.done()
    click.echo(f"{name}:{workdir}: {sent} of {len(plan.files)} files sent")


def _round_trip_driver(app: App, path: Path) -> WorkspaceSyncerDriver:
    return _claiming_syncer(app, path, "pass the repository the workspace was shipped from")


@workspace_cli.command(name="pull")
@click.argument("name", shell_complete=complete_vms)
@click.argument("path", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--branch", help="The host branch to put the guest's work on (default banger/NAME).")
@click.option("--guest-path", help="Where the workspace is in the guest (default /root/<repo-name>).")
@click.option("--force", is_flag=True, help="Move the branch even if it is not an ancestor (its old tip is kept).")
@click.pass_obj
def workspace_pull(app: App, name: str, path: Path, branch: str | None, guest_path: str | None, force: bool) -> None:
    """Bring VM NAME's commits and uncommitted changes into PATH's repository as a branch.

    \b
    The guest's new commits land on branch banger/NAME (or --branch), and its
    uncommitted changes (untracked files included, ignored ones not) as one
    more commit on top. Your checked-out branch, index and files are never
    touched; a branch that exists moves only forward (or with --force, keeping
    its old tip under refs/banger/backup/).
    """
    driver = _round_trip_driver(app, path)
    workdir = guest_workdir(guest_path, path)
    summary = _pull(app, get_client(app), driver, name, path, workdir, branch or f"banger/{name}", force)
    click.echo(f"{name}:{workdir}: {summary}")


@workspace_cli.command(name="diff")
@click.argument("name", shell_complete=complete_vms)
@click.argument("path", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--guest-path", help="Where the workspace is in the guest (default /root/<repo-name>).")
@click.pass_obj
def workspace_diff(app: App, name: str, path: Path, guest_path: str | None) -> None:
    """Show what changed in VM NAME's workspace since it was shipped (commits and uncommitted changes).

    Nothing changes in PATH's repository (git may keep the guest's objects until its next gc).
    """
    from banger_core.api.events import EventSink
    from banger_core.common.ssh import SshGuestShell
    from banger_hookspecs import WorkspaceRoundTrip

    driver = _round_trip_driver(app, path)
    if not isinstance(driver, WorkspaceRoundTrip):
        raise BangerError("this workspace's syncer cannot compare the guest's work (no diff support)")
    workdir = guest_workdir(guest_path, path)
    target = ssh_target(get_client(app), name)
    printer = ProgressPrinter(app.verbose, quiet=app.quiet)
    try:
        patch = driver.diff(path, SshGuestShell(target), workdir, EventSink(printer))
    except ValueError as exc:
        raise BangerError(str(exc)) from None
    finally:
        printer.done()
    sys.stdout.flush()
    sys.stdout.buffer.write(patch)
