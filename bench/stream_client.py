"""Streaming lane client: time to first token and gaps between content chunks, over raw SSE.

Runs in its own process (so the gateway's CPU is not shared with the measurement) and prints one
JSON object: TTFT and inter-chunk gap percentiles in ms, chunk counts, errors.

    python bench/stream_client.py URL [--key K] [--header 'n: v'] [--streams 20] [--concurrency 1] [--model M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
import uvloop

BODY = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Stream something."}],
    "max_tokens": 128,
    "stream": True,
}


async def one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, object]
) -> tuple[float, list[float], int]:
    """TTFT (s), gaps between content chunks (s), and the number of content chunks."""
    started = time.perf_counter()
    ttft = -1.0
    gaps: list[float] = []
    last = 0.0
    count = 0
    async with session.post(url, json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if not choices or not choices[0]["delta"].get("content"):
                continue
            count += 1
            if ttft < 0:
                ttft = now - started
            else:
                gaps.append(now - last)
            last = now
    return ttft, gaps, count


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    url: str,
    key: str,
    extra: dict[str, str],
    streams: int,
    concurrency: int,
    model: str,
    max_tokens: int,
) -> dict[str, object]:
    headers = {**extra, "Authorization": f"Bearer {key}"} if key else dict(extra)
    body = {**BODY, "model": model, "max_tokens": max_tokens}
    ttfts: list[float] = []
    gaps: list[float] = []
    counts: list[int] = []
    errors = 0
    queue = list(range(streams))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def worker() -> None:
            nonlocal errors
            while queue:
                queue.pop()
                try:
                    ttft, more, count = await one_stream(session, url, headers, body)
                except aiohttp.ClientError:
                    errors += 1
                    continue
                ttfts.append(ttft)
                gaps.extend(more)
                counts.append(count)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "streams": len(counts),
        "errors": errors,
        "ttft_p50_ms": percentile(ttfts, 0.5) * 1000,
        "ttft_p99_ms": percentile(ttfts, 0.99) * 1000,
        "gap_p50_ms": percentile(gaps, 0.5) * 1000,
        "gap_p99_ms": percentile(gaps, 0.99) * 1000,
        "chunks_min": min(counts) if counts else 0,
        "chunks_max": max(counts) if counts else 0,
        "chunks_mean": statistics.fmean(counts) if counts else 0,
        "tokens_per_s": sum(counts) / elapsed if elapsed else 0,
        "elapsed_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--key", default="")
    parser.add_argument("--header", action="append", default=[], help="'name: value'")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    extra = dict(
        (name.strip(), value.strip()) for name, value in (h.split(":", 1) for h in args.header)
    )
    result = uvloop.run(
        run(args.url, args.key, extra, args.streams, args.concurrency, args.model, args.max_tokens)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
