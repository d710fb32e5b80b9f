"""What the gateway tells operators about itself: its overhead per request and /metrics."""

from __future__ import annotations

import re

import httpx
from openai import OpenAI

from tests.harness import GatewayProcess

MODEL = "smollm2-135m"


def test_every_response_reports_its_overhead(client: OpenAI, gateway: GatewayProcess) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    overhead = float(raw.headers["x-hanse-overhead-ms"])
    assert overhead >= 0
    # The provider's time is not overhead: a generation takes longer than the gateway's share.
    assert overhead < raw.elapsed.total_seconds() * 1000
    refused = httpx.get(f"{gateway.base_url}/v1/models")
    assert refused.status_code == 401
    assert float(refused.headers["x-hanse-overhead-ms"]) >= 0


def test_metrics_count_requests_tokens_energy_and_circuits(
    client: OpenAI, gateway: GatewayProcess
) -> None:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    response = httpx.get(f"{gateway.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    chat = re.search(
        r'hanse_requests_total\{model="smollm2-135m",path="/v1/chat/completions",'
        r'route="hanse-local",status="200"\} (\d+)',
        text,
    )
    assert chat and int(chat[1]) >= 1
    completion = re.search(
        r'hanse_tokens_total\{kind="completion",model="smollm2-135m",route="hanse-local"\} ([\d.]+)',
        text,
    )
    assert completion and float(completion[1]) >= 1
    energy = re.search(
        r'hanse_energy_kwh_total\{model="smollm2-135m",route="hanse-local"\} (\S+)', text
    )
    assert energy and float(energy[1]) > 0
    assert 'hanse_overhead_seconds_bucket{le="0.001",path="/v1/chat/completions"}' in text
    assert 'hanse_circuit_state{route="hanse-local@smollm2-135m"} 0.0' in text
