"""Where a gateway worker spends its CPU under load: py-spy samples `hanse serve` (1 worker, SQLite,
real key, routing and metering) while wrk drives it at 16 connections against the bench mock.

    .venv/bin/python bench/profile.py [--seconds 20]

Writes bench/results/profile.txt (the self-time and inclusive tables) and a flame graph
(bench/results/profile.svg). Loopback only.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import BENCH, MOCK_PORT, VENV_BIN, hanse_system, wrk

TOP = 40


def record(pid: int, seconds: int, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(VENV_BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "500",
            "--format",
            fmt,
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def tables(collapsed: Path) -> str:
    """Self time per function and inclusive time per function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "## self time", ""]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(TOP)]
    lines += ["", "## inclusive time", ""]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(TOP)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hanse-profile-"))
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    mock = subprocess.Popen(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(MOCK_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    system = hanse_system("hanse-1w", 8601, workdir, database_url=args.database_url)
    assert system.start is not None
    process = system.start()
    try:
        wrk(system.url, system.load_key, 4, 2)  # warm-up
        collapsed = results / "profile.collapsed"
        spy = record(process.pid, args.seconds, collapsed, "raw")
        time.sleep(1)
        load = wrk(system.url, system.load_key, 16, args.seconds - 2)
        spy.wait(timeout=args.seconds + 30)
        spy = record(process.pid, 5, results / "profile.svg", "flamegraph")
        wrk(system.url, system.load_key, 16, 5)
        spy.wait(timeout=40)
        report = f"wrk at 16 connections while sampling: {load['rps']:.0f} req/s\n" + tables(
            collapsed
        )
        (results / "profile.txt").write_text(report)
        print(report)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        mock.terminate()


if __name__ == "__main__":
    main()
