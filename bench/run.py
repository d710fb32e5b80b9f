"""`make bench`: the floor, Hanse, Portkey and LiteLLM measured side by side, in one run, on this
machine.

Every system answers the same mock upstream (bench/mock_upstream.py, its own process); wrk (its own
process) drives the request lanes, bench/sdk_client.py the openai SDK's view at concurrency 1,
bench/stream_client.py the streaming lane. All systems run at once, idle but for the one measured:
the concurrency-1 lanes go round the systems three times, interleaved, and report the median round.
Results go to bench/results/latest.json, the table to docs/benchmarks.md (between its markers) and
the plot to docs/benchmarks-latency.png. Loopback only.

    .venv/bin/python bench/run.py [--quick] [--only floor,hanse-1w,...]
"""

from __future__ import annotations

import argparse
import asyncio
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
PORTKEY = (
    BENCH / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)
MOCK_PORT = 9100
SINK_PORT = 9101  # a second mock, as the traces row's OTLP collector: the upstream is not loaded
ROUNDS = 3
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
    headers: dict[str, str] = field(default_factory=dict)
    changes: str = ""  # what this row changes from the system's default configuration
    database: str | None = None  # its PostgreSQL database, when it has one
    keys: list[str] = field(default_factory=list)  # one per account, when it has several

    @property
    def load_key(self) -> str:
        """What wrk sends: the key, or every account's (each request takes the next)."""
        return ",".join(self.keys) if self.keys else self.key


