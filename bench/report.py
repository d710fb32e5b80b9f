"""Turns bench/results/latest.json into the table of docs/benchmarks.md and its latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
GATEWAYS = (
    "hanse-1w",
    "hanse-1w-quiet",
    "hanse-1w-otel",
    "hanse-2w",
    "hanse-pg",
    "hanse-pg-16a",
    "hanse-pg-2w",
    "hanse-pg-4w",
    "portkey",
    "litellm",
)
HEAD = (
    "| system | changes | added p50 / p99 at c=1, wrk (ms) | added p50 at c=1, openai SDK (ms) | "
    "at c=16 | at c=64 | req/s at c=16 | CPU shares at c=16 | max req/s, p99 < 10 ms | "
    "p99 < 50 ms | added TTFT p50 (ms) | added chunk gap p99 (ms) | chunks (of 64) | "
    "RSS idle / load (MB) |"
)


def _added(results: dict[str, Any], name: str, connections: int, key: str) -> float:
    if connections == 1 and results[name].get("c1") and results["floor"].get("c1"):
        # the median of the interleaved rounds
        return float(results[name]["c1"]["wrk"][key]) - float(results["floor"]["c1"]["wrk"][key])
    runs, floor = results[name]["runs"], results["floor"]["runs"]
    return float(runs[str(connections)][key]) - float(floor[str(connections)][key])


def _sdk_added(results: dict[str, Any], name: str) -> str:
    own, floor = results[name].get("c1"), results["floor"].get("c1")
    if not own or not floor:
        return "-"
    return f"{own['sdk']['p50_ms'] - floor['sdk']['p50_ms']:.2f}"


def table(results: dict[str, Any]) -> str:
    """The markdown table: added latency, throughput, streaming and memory per system."""
    rows = [HEAD, "|" + "---|" * HEAD.count(" | ") + "---|"]
    floor = results["floor"]
    at_one = floor["c1"]["wrk"] if floor.get("c1") else floor["runs"]["1"]
    sdk = f"{floor['c1']['sdk']['p50_ms']:.2f} (itself)" if floor.get("c1") else "-"
    rows.append(
        f"| floor (mock alone) | - | {at_one['p50_ms']:.2f}/{at_one['p99_ms']:.2f} (itself) | {sdk} | "
        f"{_pair(floor, 16)} | {_pair(floor, 64)} | "
        f"{floor['runs']['16']['rps']:.0f} | - | {floor['frontier_p99_10ms_rps']:.0f} | "
        f"{floor['frontier_p99_50ms_rps']:.0f} | {floor['stream']['ttft_p50_ms']:.1f} | "
        f"{floor['stream']['gap_p99_ms']:.1f} | {floor['stream']['chunks_min']} | - |"
    )
    for name in GATEWAYS:
        if f"{name}-failed" in results:
            rows.append(f"| {name} | failed: {results[f'{name}-failed']} |" + " |" * 12)
        if name not in results:
            continue
        r = results[name]
        cells = [
            "/".join(f"{_added(results, name, c, k):.2f}" for k in ("p50_ms", "p99_ms"))
            for c in (1, 16, 64)
        ]
        stream, floor_stream = r["stream"], floor["stream"]
        shares = "/".join(f"{share:.2f}" for share in r.get("cpu_shares", [])) or "-"
        rows.append(
            f"| {name} | {r.get('changes') or 'default'} | {cells[0]} | {_sdk_added(results, name)} | "
            f"{cells[1]} | {cells[2]} | {r['runs']['16']['rps']:.0f} | {shares} | "
            f"{r['frontier_p99_10ms_rps']:.0f} | {r['frontier_p99_50ms_rps']:.0f} | "
            f"{stream['ttft_p50_ms'] - floor_stream['ttft_p50_ms']:.2f} | "
            f"{stream['gap_p99_ms'] - floor_stream['gap_p99_ms']:.2f} | "
            f"{stream['chunks_min']}-{stream['chunks_max']} | "
            f"{r['rss_idle_mb']:.0f} / {r.get('rss_load_mb', float('nan')):.0f} |"
        )
    embedded = results.get("embedded")
    if embedded:
        concurrent = embedded["hanse"]["concurrent_8"]
        cached = embedded["direct_prompt_cached"]["tokens_per_s"]
        rows.append("")
        rows.append(
            f"Embedded model (SmolLM2-135M, 2 threads, greedy, {embedded['direct']['tokens']} tokens, "
            f"median of 7 alternating rounds): llama-cpp-python alone "
            f"{embedded['direct']['tokens_per_s']:.1f} tokens/s evaluating the whole prompt as Hanse "
            f"does ({cached:.1f} reusing its cached prompt), through Hanse "
            f"{embedded['hanse']['tokens_per_s']:.1f} tokens/s (ratio {embedded['ratio']:.3f}; "
            f"{embedded['hanse']['tokens_per_s'] / cached:.3f} of the cached-prompt figure); "
            f"8 concurrent clients: {concurrent['answered']} answered, completion order "
            f"{concurrent['completion_order']}, latency p50 {concurrent['latency_p50_s']:.2f} s, "
            f"max {concurrent['latency_max_s']:.2f} s."
        )
    reported = [name for name in GATEWAYS if "header_overhead" in results.get(name, {})]
    if reported:
        rows += [
            "",
            "Overhead as Hanse reports it (`X-Hanse-Overhead-Ms`, 500 sequential requests) beside the "
            "latency it adds measured from outside (wrk, concurrency 1), p50 / p99 in ms:",
            "",
            "| system | X-Hanse-Overhead-Ms | added, measured by wrk |",
            "|---|---|---|",
        ]
        for name in reported:
            header = results[name]["header_overhead"]
            outside = "/".join(f"{_added(results, name, 1, k):.2f}" for k in ("p50_ms", "p99_ms"))
            rows.append(f"| {name} | {header['p50_ms']:.2f}/{header['p99_ms']:.2f} | {outside} |")
    rows += _database_rows(results)
    soak = results.get("hanse-1w", {}).get("soak")
    if soak:
        rows.append("")
        rows.append(
            f"Soak (hanse-1w, 16 connections): {soak['requests']} requests, RSS after "
            f"{soak['rss_after_mb']:.0f} MB, growth {soak['growth_mb_per_10k']:+.2f} MB per 10,000 requests."
        )
    return "\n".join(rows)


def _database_rows(results: dict[str, Any]) -> list[str]:
    """The PostgreSQL lanes under load: the database's commits and CPU, the machine's."""
    lanes = [
        name
        for name in GATEWAYS
        if "db_commits_per_s" in results.get(name, {}).get("runs", {}).get("16", {})
    ]
    if not lanes:
        return []
    rows = [
        "",
        "PostgreSQL under the 16- and 64-connection lanes (one server on this machine): the "
        "gateway's requests, the database's commits and CPU, and how busy the whole machine was:",
        "",
        "| system | connections | req/s | p99 (ms) | errors | commits/s | PostgreSQL cores | "
        "machine busy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in lanes:
        for connections in ("16", "64"):
            run = results[name]["runs"][connections]
            rows.append(
                f"| {name} | {connections} | {run['rps']:.0f} | {run['p99_ms']:.1f} | "
                f"{run['errors']} | {run['db_commits_per_s']:.0f} | {run['postgres_cores']:.2f} | "
                f"{100 * run['machine_busy']:.0f}% |"
            )
    return rows


def _pair(result: dict[str, Any], connections: int) -> str:
    run = result["runs"][str(connections)]
    return f"{run['p50_ms']:.2f}/{run['p99_ms']:.2f}"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    concurrency = (1, 16, 64)
    for name in GATEWAYS:
        if name in results:
            added = [max(_added(results, name, c, "p50_ms"), 0.01) for c in concurrency]
            axis.plot(concurrency, added, marker="o", label=name)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("concurrent connections")
    axis.set_ylabel("added p50 latency over the floor (ms)")
    axis.set_title("Gateway overhead, same mock, same run")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(results: dict[str, Any], docs: Path) -> None:
    """Replace the generated part of docs/benchmarks.md and redraw the plot."""
    page = docs / "benchmarks.md"
    text = page.read_text() if page.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    generated = (
        f"{BEGIN}\nRun {results['started']} on {results['machine']}.\n\n{table(results)}\n\n"
        f"![added latency](benchmarks-latency.png)\n{END}"
    )
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(head + generated + tail)
    plot(results, docs / "benchmarks-latency.png")
