"""Throughput of the git workspace syncer beside a raw `git ls-files | tar | ssh tar -x` pipeline.

Run: .venv/bin/python bench/git_sync.py [--files 10000] [--megabytes 200] [--runs 5] [--transport ssh|local]

It builds (once, cached under $BANGER_TEST_CACHE) a git repository of --files
files totalling --megabytes, then alternates runs of

* raw:    git ls-files -z | tar --null -T - -cf - | ssh root@127.0.0.1 'mkdir -p D && tar -x -C D'
* banger: GitSyncer.plan + GitSyncer.sync through a GuestShell over the same ssh

into fresh directories, and prints median wall times, throughputs and the
ratio banger/raw (target >= 0.9). The receiving side extracts into
--dest-root (tmpfs by default, so the host disk's file-creation speed does
not drown the difference between the two senders). It then times incremental syncs (nothing
changed; 10 files changed). With --transport ssh (default, needs root) it
runs a private sshd on 127.0.0.1 with throw-away keys; --transport local runs
the guest side as local processes (the same tar pipeline minus ssh).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from banger_core.common.progress import NullProgress
from banger_git.syncer import GitSyncer
from banger_hookspecs import GuestResult, WorkspaceOptions


class CommandShell:
    """A GuestShell running argv through ``prefix`` (ssh ... or nothing), quoting with shlex."""

    def __init__(self, prefix: list[str], cwd: Path) -> None:
        self.prefix = prefix
        self.cwd = cwd

    def command(self, argv: Sequence[str]) -> list[str]:
        if self.prefix:
            return [*self.prefix, " ".join(shlex.quote(a) for a in argv)]
        return list(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = None,
        stdout: IO[bytes] | None = None,
    ) -> GuestResult:
        feed: dict[str, Any] = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
        proc = subprocess.run(
            self.command(argv),
            **feed,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            check=False,
        )
        return GuestResult(proc.returncode, proc.stdout or b"", proc.stderr)


def git(repo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.invalid")
    env.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid")
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def build_repo(cache: Path, files: int, megabytes: int) -> Path:
    """A committed repository of ``files`` files, ``megabytes`` MB in all, reused when cached."""
    key = hashlib.sha256(f"git-sync-bench-v1 {files} {megabytes}".encode()).hexdigest()[:16]
    repo = cache / f"git-sync-repo-{key}"
    if (repo / ".git" / "banger-bench-complete").exists():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix="git-sync-repo-tmp-"))
    rng = random.Random(42)
    weights = [rng.lognormvariate(0, 1.5) for _ in range(files)]
    scale = megabytes * 1_000_000 / sum(weights)
    blob = rng.randbytes(8 << 20)
    for i, weight in enumerate(weights):
        size = max(1, int(weight * scale))
        path = tmp / f"d{i % 50:02d}" / f"s{i % 7}" / f"file-{i:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(0, len(blob) - min(size, len(blob)) + 1)
        data = (blob[start:] + blob)[:size] if size <= len(blob) else (blob * (size // len(blob) + 1))[:size]
        path.write_bytes(data)
    git(tmp, "init", "-q", "-b", "main")
    git(tmp, "add", "-A")
    git(tmp, "commit", "-q", "-m", "bench")
    (tmp / ".git" / "banger-bench-complete").touch()
    tmp.rename(repo)
    return repo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def private_sshd(workdir: Path) -> Iterator[list[str]]:
    """A throw-away sshd on 127.0.0.1; yields the ssh argv prefix that reaches it as root."""
    if os.geteuid() != 0:
        sys.exit("--transport ssh needs root (a private sshd logging in as root); use --transport local")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "user")], check=True)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {workdir / 'host'}\n"
        f"AuthorizedKeysFile {workdir / 'user.pub'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile {workdir / 'sshd.pid'}\n"
    )
    privsep = Path("/run/sshd")
    made_privsep = not privsep.exists()
    if made_privsep:
        privsep.mkdir(mode=0o755)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    prefix = [
        "ssh", "-q", "-i", str(workdir / "user"), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "root@127.0.0.1",
    ]  # fmt: skip
    try:
        for _ in range(100):
            if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the private sshd did not answer")
        yield prefix
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if made_privsep:
            privsep.rmdir()


def raw_sync(repo: Path, prefix: list[str], dest: Path) -> None:
    remote = ["sh", "-c", 'mkdir -p -- "$1" && exec tar -x -f - -C "$1"', "raw", str(dest)]
    command = [*prefix, " ".join(shlex.quote(a) for a in remote)] if prefix else remote
    listing = subprocess.Popen(["git", "-C", str(repo), "ls-files", "-z"], stdout=subprocess.PIPE)
    tar = subprocess.Popen(
        ["tar", "-C", str(repo), "--null", "--no-recursion", "-T", "-", "-cf", "-"],
        stdin=listing.stdout,
        stdout=subprocess.PIPE,
    )
    assert listing.stdout is not None and tar.stdout is not None
    listing.stdout.close()
    receiver = subprocess.run(command, stdin=tar.stdout, check=False)
    tar.stdout.close()
    if tar.wait() or listing.wait() or receiver.returncode:
        raise RuntimeError("raw pipeline failed")


def banger_sync(repo: Path, shell: CommandShell, dest: Path, incremental: bool = False) -> int:
    syncer = GitSyncer()
    plan = syncer.plan(repo, WorkspaceOptions())
    return syncer.sync(plan, shell, str(dest), NullProgress(), incremental=incremental)


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transport", choices=("ssh", "local"), default="ssh")
    parser.add_argument(
        "--dest-root",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="where the receiving side extracts (default /dev/shm: tmpfs keeps disk speed out of the figures)",
    )
    args = parser.parse_args()

    cache = Path(os.environ.get("BANGER_TEST_CACHE", "/var/tmp/banger-test-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    repo = build_repo(cache, args.files, args.megabytes)
    total = sum(p.stat().st_size for p in repo.rglob("*.dat"))
    print(f"repo: {args.files} files, {total / 1e6:.0f} MB at {repo} ({time.perf_counter() - started:.1f} s)")

    with tempfile.TemporaryDirectory(prefix="banger-bench-") as tmp:
        work = Path(tmp)
        with private_sshd(work) if args.transport == "ssh" else _no_ssh() as prefix:
            shell = CommandShell(prefix, work)
            dest_root = Path(tempfile.mkdtemp(prefix="banger-bench-dest-", dir=args.dest_root))
            raw_times: list[float] = []
            banger_times: list[float] = []
            for run in range(args.runs + 1):  # run 0 warms the page cache and is not counted
                for label, times in (("raw", raw_times), ("banger", banger_times)):
                    dest = dest_root / f"{label}-{run}"
                    if label == "raw":
                        elapsed = timed(raw_sync, repo, prefix, dest)
                    else:
                        elapsed = timed(banger_sync, repo, shell, dest)
                    if run:
                        times.append(elapsed)
                    shutil.rmtree(dest)
            raw, ours = statistics.median(raw_times), statistics.median(banger_times)
            print(f"transport: {args.transport}, {args.runs} runs each, medians")
            print(f"raw git ls-files | tar | tar -x   {raw:6.2f} s  {total / raw / 1e6:7.1f} MB/s")
            print(f"banger git syncer (plan + sync)   {ours:6.2f} s  {total / ours / 1e6:7.1f} MB/s")
            print(f"ratio banger/raw throughput       {raw / ours:6.2f}   (target >= 0.9)")

            dest = dest_root / "incremental"
            banger_sync(repo, shell, dest)
            unchanged = statistics.median(timed(banger_sync, repo, shell, dest, True) for _ in range(args.runs))
            changed = sorted(repo.rglob("*.dat"))[:10]
            originals = [p.read_bytes() for p in changed]
            try:
                samples = []
                for i in range(args.runs):
                    for p in changed:
                        p.write_bytes(p.read_bytes()[:-1] + bytes([i % 256]))
                    samples.append(timed(banger_sync, repo, shell, dest, True))
            finally:
                for p, data in zip(changed, originals, strict=True):
                    p.write_bytes(data)
            print(f"incremental, nothing changed      {unchanged:6.2f} s  ({unchanged / ours:.2f} of a full sync)")
            print(f"incremental, 10 files changed     {statistics.median(samples):6.2f} s")
            shutil.rmtree(dest_root)


@contextmanager
def _no_ssh() -> Iterator[list[str]]:
    yield []


if __name__ == "__main__":
    main()
