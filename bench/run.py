"""`make bench`: the floor, Hanse and LiteLLM measured side by side, in one run, on this machine.

Every system answers the same mock upstream (bench/mock_upstream.py, its own process); wrk (its own
process) drives the request lanes, bench/stream_client.py the streaming lane. Results go to
bench/results/latest.json, the table to docs/benchmarks.md (between its markers) and the plot to
docs/benchmarks-latency.png. Loopback only.

    .venv/bin/python bench/run.py [--quick] [--only floor,hanse-1w,...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
LITELLM = BENCH / ".venv-litellm" / "bin" / "litellm"
MOCK_PORT = 9100
LITELLM_KEY = "sk-litellm-bench-0123456789"
CONCURRENCY = (1, 16, 64)
FRONTIER = (1, 2, 4, 8, 16, 32, 64)
HANSE_CATALOG = f"""
[[providers]]
id = "mock"
kind = "openai_compatible"
base_url = "http://127.0.0.1:{MOCK_PORT}/v1"
location = "FR"

[[models]]
id = "bench-model"
context_length = 32768
parameters_billion = {{ active = 8, total = 8 }}
  [[models.routes]]
  provider = "mock"
  input_eur_per_million = "0.40"
  output_eur_per_million = "1.60"
"""


@dataclass
class System:
    """A gateway (or the mock itself) under test."""

    name: str
    url: str
    key: str
    start: Callable[[], subprocess.Popen[bytes]] | None
    pids: Callable[[], list[int]] = field(default=lambda: [])
    process: subprocess.Popen[bytes] | None = None


def wrk(url: str, key: str, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run: p50/p99 latency (ms), requests/s, errors."""
    env = {**os.environ, "BENCH_KEY": key}
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(BENCH / "post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return {
        "connections": connections,
        "p50_ms": _ms(latency.get("50", "nan")),
        "p99_ms": _ms(latency.get("99", "nan")),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "requests": requests,
        "errors": errors,
    }


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:  # wrk prints no distribution when no request completed
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the largest of `pids` (one worker), in MB."""
    sizes = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        sizes.append(int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024)  # type: ignore[index]
    return max(sizes, default=float("nan"))


def children(pid: int) -> list[int]:
    found = [pid]
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().split(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found += children(int(path.parent.name))
    return found


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process behind {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} never answered")


def hanse_system(name: str, workdir: Path, workers: int, database_url: str | None) -> System:
    port = 8600 + len(name)
    env = {**os.environ, "HANSE_DATA_DIR": str(workdir / name), "HANSE_LOG_LEVEL": "warning"}
    env.pop("HANSE_CONFIG", None)
    if database_url:
        env["HANSE_DATABASE_URL"] = database_url
    config = workdir / f"{name}.toml"
    config.write_text(HANSE_CATALOG)
    hanse = str(VENV_BIN / "hanse")

    def cli(*args: str) -> str:
        return subprocess.run(
            [hanse, *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    cli("accounts", "create", "bench", "--plan", "credits_only")
    cli("accounts", "topup", "bench", "--credits", "999999")
    key = cli("keys", "create", "--account", "bench").strip()
    system = System(name, f"http://127.0.0.1:{port}/v1/chat/completions", key, None)

    def start() -> subprocess.Popen[bytes]:
        args = [
            hanse,
            "serve",
            "--port",
            str(port),
            "--config",
            str(config),
            "--workers",
            str(workers),
        ]
        log = (workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{port}/health", process)
        return process

    system.start = start
    system.pids = lambda: (
        children(system.process.pid)[1:] or [system.process.pid] if system.process else []
    )
    return system


def litellm_system(workdir: Path) -> System:
    port = 8690
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench-model\n    litellm_params:\n"
        f"      model: openai/bench-model\n      api_base: http://127.0.0.1:{MOCK_PORT}/v1\n"
        f"      api_key: mock-key\ngeneral_settings:\n  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n  telemetry: false\n"
    )
    system = System("litellm", f"http://127.0.0.1:{port}/v1/chat/completions", LITELLM_KEY, None)

    def start() -> subprocess.Popen[bytes]:
        # The local cost map keeps LiteLLM from fetching one from the internet at start.
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        log = (workdir / "litellm.log").open("wb")
        args = [str(LITELLM), "--config", str(config), "--port", str(port), "--telemetry", "False"]
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        wait_ready(f"http://127.0.0.1:{port}/health/liveliness", process)
        return process

    system.start = start
    system.pids = lambda: [system.process.pid] if system.process else []
    return system


def measure(system: System, seconds: float, streams: int) -> dict[str, Any]:
    """Latency at each concurrency, the throughput frontier, streaming and memory."""
    pids = system.pids()
    wrk(system.url, system.key, 4, 2)  # warm-up
    result: dict[str, Any] = {"rss_idle_mb": rss_mb(pids), "runs": {}}
    for connections in sorted(set(CONCURRENCY) | set(FRONTIER)):
        result["runs"][connections] = wrk(system.url, system.key, connections, seconds)
        if connections == 16:
            result["rss_load_mb"] = rss_mb(pids)
    for budget in (10, 50):
        ok = [
            r["rps"] for r in result["runs"].values() if r["p99_ms"] <= budget and not r["errors"]
        ]
        result[f"frontier_p99_{budget}ms_rps"] = max(ok, default=0.0)
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "stream_client.py"),
            system.url,
            "--key",
            system.key,
            "--streams",
            str(streams),
            "--max-tokens",
            "128",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result["stream"] = json.loads(out)
    return result


def header_overhead(system: System, requests: int = 500) -> dict[str, float]:
    """What the gateway says it spent (`X-Hanse-Overhead-Ms`) over sequential requests: p50/p99."""
    body = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Name three Hanseatic cities."}],
        "max_tokens": 16,
    }
    headers = {"Authorization": f"Bearer {system.key}"}
    values = []
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            response = client.post(system.url, json=body, headers=headers)
            values.append(float(response.headers["X-Hanse-Overhead-Ms"]))
    values.sort()
    return {"p50_ms": values[len(values) // 2], "p99_ms": values[int(len(values) * 0.99)]}


def soak(system: System, total: int) -> dict[str, Any]:
    """RSS growth per 10,000 requests over `total` requests at 16 connections."""
    pids = system.pids()
    done, samples = 0, []
    while done < total:
        done += wrk(system.url, system.key, 16, 5)["requests"]
        samples.append((done, rss_mb(pids)))
    first, last = samples[0], samples[-1]
    growth = (last[1] - first[1]) / max(1, (last[0] - first[0]) / 10_000)
    return {
        "requests": done,
        "rss_after_mb": last[1],
        "growth_mb_per_10k": growth,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="short runs (a smoke test of the bench)"
    )
    parser.add_argument("--only", default="", help="comma-separated systems")
    args = parser.parse_args()
    seconds, streams, soak_total = (2, 3, 5_000) if args.quick else (5, 10, 100_000)
    workdir = Path(tempfile.mkdtemp(prefix="hanse-bench-"))
    mock = subprocess.Popen(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(MOCK_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    systems = [
        System(
            "floor",
            f"http://127.0.0.1:{MOCK_PORT}/v1/chat/completions",
            "",
            None,
            pids=lambda: [mock.pid],
        ),
        hanse_system("hanse-1w", workdir, 1, None),
        hanse_system("hanse-2w", workdir, 2, None),
        hanse_system("hanse-pg", workdir, 1, _postgres()),
        litellm_system(workdir),
    ]
    if args.only:
        systems = [s for s in systems if s.name in args.only.split(",")]
    results: dict[str, Any] = {"machine": _machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        for system in systems:
            print(f">> {system.name}", flush=True)
            try:
                if system.start is not None:
                    system.process = system.start()
                results[system.name] = measure(system, seconds, streams)
                if system.name.startswith("hanse"):
                    results[system.name]["header_overhead"] = header_overhead(system)
                if system.name == "hanse-1w":
                    results[system.name]["soak"] = soak(system, soak_total)
            except (RuntimeError, subprocess.CalledProcessError, ValueError) as exc:
                print(f"   {system.name} failed: {exc}", flush=True)
                results[f"{system.name}-failed"] = str(exc)
            if system.process is not None:
                system.process.send_signal(signal.SIGTERM)
                system.process.wait(timeout=30)
        if not args.only or "embedded" in args.only:
            print(">> embedded", flush=True)
            out = subprocess.run(
                [sys.executable, str(BENCH / "embedded.py")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results["embedded"] = json.loads(out)
    finally:
        mock.terminate()
        for system in systems:
            if system.process is not None and system.process.poll() is None:
                system.process.kill()
    (BENCH / "results").mkdir(exist_ok=True)
    saved = BENCH / "results" / "latest.json"
    saved.write_text(json.dumps(results, indent=1))
    from bench.report import write_report

    write_report(json.loads(saved.read_text()), ROOT / "docs")


def _postgres() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.harness import create_postgres_database

    return create_postgres_database("hanse_bench")


def _machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return f"{os.cpu_count()} cores, {cpu[1] if cpu else 'unknown CPU'}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
