"""The small holes an attacker finds: odd JSON, odd times, odd names, races, piles of slow requests.

One gateway (SQLite, or PostgreSQL + Redis in the PostgreSQL lane) in front of a scripted upstream
whose `slow-<ms>` model keeps requests in progress, with `max_in_flight = 2`.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import GatewayProcess
from tests.upstream import ScriptedUpstream

ADMIN = "admin-token-hostile-0123456789"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    config = f"""
[rate_limits]
max_in_flight = 2

[[providers]]
id = "scripted"
kind = "openai_compatible"
base_url = "{upstream.base_url}"

[[models]]
id = "slow"
context_length = 4096
[[models.routes]]
provider = "scripted"
upstream_model = "slow-1500"

[[models]]
id = "drip"
context_length = 4096
[[models.routes]]
provider = "scripted"
upstream_model = "drip-300"
"""
    process = GatewayProcess(
        Path(tmp_path_factory.mktemp("hostile")), config=config, env={"HANSE_ADMIN_TOKEN": ADMIN}
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return gateway.create_key(account="hostile")


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"name": "a\\ud800b"}', "VALIDATION_4001"),  # a lone surrogate escape
        (b'{"name": "x", "plan": "energy_only", "plan": "credits_only"}', "VALIDATION_4001"),
        (b'{"name": "x", "plan": ' + b"9" * 5000 + b"}", "VALIDATION_4004"),
        (b'{"name": "\xff"}', "VALIDATION_4001"),  # not UTF-8
    ],
)
def test_json_that_parsers_read_differently_is_refused(
    http: httpx.Client, raw: bytes, code: str
) -> None:
    response = http.post("/admin/accounts", content=raw, headers=_admin())
    assert response.status_code == 400
    assert _code(response) == code


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (
            b'{"model": "slow", "model": "drip", "messages": [{"role": "user", "content": "x"}]}',
            "VALIDATION_4001",
        ),
        (
            b'{"model": "slow", "messages": [{"role": "user", "content": "\\udc00"}]}',
            "VALIDATION_4001",
        ),
        (b'{"model": "slow", "messages": [], "seed": ' + b"1" * 5000 + b"}", "VALIDATION_4004"),
    ],
)
def test_chat_bodies_that_parsers_read_differently_are_refused(
    http: httpx.Client, key: str, raw: bytes, code: str
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    response = http.post("/v1/chat/completions", content=raw, headers=headers)
    assert response.status_code == 400
    assert _code(response) == code


def test_a_duplicate_key_names_itself(http: httpx.Client) -> None:
    raw = b'{"name": "dup", "plan": "energy_only", "plan": "credits_only"}'
    error = http.post("/admin/accounts", content=raw, headers=_admin()).json()["error"]
    assert error["details"] == {"duplicate_key": "plan"}


@pytest.mark.parametrize(
    "name", ["a\x00b", "line\nbreak", "tab\there", "\u202eevil", " pad", "x\x7f"]
)
def test_account_names_are_printable(
    http: httpx.Client, gateway: GatewayProcess, name: str
) -> None:
    response = http.post("/admin/accounts", json={"name": name}, headers=_admin())
    assert response.status_code == 400, response.text
    key = http.post("/admin/keys", json={"account": name}, headers=_admin())
    assert key.status_code == 400
    if "\x00" not in name:  # no command line can carry a NUL
        cli = gateway.cli("accounts", "create", name)
        assert cli.returncode != 0
        assert "printable" in cli.stderr


def test_an_ordinary_unicode_name_is_fine(http: httpx.Client) -> None:
    response = http.post("/admin/accounts", json={"name": "Lübeck Hafen"}, headers=_admin())
    assert response.status_code == 201


def test_concurrent_creations_of_one_account_all_succeed(http: httpx.Client) -> None:
    name = "race-" + secrets.token_hex(4)

    def create(_: int) -> int:
        return http.post("/admin/accounts", json={"name": name}, headers=_admin()).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(create, range(32)))
    assert statuses == [201] * 32
    assert http.get(f"/admin/accounts/{name}", headers=_admin()).status_code == 200


def test_usage_takes_extreme_times_and_offsets(http: httpx.Client, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    for start, end in [
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("0", "253402300799"),
        ("2026-01-01T00:00:00+14:00", "2026-01-01T00:00:00-12:00"),
    ]:
        response = http.get("/v1/usage", params={"start": start, "end": end}, headers=auth)
        assert response.status_code == 200, response.text
    for bad in ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1e400", "nan"]:
        response = http.get("/v1/usage", params={"start": bad}, headers=auth)
        assert response.status_code == 400, (bad, response.text)
        assert _code(response) == "VALIDATION_4005"
    shifted = http.get(
        "/v1/usage", params={"start": "2026-01-01T10:00:00+02:00"}, headers=auth
    ).json()
    assert shifted["start"] == "2026-01-01T08:00:00+00:00"  # the offset applied, not dropped


def _chat(http: httpx.Client, key: str, model: str) -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
    )


def test_an_account_has_at_most_max_in_flight_requests_in_progress(
    http: httpx.Client, gateway: GatewayProcess
) -> None:
    key = gateway.create_key(account="piles-" + secrets.token_hex(4))
    other = gateway.create_key(account="bystander-" + secrets.token_hex(4))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(_chat, http, key, "slow") for _ in range(2)]
        time.sleep(0.5)  # both are in progress upstream now
        refused = _chat(http, key, "slow")
        started = time.perf_counter()
        bystander = pool.submit(_chat, http, other, "slow")
        answers = [future.result() for future in slow]
        assert bystander.result().status_code == 200  # another account is not held up
    assert refused.status_code == 429
    assert _code(refused) == "AUTH_1028"
    assert refused.json()["error"]["details"]["limit"] == "max_in_flight"
    assert refused.headers["retry-after"] == "1"
    assert [a.status_code for a in answers] == [200, 200]
    assert time.perf_counter() - started < 5
    assert _chat(http, key, "slow").status_code == 200  # the count went back down


def test_a_stream_counts_until_it_ends(http: httpx.Client, gateway: GatewayProcess) -> None:
    key = gateway.create_key(account="streams-" + secrets.token_hex(4))
    body: dict[str, Any] = {
        "model": "drip",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    auth = {"Authorization": f"Bearer {key}"}
    with (
        http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as first,
        http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as second,
    ):
        assert first.status_code == second.status_code == 200
        assert _chat(http, key, "slow").status_code == 429
        first.read()
        second.read()
    assert _chat(http, key, "slow").status_code == 200
    # A client that leaves mid-stream gives its place back too.
    with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as left:
        next(left.iter_bytes())
    with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as left:
        next(left.iter_bytes())
    time.sleep(1)
    assert _chat(http, key, "slow").status_code == 200
