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


def direct() -> dict[str, float]:
    """llama-cpp-python alone: the same GGUF, context, threads and greedy sampling."""
    import llama_cpp

    from hanse.providers.local import embedded_model_path

    llama = llama_cpp.Llama(
        model_path=embedded_model_path(),
        n_ctx=8192,
        n_threads=2,
        n_threads_batch=2,
        n_batch=512,
        verbose=False,
    )
    llama.create_chat_completion(messages=PROMPT, max_tokens=8, temperature=0)  # warm-up
    started = time.perf_counter()
    tokens = 0
    for chunk in llama.create_chat_completion(
        messages=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
    elapsed = time.perf_counter() - started
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


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


async def through_hanse(base: str, key: str) -> dict[str, Any]:
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
        started = time.perf_counter()
        tokens = await _stream_usage(base, key, body)
        elapsed = time.perf_counter() - started

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
    return {
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "concurrent_8": {
            "answered": len(finished),
            "completion_order": order,
            "latency_p50_s": latencies[len(latencies) // 2],
            "latency_max_s": latencies[-1],
        },
    }


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    alone = direct()
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
        via = asyncio.run(through_hanse("http://127.0.0.1:8695", key))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        json.dumps(
            {"direct": alone, "hanse": via, "ratio": via["tokens_per_s"] / alone["tokens_per_s"]}
        )
    )


if __name__ == "__main__":
    main()