def wrk(
    url: str, key: str, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """One wrk run: p50/p99 latency (ms), requests/s, errors."""
    extra = "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())
    env = {**os.environ, "BENCH_KEY": key, "BENCH_HEADERS": extra}
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
        found = re.search(r"VmRSS:\s+(\d+)", status)
        if found:  # not for a process that is exiting
            sizes.append(int(found[1]) / 1024)
    return max(sizes, default=float("nan"))


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each of `pids` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (its backends among them)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/comm"):
        try:
            if path.read_text().strip() == "postgres":
                found.append(int(path.parent.name))
        except OSError:
            continue
    return found


def busy_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (/proc/stat)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def commits(database: str) -> int:
    """Transactions committed in `database` so far (pg_stat_database)."""
    import asyncpg

    async def read() -> int:
        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
        try:
            query = "SELECT xact_commit FROM pg_stat_database WHERE datname = $1"
            return int(await conn.fetchval(query, database))
        finally:
            await conn.close()

    return asyncio.run(read())


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
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        time.sleep(0.5)  # not another process's answer on a port this one failed to take
        if process.poll() is None:
            return
        raise RuntimeError(f"the process behind {url} exited with {process.returncode}")
    raise RuntimeError(f"{url} never answered")


def hanse_system(
    name: str,
    port: int,
    workdir: Path,
    workers: int = 1,
    database_url: str | None = None,
    settings: dict[str, str] | None = None,
    changes: str = "",
    accounts: int = 1,
) -> System:
    """`hanse serve` in its default configuration but for `settings` (HANSE_* variables); its logs
    (one access line a request, at the default level) go to a file, as a service manager's would."""
    env = {**os.environ, "HANSE_DATA_DIR": str(workdir / name), **(settings or {})}
    for variable in ("HANSE_CONFIG", "HANSE_LOG_LEVEL"):
        if variable not in (settings or {}):
            env.pop(variable, None)
    if database_url:
        env["HANSE_DATABASE_URL"] = database_url
    config = workdir / f"{name}.toml"
    config.write_text(HANSE_CATALOG)
    hanse = str(VENV_BIN / "hanse")

    def cli(*args: str) -> str:
        return subprocess.run(
            [hanse, *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    keys = []
    for number in range(accounts):
        account = "bench" if number == 0 else f"bench-{number + 1}"
        cli("accounts", "create", account, "--plan", "credits_only")
        cli("accounts", "topup", account, "--credits", "999999")
        keys.append(cli("keys", "create", "--account", account).strip())
    system = System(
        name, f"http://127.0.0.1:{port}/v1/chat/completions", keys[0], None, changes=changes
    )
    if accounts > 1:
        system.keys = keys
    if database_url:
        system.database = database_url.rsplit("/", 1)[-1]

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


def portkey_system(workdir: Path) -> System:
    """Portkey's gateway (bench/portkey, from npm), pointed at the mock by its headers."""
    port = 8788
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{MOCK_PORT}/v1",
    }
    system = System(
        "portkey", f"http://127.0.0.1:{port}/v1/chat/completions", "mock-key", None, headers=headers
    )

    def start() -> subprocess.Popen[bytes]:
        log = (workdir / "portkey.log").open("wb")
        args = ["node", str(PORTKEY), f"--port={port}", "--headless"]
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        wait_ready(f"http://127.0.0.1:{port}/", process)
        return process

    system.start = start
    system.pids = lambda: [system.process.pid] if system.process else []
    return system


def sdk_lane(system: System, requests: int) -> dict[str, Any]:
    """The openai SDK's view at concurrency 1 (bench/sdk_client.py, its own process)."""
    args = [
        sys.executable,
        str(BENCH / "sdk_client.py"),
        system.url.removesuffix("/chat/completions"),
    ]
    args += ["--key", system.key, "--requests", str(requests)]
    for name, value in system.headers.items():
        args += ["--header", f"{name}: {value}"]
    return dict(json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout))


def rounds(systems: list[System], seconds: float, requests: int) -> dict[str, Any]:
    """The concurrency-1 lanes (wrk and the SDK), ROUNDS times round the systems; the median
    round of each system, by p50."""
    seen: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for round_number in range(ROUNDS):
        for system in systems:
            print(f">> round {round_number + 1}: {system.name}", flush=True)
            try:
                measured = (
                    wrk(system.url, system.load_key, 1, seconds, system.headers),
                    sdk_lane(system, requests),
                )
            except subprocess.CalledProcessError as exc:
                print(f"   {system.name} failed: {exc}", flush=True)
                continue
            seen.setdefault(system.name, []).append(measured)
    out = {}
    for name, runs in seen.items():
        by_wrk = sorted(runs, key=lambda run: float(run[0]["p50_ms"]))
        by_sdk = sorted(runs, key=lambda run: float(run[1]["p50_ms"]))
        out[name] = {"wrk": by_wrk[len(runs) // 2][0], "sdk": by_sdk[len(runs) // 2][1]}
    return out


def measure(system: System, seconds: float, streams: int) -> dict[str, Any]:
    """Latency at each concurrency, the throughput frontier, streaming and memory."""
    pids = system.pids()
    wrk(system.url, system.load_key, 4, 2, system.headers)  # warm-up
    result: dict[str, Any] = {"rss_idle_mb": rss_mb(pids), "runs": {}, "changes": system.changes}
    for connections in sorted(set(CONCURRENCY) | set(FRONTIER)):
        before = cpu_seconds(pids)
        database_before = _database_load(system)
        result["runs"][connections] = wrk(
            system.url, system.load_key, connections, seconds, system.headers
        )
        load = _database_load(system, database_before, seconds)
        if load:
            result["runs"][connections].update(load)
        if connections == 16:
            result["rss_load_mb"] = rss_mb(pids)
            after = cpu_seconds(pids)
            used = {pid: after[pid] - before[pid] for pid in before if pid in after}
            total = sum(used.values()) or 1.0
            # Each process's share of the gateway's CPU at 16 connections (even: workers share).
            result["cpu_shares"] = sorted(
                (round(v / total, 3) for v in used.values() if v / total > 0.01), reverse=True
            )
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
            *(arg for n, v in system.headers.items() for arg in ("--header", f"{n}: {v}")),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result["stream"] = json.loads(out)
    return result


def _database_load(
    system: System, before: dict[str, Any] | None = None, seconds: float = 0.0
) -> dict[str, Any]:
    """For a PostgreSQL row: commits, PostgreSQL's CPU and the machine's so far, or (given those
    from before a run of `seconds`) per second over the run: where the database saturates."""
    if system.database is None:
        return {}
    if before is not None:
        time.sleep(1.1)  # backends report their commits to the statistics at most once a second
    now = {
        "commits": commits(system.database),
        "postgres_cpu_s": cpu_seconds(postgres_pids()),
        "ticks": busy_ticks(),
    }
    if before is None:
        return now
    # Per process: a backend that ended meanwhile took its seconds with it.
    used = sum(
        spent - before["postgres_cpu_s"].get(pid, 0.0)
        for pid, spent in now["postgres_cpu_s"].items()
    )
    busy = now["ticks"][0] - before["ticks"][0]
    total = max(1, now["ticks"][1] - before["ticks"][1])
    return {
        "db_commits_per_s": (now["commits"] - before["commits"]) / seconds,
        "postgres_cores": used / seconds,
        "machine_busy": busy / total,
    }


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
        done += wrk(system.url, system.load_key, 16, 5)["requests"]
        samples.append((done, rss_mb(pids)))
    first, last = samples[0], samples[-1]
    growth = (last[1] - first[1]) / max(1, (last[0] - first[0]) / 10_000)
    return {
        "requests": done,
        "rss_after_mb": last[1],
        "growth_mb_per_10k": growth,
        "samples": samples,
    }


def systems_under_test(workdir: Path, mock_pid: int) -> dict[str, Callable[[], System]]:
    """Every row of the table, built only when selected. Hanse rows are its default configuration
    but for what `changes` says."""
    floor = System(
        "floor",
        f"http://127.0.0.1:{MOCK_PORT}/v1/chat/completions",
        "",
        None,
        pids=lambda: [mock_pid],
    )
    quiet = {"HANSE_LOG_LEVEL": "warning"}
    return {
        "floor": lambda: floor,
        "hanse-1w": lambda: hanse_system("hanse-1w", 8601, workdir),
        "hanse-1w-quiet": lambda: hanse_system(
            "hanse-1w-quiet", 8602, workdir, settings=quiet, changes="no access log (warning level)"
        ),
        "hanse-1w-otel": lambda: hanse_system(
            "hanse-1w-otel",
            8607,
            workdir,
            settings={"HANSE_TRACES_ENDPOINT": f"http://127.0.0.1:{SINK_PORT}/v1/traces"},
            changes="OpenTelemetry traces on (OTLP/HTTP, to a sink of its own)",
        ),
        "hanse-2w": lambda: hanse_system("hanse-2w", 8603, workdir, workers=2, changes="2 workers"),
        "hanse-pg": lambda: hanse_system(
            "hanse-pg",
            8604,
            workdir,
            database_url=_postgres("hanse_bench_pg"),
            changes="PostgreSQL",
        ),
        "hanse-pg-16a": lambda: hanse_system(
            "hanse-pg-16a",
            8608,
            workdir,
            database_url=_postgres("hanse_bench_pg16a"),
            changes="PostgreSQL, 16 accounts",
            accounts=16,
        ),
        **{
            f"hanse-pg-{workers}w": _postgres_workers(workdir, workers, port)
            for workers, port in ((2, 8605), (4, 8606))
        },
        "portkey": lambda: portkey_system(workdir),
        "litellm": lambda: litellm_system(workdir),
    }


def _postgres_workers(workdir: Path, workers: int, port: int) -> Callable[[], System]:
    """The row of `workers` processes on one PostgreSQL, traffic spread over 16 accounts."""
    name = f"hanse-pg-{workers}w"
    return lambda: hanse_system(
        name,
        port,
        workdir,
        workers=workers,
        database_url=_postgres(f"hanse_bench_pg{workers}"),
        changes=f"PostgreSQL, {workers} workers, 16 accounts",
        accounts=16,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="short runs (a smoke test of the bench)"
    )
    parser.add_argument("--only", default="", help="comma-separated systems (and `embedded`)")
    args = parser.parse_args()
    seconds, streams, sdk_requests, soak_total = (
        (2, 3, 200, 5_000) if args.quick else (5, 10, 1000, 1_000_000)
    )
    workdir = Path(tempfile.mkdtemp(prefix="hanse-bench-"))
    mock, sink = (
        subprocess.Popen(
            [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (MOCK_PORT, SINK_PORT)
    )
    time.sleep(1)
    factories = systems_under_test(workdir, mock.pid)
    chosen = [name for name in factories if not args.only or name in args.only.split(",")]
    results: dict[str, Any] = {"machine": _machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    systems: list[System] = []
    try:
        for name in chosen:
            print(f">> starting {name}", flush=True)
            try:
                system = factories[name]()
                if system.start is not None:
                    system.process = system.start()
                systems.append(system)
            except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                print(f"   {name} failed: {exc}", flush=True)
                results[f"{name}-failed"] = str(exc)
        at_one = rounds(systems, seconds, sdk_requests)
        for system in systems:
            print(f">> {system.name}", flush=True)
            try:
                results[system.name] = measure(system, seconds, streams)
                results[system.name]["c1"] = at_one.get(system.name)
                if system.name.startswith("hanse"):
                    results[system.name]["header_overhead"] = header_overhead(system)
                if system.name == "hanse-1w":
                    results[system.name]["soak"] = soak(system, soak_total)
            except (RuntimeError, subprocess.CalledProcessError, ValueError) as exc:
                print(f"   {system.name} failed: {exc}", flush=True)
                results[f"{system.name}-failed"] = str(exc)
        _stop(systems)
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
        sink.terminate()
        for system in systems:
            if system.process is not None and system.process.poll() is None:
                system.process.kill()
        _drop_databases()
    (BENCH / "results").mkdir(exist_ok=True)
    saved = BENCH / "results" / "latest.json"
    saved.write_text(json.dumps(results, indent=1))
    from bench.report import write_report

    write_report(json.loads(saved.read_text()), ROOT / "docs")


def _stop(systems: list[System]) -> None:
    for system in systems:
        if system.process is not None:
            system.process.send_signal(signal.SIGTERM)
    for system in systems:
        if system.process is not None:
            system.process.wait(timeout=30)


def _drop_databases() -> None:
    from tests.harness import drop_postgres_databases

    drop_postgres_databases()


def _postgres(name: str) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.harness import create_postgres_database

    return create_postgres_database(name)


def _machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return f"{os.cpu_count()} cores, {cpu[1] if cpu else 'unknown CPU'}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
