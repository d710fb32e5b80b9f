"""SDK-client lane: latency at concurrency 1 as an application sees it through the openai Python
SDK (its own httpx client, its parsing of the answer into `ChatCompletion`).

Runs in its own process and prints one JSON object: p50/p99 in ms over `--requests` sequential
calls, after a warm-up.

    python bench/sdk_client.py BASE_URL [--key K] [--header 'name: value' ...] [--requests 1000]
"""

from __future__ import annotations

import argparse
import json
import time

import openai


def run(base_url: str, key: str, headers: dict[str, str], requests: int) -> dict[str, float]:
    client = openai.OpenAI(
        base_url=base_url, api_key=key or "none", default_headers=headers, max_retries=0
    )
    messages = [{"role": "user", "content": "Name three Hanseatic cities."}]
    times = []
    for index in range(requests + 50):
        started = time.perf_counter()
        client.chat.completions.create(model="bench-model", messages=messages, max_tokens=16)  # type: ignore[arg-type]
        if index >= 50:  # the first ones open the connection and warm both sides
            times.append(time.perf_counter() - started)
    client.close()
    times.sort()
    return {
        "requests": requests,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int(len(times) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("--key", default="")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    headers = dict(
        (name.strip(), value.strip())
        for name, value in (line.split(":", 1) for line in args.header)
    )
    print(json.dumps(run(args.base_url, args.key, headers, args.requests)))


if __name__ == "__main__":
    main()
