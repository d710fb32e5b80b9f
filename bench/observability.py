"""What the access log and traces cost: one worker in its default configuration (info logs, one
access line a request), with logs at warning (no access line), and with traces on (OTLP/HTTP to a
sink of its own), measured side by side: ROUNDS interleaved rounds of wrk at 16 connections, the
median round of each.

    .venv/bin/python -m bench.observability [--seconds 10]

The sink is a second mock process (it answers any POST), so that the spans' export does not load the
upstream every request waits on. Loopback only.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import BENCH, MOCK_PORT, hanse_system, wrk

ROUNDS = 3
SINK_PORT = MOCK_PORT + 1


def _mock(port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(port)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hanse-observability-"))
    mocks = [_mock(MOCK_PORT), _mock(SINK_PORT)]
    time.sleep(1)
    variants = {
        "default": {},
        "warning logs": {"HANSE_LOG_LEVEL": "warning"},
        "traces on": {"HANSE_TRACES_ENDPOINT": f"http://127.0.0.1:{SINK_PORT}/v1/traces"},
    }
    systems = [
        hanse_system(f"obs-{number}", 8620 + number, workdir, settings=settings)
        for number, settings in enumerate(variants.values())
    ]
    processes = []
    try:
        for system in systems:
            assert system.start is not None
            processes.append(system.start())
            wrk(system.url, system.key, 16, 2)  # warm-up
        seen: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, system in zip(variants, systems, strict=True):
                seen[name].append(wrk(system.url, system.key, 16, args.seconds)["rps"])
        base = statistics.median(seen["default"])
        for name, rates in seen.items():
            median = statistics.median(rates)
            rounds = ", ".join(f"{rate:.0f}" for rate in rates)
            print(f"{name:13s} {median:6.0f} req/s ({median / base - 1:+.1%}; rounds {rounds})")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        for mock in mocks:
            mock.terminate()


if __name__ == "__main__":
    main()
