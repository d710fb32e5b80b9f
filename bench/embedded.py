"""The embedded model: tokens/s through Hanse against llama-cpp-python called directly, same settings,
and 8 concurrent clients (all answered, in arrival order, with their latencies).

    .venv/bin/python bench/embedded.py   # prints JSON; bench/run.py folds it into the report
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROMPT = [
    {"role": "user", "content": "Write a long story about a ship sailing from Lübeck to Bergen."}
]
MAX_TOKENS = 256
ROUNDS = 7  # each side's figure is its median round: one round moves by several percent here


def _median_round(rounds: list[tuple[int, float]]) -> dict[str, float]:
    """The round with the median tokens/s, as {tokens, seconds, tokens_per_s}."""
    rates = sorted(rounds, key=lambda r: r[0] / r[1])
    tokens, seconds = rates[len(rates) // 2]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


class Direct:
    """llama-cpp-python alone: the same GGUF, context, threads and greedy sampling."""

    def __init__(self) -> None:
        import llama_cpp

        from hanse.providers.local import embedded_model_path

        self.llama = llama_cpp.Llama(
            model_path=embedded_model_path(),
            n_ctx=8192,
            n_threads=2,
            n_threads_batch=2,
            n_batch=512,
            verbose=False,
        )
        self.llama.create_chat_completion(messages=PROMPT, max_tokens=8, temperature=0)

    def round(self, reuse_prompt: bool = False) -> tuple[int, float]:
        """Tokens streamed and seconds taken for one answer. Without `reuse_prompt` the KV cache is
        cleared first, as Hanse does before every generation (a seed then always gives the same
        text): both evaluate the whole prompt, and the ratio measures the serving path alone."""
        if not reuse_prompt:
            self.llama.reset()
        started = time.perf_counter()
        tokens = 0
        for chunk in self.llama.create_chat_completion(
            messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True
        ):
            if chunk["choices"][0]["delta"].get("content"):
                tokens += 1
        return tokens, time.perf_counter() - started


async def _stream_usage(base: str, key: str, body: dict[str, Any]) -> int:
    """One streamed answer read as raw bytes, parsed only at the end: the client costs the shared
    cores as little as llama-cpp-python's own loop does in `direct` (no per-chunk parsing)."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (host.encode(), key.encode(), len(payload))
        + payload
    )
    received = bytearray()
    while data := await reader.read(1 << 16):
        received += data
    writer.close()
    for line in bytes(received).split(b"\n"):
        if line.startswith(b"data: {") and b'"usage":{' in line:
            return int(json.loads(line[6:])["usage"]["completion_tokens"])
    raise RuntimeError(f"no usage in the stream: {bytes(received[:300])!r}")


async def side_by_side(base: str, key: str, direct: Direct) -> dict[str, Any]:
    """Rounds alternate between llama-cpp-python alone and Hanse, so that whatever else the machine
    does at the time weighs on both alike; then 8 concurrent clients through Hanse."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": "smollm2-135m",
        "messages": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient(timeout=300) as client:
        await client.post(
            f"{base}/v1/chat/completions",
            headers=headers,
            json={**body, "max_tokens": 8, "stream": False},
        )
        alone, cached, via = [], [], []
        for _ in range(ROUNDS):
            alone.append(direct.round())
            cached.append(direct.round(reuse_prompt=True))
            started = time.perf_counter()
            tokens = await _stream_usage(base, key, body)
            via.append((tokens, time.perf_counter() - started))

        async def client_call(index: int) -> tuple[int, float, float]:
            await asyncio.sleep(index * 0.01)  # a known arrival order
            sent = time.perf_counter()
            response = await client.post(
                f"{base}/v1/chat/completions",
                headers=headers,
                json={
                    "model": "smollm2-135m",
                    "messages": PROMPT,
                    "max_tokens": 32,
                    "temperature": 0,
                },
            )
            response.raise_for_status()
            return index, sent, time.perf_counter()

        finished = await asyncio.gather(*(client_call(i) for i in range(8)))
    order = [index for index, _, _ in sorted(finished, key=lambda item: item[2])]
    latencies = sorted(done - sent for _, sent, done in finished)
    hanse = {
        **_median_round(via),
        "concurrent_8": {
            "answered": len(finished),
            "completion_order": order,
            "latency_p50_s": latencies[len(latencies) // 2],
            "latency_max_s": latencies[-1],
        },
    }
    return {
        "direct": _median_round(alone),
        "direct_prompt_cached": _median_round(cached),
        "hanse": hanse,
    }


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    direct = Direct()
    workdir = Path(tempfile.mkdtemp(prefix="hanse-embedded-"))
    env = {**os.environ, "HANSE_DATA_DIR": str(workdir), "HANSE_LOG_LEVEL": "warning"}
    env.pop("HANSE_CONFIG", None)
    hanse = str(Path(sys.executable).parent / "hanse")
    key = subprocess.run(
        [hanse, "keys", "create"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    server = subprocess.Popen(
        [hanse, "serve", "--port", "8695"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                httpx.get("http://127.0.0.1:8695/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        result = asyncio.run(side_by_side("http://127.0.0.1:8695", key, direct))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["ratio"] = result["hanse"]["tokens_per_s"] / result["direct"]["tokens_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
