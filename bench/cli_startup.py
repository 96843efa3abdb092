"""Wall time of `banger --version` (and `--help`, `plugins list`) beside a bare interpreter start.

Run: .venv/bin/python bench/cli_startup.py [--runs N]
Prints medians in milliseconds and the ratio to `python3 -c pass` measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_ms(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    banger = shutil.which("banger") or str(Path(sys.executable).parent / "banger")
    baseline = median_ms([sys.executable, "-c", "pass"], args.runs)
    print(f"python3 -c pass          {baseline:7.1f} ms  (baseline)")
    for label, argv in (
        ("banger --version", [banger, "--version"]),
        ("banger --help", [banger, "--help"]),
        ("banger plugins list", [banger, "plugins", "list"]),
    ):
        value = median_ms(argv, args.runs)
        print(f"{label:<24} {value:7.1f} ms  ratio {value / baseline:4.2f}")


if __name__ == "__main__":
    main()
