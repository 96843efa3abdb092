"""Queries/second and latency of banger's .vm DNS server beside dnsmasq, both on 127.0.0.1.

Run: .venv/bin/python bench/dns.py [--queries 10000] [--names 100] [--windows 1,32]

Both servers get the same names (``vm0.vm`` ... with made-up addresses that
nothing ever contacts): banger's server through a lookup over a dict (as the
daemon's callback), dnsmasq through a hosts file with no upstream. Each runs
alone in its own process, in turn; one client sends a bounded number of A
queries with ``window`` queries in flight (1 = one after the other) and times
every answer. Prints qps, p50 and p99 per server and the ratio banger/dnsmasq.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dnslib import DNSRecord

from banger_core.daemon.dns import DnsServer

WARMUP_QUERIES = 200
RECV_TIMEOUT = 1.0


@dataclass
class Figures:
    qps: float
    p50_ms: float
    p99_ms: float
    lost: int
    wrong: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_hosts(directory: Path, names: int) -> Path:
    hosts = directory / "hosts"
    base = ipaddress.IPv4Address("172.16.0.10")
    hosts.write_text("".join(f"{base + i} vm{i}.vm\n" for i in range(names)))
    hosts.chmod(0o644)  # dnsmasq reads it after dropping to nobody
    return hosts


def queries(count: int, names: int) -> list[bytes]:
    packets = []
    for i in range(count):
        query = DNSRecord.question(f"vm{i % names}.vm")
        query.header.id = i & 0xFFFF
        packets.append(bytes(query.pack()))
    return packets


def measure(port: int, packets: list[bytes], window: int) -> Figures:
    """Send ``packets`` with at most ``window`` in flight; bounded by len(packets) sends and timeouts."""
    latencies: list[float] = []
    in_flight: dict[int, float] = {}
    lost = wrong = 0
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(RECV_TIMEOUT)
        start = time.perf_counter()
        while sent < len(packets) or in_flight:
            while sent < len(packets) and len(in_flight) < window:
                in_flight[sent & 0xFFFF] = time.perf_counter()  # before send: a fast server answers within it
                sock.send(packets[sent])
                sent += 1
            try:
                data = sock.recv(4096)
            except TimeoutError:
                lost += len(in_flight)
                in_flight.clear()
                continue
            began = in_flight.pop(int.from_bytes(data[:2], "big"), None)
            if began is None:
                continue  # a late answer to a query already counted as lost
            latencies.append(time.perf_counter() - began)
            rcode, answers = data[3] & 0x0F, int.from_bytes(data[6:8], "big")
            if rcode != 0 or answers != 1:
                wrong += 1
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")
    return Figures(
        qps=len(latencies) / elapsed,
        p50_ms=statistics.median(ordered) * 1000 if ordered else float("nan"),
        p99_ms=p99 * 1000,
        lost=lost,
        wrong=wrong,
    )


def wait_until_answering(port: int, proc: subprocess.Popen[bytes]) -> None:
    probe = queries(1, 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        for _ in range(100):
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args!r} exited with status {proc.returncode}")
            try:
                sock.sendto(probe, ("127.0.0.1", port))
                sock.recv(4096)
                return
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise SystemExit(f"{proc.args!r} did not answer on 127.0.0.1:{port} within 10 s")


def run_server(argv: list[str], port: int, packets: list[bytes], windows: list[int]) -> dict[int, Figures]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_answering(port, proc)
        measure(port, packets[:WARMUP_QUERIES], 1)
        return {window: measure(port, packets, window) for window in windows}
    finally:
        proc.terminate()  # by the pid we started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(port: int, hosts: Path) -> None:
    """The banger side: the daemon's asyncio server over a dict lookup, until SIGTERM."""
    table = {}
    for line in hosts.read_text().splitlines():
        address, name = line.split()
        table[name.removesuffix(".vm")] = address

    async def main() -> None:
        server = DnsServer(table.get)
        await server.start([("127.0.0.1", port)])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000, help="queries per server and window")
    parser.add_argument("--names", type=int, default=100, help="distinct VM names")
    parser.add_argument("--windows", default="1,32", help="queries in flight, comma-separated")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "HOSTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return
    dnsmasq = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if dnsmasq is None:
        raise SystemExit("dnsmasq not found: apt-get install dnsmasq-base")
    windows = [int(w) for w in args.windows.split(",")]
    packets = queries(args.queries, args.names)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        hosts = write_hosts(Path(tmp), args.names)
        port = free_port()
        banger = run_server([sys.executable, __file__, "--serve", str(port), str(hosts)], port, packets, windows)
        port = free_port()
        reference = run_server(
            [
                dnsmasq,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={hosts}",
                "--local=/vm/",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                f"--port={port}",
                "--pid-file=",
                "--log-facility=-",
            ],
            port,
            packets,
            windows,
        )
    print(f"{args.queries} A queries per run over {args.names} names, 127.0.0.1, one client")
    print(f"{'server':<8} {'in flight':>9} {'qps':>9} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'wrong':>5}")
    for window in windows:
        for label, figures in (("banger", banger[window]), ("dnsmasq", reference[window])):
            print(
                f"{label:<8} {window:>9} {figures.qps:>9.0f} {figures.p50_ms:>8.3f} {figures.p99_ms:>8.3f} "
                f"{figures.lost:>5} {figures.wrong:>5}"
            )
        ours, theirs = banger[window], reference[window]
        print(
            f"{'ratio':<8} {window:>9} {ours.qps / theirs.qps:>9.2f} {ours.p50_ms / theirs.p50_ms:>8.2f} "
            f"{ours.p99_ms / theirs.p99_ms:>8.2f}   (banger / dnsmasq)"
        )


if __name__ == "__main__":
    main()
