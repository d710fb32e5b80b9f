"""`hanse serve --workers N`: N processes behind one port, each listening on a socket of its own
(SO_REUSEPORT), so that long-lived connections spread across them; one that dies is replaced."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.harness import GatewayProcess, free_port

WORKERS = 2
CONNECTIONS = 16


def _workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == supervisor and b"resource_tracker" not in command:
            found.add(int(entry.name))
    return found


def _owners(port: int) -> set[int]:
    """The processes holding the established connections to `port`."""
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", listing)}


def _connected(gateway: GatewayProcess) -> list[httpx.Client]:
    """CONNECTIONS kept-alive connections, each having been answered once."""
    clients = [httpx.Client(base_url=gateway.base_url, timeout=10) for _ in range(CONNECTIONS)]
    for client in clients:
        assert client.get("/health").status_code == 200
    return clients


def test_workers_share_connections_and_one_that_dies_is_replaced(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start(workers=WORKERS)
    try:
        assert gateway.process is not None
        workers = _workers(gateway.process.pid)
        assert len(workers) == WORKERS
        clients = _connected(gateway)
        # Every worker holds some of the connections (all on one: 2 * 2**-16 by chance).
        assert _owners(gateway.port) == workers
        for client in clients:
            client.close()

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _workers(gateway.process.pid)
            if len(now) == WORKERS and victim not in now:
                break
            time.sleep(0.2)
        assert victim not in now and len(now) == WORKERS, now
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the successor answers once it has started
            clients = _connected(gateway)
            owners = _owners(gateway.port)
            for client in clients:
                client.close()
            if owners == now:
                break
            time.sleep(0.5)
        assert owners == now
    finally:
        gateway.stop()
    assert gateway.process is not None and gateway.process.returncode == 0


def test_a_port_taken_stops_serve_at_once(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        gateway = GatewayProcess(tmp_path)
        result = gateway.cli("serve", "--port", str(port), "--workers", str(WORKERS))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
