"""`banger vm run` end to end: workspaces, commands and exit codes, --rm, interactive sessions, Ctrl-C."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_reaping import zombie_children
from tests.support.e2e import BIN, E2E

#: Every file in the workspace but git's own: nothing of banger's may be among them.
COUNT_FILES = "find . -path ./.git -prune -o \\( -type f -o -type l \\) -print | wc -l"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=e2e@banger", "-c", "user.name=e2e", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    """A repo with awkward names, a symlink, an executable, an ignored and an untracked file, and a branch."""
    repo = tmp_path / "fixture-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "src").mkdir()
    (repo / "src" / "main.py").write_text("print('hello')\n")
    (repo / "with space.txt").write_text("space\n")
    (repo / "ünïcode.txt").write_text("u\n")
    (repo / "-leading-dash").write_text("dash\n")
    (repo / "build.sh").write_text("#!/bin/sh\necho built\n")
    (repo / "build.sh").chmod(0o755)
    (repo / "link-to-main").symlink_to("src/main.py")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "only-on-other.txt").write_text("other branch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "untracked.txt").write_text("not committed\n")
    (repo / "noise.log").write_text("ignored\n")
    return repo


def tracked_count(repo: Path) -> int:
    return len([f for f in git(repo, "ls-files", "-z").split("\0") if f])


def test_workspace_files_modes_and_file_sync(e2e: E2E, fixture_repo: Path) -> None:
    script = (
        f"pwd; {COUNT_FILES}; test -e untracked.txt && echo untracked-present || echo untracked-absent; "
        "test -e noise.log && echo ignored-present || echo ignored-absent; ./build.sh; readlink link-to-main; "
        "stat -c %a build.sh; stat -c %a /root/.gitconfig; git status --porcelain --untracked-files=all; "
        "echo status-done; git rev-parse HEAD; cat /root/.gitconfig"
    )
    result = e2e.banger("vm", "run", "--rm", str(fixture_repo), "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "/root/fixture-repo"
    assert int(lines[1]) == tracked_count(fixture_repo)  # exactly the tracked files: no banger bookkeeping
    assert lines[2:7] == ["untracked-absent", "ignored-absent", "built", "src/main.py", "755"]
    assert lines[7] == "640" and "name = e2e" in result.stdout  # the file_sync entry, with its mode
    # A git checkout of the shipped commit, clean: the host has no uncommitted edits to tracked files.
    assert lines[8:10] == ["status-done", git(fixture_repo, "rev-parse", "HEAD").strip()]
    assert result.stderr.splitlines()[0].startswith("spec: ")
    assert e2e.vms() == []


def test_include_untracked(e2e: E2E, fixture_repo: Path) -> None:
    result = e2e.banger(
        "vm",
        "run",
        "--rm",
        "--include-untracked",
        str(fixture_repo),
        "--",
        "sh",
        "-c",
        f"cat untracked.txt; {COUNT_FILES}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["not committed", str(tracked_count(fixture_repo) + 1)]


def test_branch_ships_that_branch(e2e: E2E, fixture_repo: Path) -> None:
    result = e2e.banger("vm", "run", "--rm", "--branch", "other", str(fixture_repo), "--", "cat", "only-on-other.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "other branch\n"


def test_dry_run_creates_nothing(e2e: E2E, fixture_repo: Path) -> None:
    before = e2e.vms()
    result = e2e.banger("vm", "run", "--dry-run", str(fixture_repo))
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == tracked_count(fixture_repo)
    assert e2e.vms() == before


def test_exit_code_propagates_and_rm_leaves_nothing(e2e: E2E) -> None:
    result = e2e.banger("vm", "run", "--rm", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert result.returncode == 7
    assert result.stdout == "out\n" and "err\n" in result.stderr
    assert "deleted (--rm)" in result.stderr
    assert e2e.vms() == []
    # Its QEMU was collected: no `qemu-system-x86 <defunct>` stays under the daemon.
    daemon_pid = e2e.pid()
    assert daemon_pid is not None and zombie_children(daemon_pid) == []


def test_interactive_session_under_a_real_terminal(e2e: E2E, tmp_path: Path) -> None:
    if shutil.which("script") is None:
        pytest.skip("script(1) from util-linux is needed for a pseudo-terminal")
    transcript = tmp_path / "typescript"
    command = f"{BIN / 'banger'} vm run --rm --name tty-check"
    proc = subprocess.Popen(
        ["script", "-q", "-f", "-c", command, str(transcript)],
        env=e2e.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        e2e.wait_for(lambda: "tty-check is running" in _read(transcript), 600, "the VM")
        assert proc.stdin is not None  # typed input waits in the terminal until the guest shell reads it
        proc.stdin.write(b"tty; echo TERM=$TERM\n")
        proc.stdin.flush()
        e2e.wait_for(lambda: "/dev/pts/" in _read(transcript), 60, "tty output")
        proc.stdin.write(b"exit\n")
        proc.stdin.close()
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = _read(transcript)
    assert "/dev/pts/" in text and "TERM=" in text
    e2e.wait_for(lambda: e2e.vms() == [], 60, "the --rm VM to be deleted")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _run_in_background(e2e: E2E, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "banger"), *args],
        env=e2e.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, like a terminal job
    )


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground job


def test_ctrl_c_during_a_command_with_rm_leaves_nothing(e2e: E2E) -> None:
    proc = _run_in_background(e2e, "vm", "run", "--rm", "--name", "interrupted", "--", "sleep", "600")
    try:
        e2e.wait_for(lambda: any(v["state"] == "running" for v in e2e.vms()), 600, "the VM to run")
        time.sleep(3)  # the command is running in the guest now
        _interrupt(proc)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    e2e.wait_for(lambda: e2e.vms() == [], 60, "the --rm VM to be deleted")


def test_ctrl_c_during_creation_cleans_up(e2e: E2E) -> None:
    proc = _run_in_background(e2e, "vm", "run", "--name", "half-made", "--", "true")
    try:
        e2e.wait_for(lambda: any(v["name"] == "half-made" for v in e2e.vms()), 120, "the VM record")
        _interrupt(proc)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    e2e.wait_for(lambda: e2e.vms() == [], 600, "the half-made VM to be cleaned up")
    assert not any((e2e.state / "vms").iterdir())


def test_killed_cli_does_not_leak_an_rm_vm(e2e: E2E) -> None:
    proc = _run_in_background(e2e, "vm", "run", "--rm", "--name", "orphan", "--", "sleep", "600")
    try:
        e2e.wait_for(lambda: any(v["state"] == "running" for v in e2e.vms()), 600, "the VM to run")
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: the daemon must
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    e2e.wait_for(lambda: e2e.vms() == [], 60, "the daemon to delete the orphaned --rm VM")


def host_state(repo: Path) -> str:
    """A digest of the host checkout a pull must not touch: HEAD, branches, index, every file."""
    digest = hashlib.sha256()
    digest.update(git(repo, "symbolic-ref", "HEAD").encode())
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/", "refs/tags/").splitlines()
    digest.update("\n".join(r for r in refs if not r.startswith("refs/heads/banger/")).encode())
    digest.update((repo / ".git" / "index").read_bytes())
    files = []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        files += [Path(dirpath) / name for name in filenames]
    for path in sorted(files):
        digest.update(str(path.relative_to(repo)).encode() + b"\0")
        digest.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return digest.hexdigest()


def test_workspace_round_trip(e2e: E2E, fixture_repo: Path) -> None:
    (fixture_repo / "src" / "main.py").write_text("print('edited on the host')\n")  # shipped uncommitted
    work_in_guest = (
        "git status --porcelain; echo status-done; "
        "git -c user.email=e2e@banger commit -q -am 'guest commit'; "
        "echo 'guest edit' >> 'with space.txt'; echo new > made-in-guest.txt; echo junk > build.log"
    )
    result = e2e.banger("vm", "run", "--name", "rt", str(fixture_repo), "--", "sh", "-c", work_in_guest)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [" M src/main.py", "status-done"]  # the host's uncommitted edit

    before = host_state(fixture_repo)
    diff = e2e.banger("vm", "workspace", "diff", "rt", str(fixture_repo))
    assert diff.returncode == 0, diff.stderr
    assert "+print('edited on the host')" in diff.stdout and "+guest edit" in diff.stdout
    assert "made-in-guest.txt" in diff.stdout and "build.log" not in diff.stdout

    pull = e2e.banger("vm", "workspace", "pull", "rt", str(fixture_repo))
    assert pull.returncode == 0, pull.stderr
    assert "branch banger/rt is at " in pull.stdout
    assert host_state(fixture_repo) == before, "the host's branch, index and files are untouched"
    assert git(fixture_repo, "log", "--format=%s", "main..banger/rt").splitlines() == [
        "banger: uncommitted changes in /root/fixture-repo",
        "guest commit",
    ]
    assert git(fixture_repo, "show", "banger/rt~1:src/main.py") == "print('edited on the host')\n"
    assert git(fixture_repo, "show", "banger/rt:with space.txt") == "space\nguest edit\n"
    assert git(fixture_repo, "show", "banger/rt:made-in-guest.txt") == "new\n"

    # The branch now exists and holds other work: a pull onto it from elsewhere is refused, nothing lost.
    git(fixture_repo, "branch", "-f", "banger/rt", "other")
    refused = e2e.banger("vm", "workspace", "pull", "rt", str(fixture_repo))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].endswith("(its current tip is then kept under refs/banger/backup/)")
    assert git(fixture_repo, "rev-parse", "banger/rt") == git(fixture_repo, "rev-parse", "other")
    assert host_state(fixture_repo) == before
    e2e.banger("vm", "delete", "--force", "rt", check=True, timeout=120)


def test_rm_with_pull_back(e2e: E2E, fixture_repo: Path) -> None:
    result = e2e.banger(
        "vm", "run", "--rm", "--pull-back", "--name", "pb", str(fixture_repo), "--", "sh", "-c", "echo hi > from-vm.txt"
    )
    assert result.returncode == 0, result.stderr
    assert "branch banger/pb is at " in result.stderr
    assert git(fixture_repo, "show", "banger/pb:from-vm.txt") == "hi\n"
    assert git(fixture_repo, "status", "--porcelain") == "?? untracked.txt\n"  # noise.log is ignored
    assert "pb" not in [vm["name"] for vm in e2e.vms()]
