"""Several gateway processes behind one port, each with a listening socket of its own.

uvicorn's own workers accept from one shared socket: whichever process wakes first takes the
connection, so long-lived connections (an SDK's pool, a load balancer's) pile onto one or two
workers while the others idle (16 connections on two workers served no more than one worker:
docs/benchmarks.md). Here every worker listens on its own socket bound with SO_REUSEPORT, and the
kernel spreads new connections across them by their address hash. The sockets are made here,
before any worker starts, so a port already taken fails at once, and a worker that dies is
restarted on the same socket: what waited in its backlog is served by its successor.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.context import SpawnProcess
from types import FrameType

import uvicorn

_SPAWN = multiprocessing.get_context("spawn")
# A worker whose start-up failed exits with this (as `uvicorn.run` does): it is not restarted in a
# loop, the whole server stops (a database or provider problem would only repeat).
STARTUP_FAILURE = 3
_BACKLOG = 2048


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on host:port, sharing it through SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def _serve(config: uvicorn.Config, sock: socket.socket) -> None:
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class Supervisor:
    """Starts one worker per socket, restarts one that dies, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self._config = config
        self._sockets = sockets
        self._workers: list[SpawnProcess] = []
        self._stopping = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self._workers = [self._start(sock) for sock in self._sockets]
        failed = False
        while not self._stopping and not failed:
            time.sleep(0.5)
            for index, process in enumerate(self._workers):
                if process.is_alive() or self._stopping:
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    print(
                        f"hanse: worker {process.pid} failed to start", file=sys.stderr, flush=True
                    )
                    failed = True
                    break
                print(
                    f"hanse: worker {process.pid} exited with {process.exitcode}; restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                self._workers[index] = self._start(self._sockets[index])
        self._terminate()
        return 1 if failed else 0

    def _start(self, sock: socket.socket) -> SpawnProcess:
        process = _SPAWN.Process(target=_serve, args=(self._config, sock))
        process.start()
        return process

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _terminate(self) -> None:
        """SIGTERM each worker (each drains its requests, as one alone would) and wait for them."""
        for process in self._workers:
            if process.is_alive():
                process.terminate()
        for process in self._workers:
            process.join()
        for sock in self._sockets:
            sock.close()
