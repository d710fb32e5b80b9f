"""Exact money: the charge is the price of the tokens the provider reported, to the pico-euro, even
above the hold; cached tokens at their own price; usage a provider left out counted by the gateway
(and the ledger says so); impossible usage never credits anyone; a stream is bounded in time and
its hold outlives it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from sqlalchemy import text

from hanse.auth import Principal
from hanse.billing import Billing
from hanse.config.loader import ConfigError, load_catalog
from hanse.config.schema import RouteConfig
from hanse.domain import Usage
from hanse.providers.local import embedded_model_path
from hanse.storage import schema
from hanse.storage.accounts import AccountStore
from hanse.storage.database import Database
from hanse.storage.ledger import LedgerStore
from tests.harness import GatewayProcess, create_postgres_database, sse_events

ADMIN = "exact-admin-token"
PICO_IN, PICO_OUT, PICO_CACHED = 2_000_000, 3_000_000, 500_000  # per token: 2, 3, 0.5 EUR/M
PIECES = ["Lübeck, ", "Hamburg, ", "Bremen."]
STREAM_TIMEOUT_S = 2
GGUF = embedded_model_path()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Das Wetter in einer Hansestadt, stündlich, mit Wind und Regen.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "Die Stadt, z. B. Lübeck"}},
            "required": ["city"],
        },
    },
}


class Upstream:
    """An OpenAI-shaped upstream whose usage the request's `user` field scripts:
    `usage:<prompt>:<completion>[:<cached>]` reports those counts, `none` reports no usage at all,
    `drip:<pieces>:<ms>` streams that many pieces that far apart (and reports no usage)."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> Upstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _usage_field(script: str) -> dict[str, Any] | None:
    if not script.startswith("usage:"):
        return None
    prompt, completion, *cached = (int(x) for x in script.split(":")[1:])
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached[0]}
    return usage


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        script = str(body.get("user") or "none")
        usage = _usage_field(script)
        try:
            if body.get("stream"):
                self._stream(script, usage)
            else:
                self._json(script, usage)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, script: str, usage: dict[str, Any] | None) -> None:
        answer: dict[str, Any] = {
            "id": "chatcmpl-exact",
            "object": "chat.completion",
            "created": 1735689600,
            "model": "exact",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(PIECES)},
                    "finish_reason": "stop",
                }
            ],
        }
        if usage is not None:
            answer["usage"] = usage
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, script: str, usage: dict[str, Any] | None) -> None:
        pieces, gap_s = PIECES, 0.0
        if script.startswith("drip:"):
            count, ms = (int(x) for x in script.split(":")[1:])
            pieces, gap_s = ["Hanse "] * count, ms / 1000
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._event({"role": "assistant", "content": ""})
        for piece in pieces:
            time.sleep(gap_s)
            self._event({"content": piece})
        self._event({}, "stop")
        if usage is not None:
            self._send(
                {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        self._write(b"data: [DONE]\n\n")
        self._write(b"")

    def _event(self, delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        self._send({"id": "c", "object": "chat.completion.chunk", "choices": [choice]})

    def _send(self, chunk: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    def _write(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _catalog(base_url: str) -> str:
    route = (
        '[[models.routes]]\nprovider = "up"\ninput_eur_per_million = "2"\n'
        'output_eur_per_million = "3"\ncached_input_eur_per_million = "0.5"\n'
    )
    return (
        f"[routing]\nstream_timeout_s = {STREAM_TIMEOUT_S}\n\n"
        f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{base_url}"\n\n'
        '[[models]]\nid = "estimated"\ncontext_length = 100000\n'
        "capabilities = { function_calling = true }\n" + route + "\n"
        f'[[models]]\nid = "counted"\ncontext_length = 100000\ntokenizer = "gguf:{GGUF}"\n'
        + route
        + '\n[[models]]\nid = "tiny"\ncontext_length = 64\n'
        + route
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[GatewayProcess]:
    env = {
        "HANSE_ADMIN_TOKEN": ADMIN,
        # A hold past this TTL would be swept: live ones must outlive it.
        "HANSE_RESERVATION_TTL_S": "1",
        "HANSE_SWEEP_INTERVAL_S": "0.2",
    }
    workdir = Path(tmp_path_factory.mktemp("exact"))
    process = GatewayProcess(workdir, _catalog(upstream.base_url), env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def vocabulary() -> llama_cpp.Llama:
    """The embedded model's own vocabulary, to count what the gateway should have counted."""
    return llama_cpp.Llama(model_path=GGUF, vocab_only=True, verbose=False)


def _tokens(vocabulary: llama_cpp.Llama, text: str) -> int:
    return len(vocabulary.tokenize(text.encode(), add_bos=False, special=False))


def _templated(vocabulary: llama_cpp.Llama, messages: list[dict[str, Any]]) -> int:
    eos, bos = (
        vocabulary.detokenize([token], special=True).decode()
        for token in (vocabulary.token_eos(), vocabulary.token_bos())
    )
    formatter = Jinja2ChatFormatter(
        template=vocabulary.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos
    )
    prompt = formatter(messages=messages).prompt
    return len(vocabulary.tokenize(prompt.encode(), add_bos=False, special=True))


def _account(gateway: GatewayProcess, name: str, credits: str = "10") -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    base = f"{gateway.base_url}/admin/accounts"
    created = httpx.post(base, headers=headers, json={"name": name, "plan": "credits_only"})
    assert created.status_code == 201, created.text
    if credits != "0":
        topped = httpx.post(f"{base}/{name}/topup", headers=headers, json={"credits": credits})
        assert topped.status_code == 200, topped.text
    return gateway.create_key(account=name)


def _credits_pico(gateway: GatewayProcess, name: str) -> int:
    [row] = gateway.sql("SELECT credits_pico FROM accounts WHERE name = :n", n=name)
    return int(row["credits_pico"])


def _ledger(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for _ in range(100):  # a stream settles as its last chunk goes out
        rows = gateway.sql("SELECT * FROM ledger WHERE request_id = :r", r=request_id)
        if rows:
            break
        time.sleep(0.05)
    [row] = rows
    return row


def _chat(gateway: GatewayProcess, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "estimated", "max_tokens": 4, **{k: v for k, v in body.items() if v}},
        timeout=30,
    )


def _required_pico(gateway: GatewayProcess, key: str, **body: Any) -> int:
    """The hold a request needs, as a 402 reports it to an empty account."""
    refused = _chat(gateway, key, **body)
    assert refused.status_code == 402, refused.text
    return int(Decimal(refused.json()["error"]["details"]["required"]) * 10**12)


LUBECK = [{"role": "user", "content": "Wie weit ist es von Lübeck nach Hamburg?"}]
CJK = [{"role": "user", "content": "汉堡和吕贝克是汉萨同盟的城市。" * 20}]
HISTORY = [
    {"role": "user", "content": "Wetter in Lübeck?", "name": "hans"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Lübeck"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 7, "wind": "NW 5"}'},
]
CASES = {
    "lubeck": {"messages": LUBECK},
    "cjk": {"messages": CJK},
    "tools": {"messages": HISTORY, "tools": [WEATHER]},
}


def test_estimates_count_what_is_forwarded(gateway: GatewayProcess) -> None:
    key = _account(gateway, "empty", credits="0")
    plain = _required_pico(gateway, key, messages=HISTORY)
    with_tools = _required_pico(gateway, key, messages=HISTORY, tools=[WEATHER])
    # The tool's definition goes upstream: at least one token per four characters of its JSON,
    # each held at the input price.
    assert with_tools - plain >= len(json.dumps(WEATHER["function"])) // 4 * PICO_IN
    bare = [{"role": "user", "content": "Wetter in Lübeck?"}, {"role": "user", "content": ""}]
    history_only = plain - _required_pico(gateway, key, messages=bare)
    # Names, tool-call ids, names and arguments, and the tool result all cost tokens.
    assert history_only >= len('hanscall_1get_weather{"city": "Lübeck"}call_1') // 4 * PICO_IN
    # CJK: at least a token a character (the embedded vocabulary spends about two).
    cjk = _required_pico(gateway, key, **CASES["cjk"])
    assert cjk >= len(CJK[0]["content"]) * PICO_IN
    assert gateway.sql("SELECT count(*) AS n FROM reservations")[0]["n"] == 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_usage_above_the_hold_is_charged_in_full(
    gateway: GatewayProcess, case: str, stream: bool
) -> None:
    name = f"full-{case}-{stream}"
    key = _account(gateway, name, credits="1")
    before = _credits_pico(gateway, name)
    prompt, completion = 4321, 987  # far above the estimate and max_tokens = 4
    request_id = f"full-{case}-{int(stream)}"
    response = _chat(
        gateway,
        key,
        **CASES[case],
        user=f"usage:{prompt}:{completion}",
        request_id=request_id,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
    )
    assert response.status_code == 200, response.text
    exact = prompt * PICO_IN + completion * PICO_OUT
    if stream:
        final = sse_events(response.text)[-2]
        assert final["usage"]["prompt_tokens"] == prompt
        cost = final["billing_cost"]["credits"]
    else:
        assert response.json()["usage"]["completion_tokens"] == completion
        cost = response.json()["billing_cost"]["credits"]
    assert Decimal(cost) * 10**12 == exact
    row = _ledger(gateway, request_id)
    assert (row["status"], row["cost_pico"], row["unpaid_pico"]) == ("ok", exact, 0)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    assert row["usage_source"] == "reported"
    assert _credits_pico(gateway, name) == before - exact


def test_what_the_balance_cannot_cover_is_recorded_unpaid(gateway: GatewayProcess) -> None:
    key = _account(gateway, "short", credits="0.001")  # covers the hold, not the usage
    response = _chat(gateway, key, messages=LUBECK, user="usage:900:100", request_id="short-1")
    assert response.status_code == 200, response.text
    exact = 900 * PICO_IN + 100 * PICO_OUT
    row = _ledger(gateway, "short-1")
    assert row["status"] == "unpaid"
    assert row["cost_pico"] == 10**9  # the whole balance, and no more
    assert row["cost_pico"] + row["unpaid_pico"] == exact
    assert Decimal(response.json()["billing_cost"]["credits"]) == Decimal("0.001")
    assert _credits_pico(gateway, "short") == 0
    usage = httpx.get(
        f"{gateway.base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).json()
    assert Decimal(usage["totals"]["cost"]["unpaid"]) * 10**12 == row["unpaid_pico"]


def test_cached_prompt_tokens_at_the_cached_price(gateway: GatewayProcess) -> None:
    key = _account(gateway, "cache")
    response = _chat(gateway, key, messages=LUBECK, user="usage:1000:10:600", request_id="cache-1")
    assert response.status_code == 200, response.text
    exact = 400 * PICO_IN + 600 * PICO_CACHED + 10 * PICO_OUT
    assert Decimal(response.json()["billing_cost"]["credits"]) * 10**12 == exact
    row = _ledger(gateway, "cache-1")
    assert (row["cost_pico"], row["cached_prompt_tokens"], row["prompt_tokens"]) == (
        exact,
        600,
        1000,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_is_counted_with_the_models_tokenizer(
    gateway: GatewayProcess, vocabulary: llama_cpp.Llama, stream: bool
) -> None:
    key = _account(gateway, f"uncounted-{stream}")
    request_id = f"uncounted-{int(stream)}"
    response = _chat(
        gateway,
        key,
        model="counted",
        messages=LUBECK,
        user="none",
        request_id=request_id,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
    )
    assert response.status_code == 200, response.text
    row = _ledger(gateway, request_id)
    assert row["usage_source"] == "counted"
    # The completion: the text delivered, counted with the model's own vocabulary.
    assert row["completion_tokens"] == _tokens(vocabulary, "".join(PIECES))
    # The prompt: the model's chat template applied (llama-cpp-python's own formatter), as the
    # upstream that serves this model counts it.
    assert row["prompt_tokens"] == _templated(vocabulary, LUBECK)
    exact = row["prompt_tokens"] * PICO_IN + row["completion_tokens"] * PICO_OUT
    assert row["cost_pico"] == exact
    answer = sse_events(response.text)[-2] if stream else response.json()
    # The client is told what it was charged for.
    assert answer["usage"]["prompt_tokens"] == row["prompt_tokens"]
    assert answer["usage"]["completion_tokens"] == row["completion_tokens"]
    charged = answer["billing_cost"]["credits"]
    assert Decimal(charged) * 10**12 == exact


def test_missing_usage_without_a_tokenizer_is_estimated(gateway: GatewayProcess) -> None:
    key = _account(gateway, "unknown-tokenizer")
    response = _chat(gateway, key, messages=CJK, user="none", request_id="estimated-1", stream=True)
    assert response.status_code == 200, response.text
    row = _ledger(gateway, "estimated-1")
    assert row["usage_source"] == "estimated"
    assert row["prompt_tokens"] >= len(CJK[0]["content"])
    assert row["completion_tokens"] >= len(PIECES)
    assert row["cost_pico"] == row["prompt_tokens"] * PICO_IN + row["completion_tokens"] * PICO_OUT


@pytest.mark.parametrize(
    ("case", "script"),
    [(1, "usage:-5000:10"), (2, "usage:10:-5000"), (3, "usage:10:99999999999999")],
)
def test_impossible_usage_is_refused_without_credit(
    gateway: GatewayProcess, case: int, script: str
) -> None:
    name = request_id = f"impossible-{case}"
    key = _account(gateway, name, credits="1")
    before = _credits_pico(gateway, name)
    response = _chat(gateway, key, messages=LUBECK, user=script, request_id=request_id)
    assert response.status_code == 502, response.text
    row = _ledger(gateway, request_id)
    assert (row["status"], row["cost_pico"]) == ("failed", 0)
    assert _credits_pico(gateway, name) == before
    assert gateway.sql("SELECT count(*) AS n FROM reservations")[0]["n"] == 0


def test_a_long_prompt_is_left_to_the_provider_unless_surely_too_long(
    gateway: GatewayProcess,
) -> None:
    key = _account(gateway, "windows")
    # Estimated at 4 characters a token this is over the 64-token window, but a tokenizer may
    # take a whole word a token: only the provider knows, so it is asked.
    borderline = [{"role": "user", "content": "harbour " * 30}]
    assert _chat(gateway, key, model="tiny", messages=borderline).status_code == 200
    # 64 tokens hold at most 64 x 16 bytes of text: this cannot fit, whatever the tokenizer.
    hopeless = [{"role": "user", "content": "harbour " * 200}]
    refused = _chat(gateway, key, model="tiny", messages=hopeless)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "INFERENCE_3207"


def test_a_stream_is_bounded_and_its_hold_outlives_it(gateway: GatewayProcess) -> None:
    key = _account(gateway, "dripping")
    seen_hold: list[dict[str, Any]] = []
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "estimated",
            "messages": LUBECK,
            "max_tokens": 100,
            "stream": True,
            "user": "drip:60:100",  # six seconds of answer, past the two-second bound
            "request_id": "drip-1",
        },
        timeout=30,
    ) as response:
        started = time.monotonic()
        for line in response.iter_lines():
            lines.append(line)
            if not seen_hold and time.monotonic() - started > 1.5:  # past the 1 s TTL
                seen_hold = gateway.sql("SELECT created_at, expires_at FROM reservations")
        took = time.monotonic() - started
    assert took < STREAM_TIMEOUT_S + 2
    [hold] = seen_hold  # still held: the sweeper renewed it rather than release it
    assert _seconds(hold["expires_at"]) - _seconds(hold["created_at"]) > 1.5
    events = sse_events("\n\n".join(lines))
    assert events[-1]["error"]["code"] == "INFERENCE_3107"
    delivered = sum(1 for e in events if "choices" in e and e["choices"][0]["delta"].get("content"))
    assert 5 < delivered < 60
    row = _ledger(gateway, "drip-1")
    assert row["status"] == "cut"
    assert row["completion_tokens"] >= delivered
    assert row["cost_pico"] == row["prompt_tokens"] * PICO_IN + row["completion_tokens"] * PICO_OUT
    assert gateway.sql("SELECT count(*) AS n FROM reservations")[0]["n"] == 0


def test_the_sweeper_leaves_a_live_stream_alone(gateway: GatewayProcess) -> None:
    # The reservation TTL is 1 s and the sweeper runs every 0.2 s; this stream takes 1.5 s.
    # The sweeper once released such holds: the answer then ended `unpaid`, in two ledger rows.
    key = _account(gateway, "patient")
    response = _chat(
        gateway, key, messages=LUBECK, stream=True, user="drip:15:100", request_id="patient-1"
    )
    assert response.status_code == 200
    assert sse_events(response.text)[-1] == "[DONE]"
    rows = gateway.sql("SELECT status FROM ledger WHERE request_id = 'patient-1'")
    assert rows == [{"status": "ok"}]  # one row: never `expired`, then `unpaid`


def _seconds(value: Any) -> float:
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    return float(value.timestamp())


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ('tokenizer = "gguf:/nowhere/model.gguf"', "does not exist"),
        ('tokenizer = "tiktoken:no_such_encoding"', "tiktoken"),
        ('tokenizer = "sentencepiece:x"', "gguf:<path>"),
        ('cached_input_eur_per_million = "0.0000001"', "at most 6 decimals"),
    ],
)
def test_counting_and_pricing_settings_are_checked_at_start(
    tmp_path: Path, setting: str, complaint: str
) -> None:
    model = setting if setting.startswith("tokenizer") else ""
    route = setting if not model else ""
    path = tmp_path / "hanse.toml"
    path.write_text(
        '[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'[[models]]\nid = "m"\ncontext_length = 64\n{model}\n'
        f'[[models.routes]]\nprovider = "up"\n{route}\n'
    )
    with pytest.raises(ConfigError, match=complaint):
        load_catalog(path)
    path.write_text(
        path.read_text().replace(setting, f'tokenizer = "gguf:{GGUF}"' if model else "")
    )
    assert load_catalog(path).models[0].routes[0].cached_input_price == 0


# --- settlement itself, on both databases ---------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_settlement_clamps_impossible_counts(engine: str, tmp_path: Path) -> None:
    url = (
        create_postgres_database()
        if engine == "postgresql"
        else f"sqlite:///{tmp_path / 'hanse.db'}"
    )
    route = RouteConfig(provider="up", input_eur_per_million=Decimal(2))

    async def run() -> tuple[int, list[Any], int]:
        database = Database(url)
        try:
            await schema.upgrade(database)
            accounts, ledger = AccountStore(database), LedgerStore(database)
            account, _ = await accounts.create("clamped", "credits_only")
            await accounts.top_up("clamped", 0, 10**12)
            billing = Billing(ledger, accounts, reservation_ttl_s=60)
            principal = Principal("k", account.id, "clamped", ("*",), plan="credits_only")
            charges = []
            for usage in (Usage(-(10**6), -5), Usage(2**40, 2**40)):
                hold = await billing.reserve(principal, 1000, "r", "m")
                charge = await billing.settle(
                    hold, status="ok", route=route, usage=usage, impact=None
                )
                charges.append(charge.amount_pico)
            async with database.connect() as conn:
                query = "SELECT prompt_tokens, completion_tokens, cost_pico FROM ledger ORDER BY id"
                rows = (await conn.execute(text(query))).all()
                left = (await conn.execute(text("SELECT count(*) FROM reservations"))).scalar()
            balance = (await accounts.get("clamped")).credits_pico  # type: ignore[union-attr]
            return balance, [*charges, *map(tuple, rows)], int(left or 0)
        finally:
            await database.dispose()

    balance, seen, holds_left = asyncio.run(run())
    negative, huge, negative_row, huge_row = seen
    assert negative == 0 and negative_row == (0, 0, 0)  # no credit from negative counts
    assert huge_row[:2] == (2**31 - 1, 2**31 - 1)  # the columns' maximum, and no failure
    assert huge == 10**12  # the whole balance: the rest is unpaid
    assert balance == 0
    assert holds_left == 0
