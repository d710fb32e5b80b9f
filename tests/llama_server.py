"""A real OpenAI-shaped upstream: llama-cpp-python's own server, serving the embedded SmolLM2 GGUF.

`python -m llama_cpp.server` on 127.0.0.1 in a subprocess (one per test module: it loads the
model), so a gateway's openai_compatible route can be tested against a server it did not script.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from hanse.providers.local import embedded_model_path
from tests.harness import free_port

# The name the server answers as (`--model_alias`), whatever the route's upstream_model says.
ALIAS = "smollm2-llama-server"


class LlamaServer:
    """The server process, its log in `workdir`; `base_url` ends in /v1."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = workdir / "llama-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> LlamaServer:
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            embedded_model_path(),
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
            "--verbose",
            "False",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
