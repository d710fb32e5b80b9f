"""Wrong `X-Vault-Key` guesses are throttled: per client (address, API key) and per account, a
doubling wait answered with 429 AUTH_1032 and Retry-After, before any key derivation; and while
someone guesses, everyone else is answered quickly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hanse.auth import KNOWN_SCOPES
from hanse.errors import HanseError
from hanse.vault.throttle import ACCOUNT_FACTOR, FORGET_S, MAX_WAIT_S, KeyThrottle
from tests.composition import UPSTREAM, catalog, post_vault
from tests.harness import GatewayProcess
from tests.upstream import ScriptedUpstream

VAULT_KEY = "throttle tests vault key 0001"
ATTEMPTS = 5  # the default HANSE_VAULT_KEY_ATTEMPTS
BLUEPRINT = {"name": "throttled", "model": UPSTREAM}
ADMIN_TOKEN = "throttle-tests-admin-token"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    # The admin API makes keys much faster than the CLI, and these tests need many.
    env = {"HANSE_VAULT_SCRYPT_N": "16384", "HANSE_ADMIN_TOKEN": ADMIN_TOKEN}
    workdir = Path(tmp_path_factory.mktemp("vault-throttle"))
    process = GatewayProcess(workdir, catalog(upstream.base_url), env=env).start()
    yield process
    process.stop()


def _account(gateway: GatewayProcess, name: str, keys: int = 1) -> tuple[list[str], str]:
    """API keys of a fresh account whose vault holds one blueprint, and that blueprint's id."""
    api_keys = []
    for _ in range(keys):
        created = httpx.post(
            f"{gateway.base_url}/admin/keys",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"account": name, "scopes": list(KNOWN_SCOPES)},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        api_keys.append(str(created.json()["key"]))
    response = post_vault(gateway, api_keys[0], "/v1/blueprints", BLUEPRINT, VAULT_KEY)
    assert response.status_code == 201, response.text
    return api_keys, str(response.json()["id"])


def _read(gateway: GatewayProcess, key: str, item_id: str, vault_key: str) -> httpx.Response:
    return httpx.get(
        f"{gateway.base_url}/v1/blueprints/{item_id}",
        headers={"Authorization": f"Bearer {key}", "X-Vault-Key": vault_key},
        timeout=60,
    )


def _chat(gateway: GatewayProcess, key: str, item_id: str, vault_key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "X-Vault-Key": vault_key},
        json={"messages": [{"role": "user", "content": "hi"}], "blueprint_id": item_id},
        timeout=60,
    )


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def _fail(gateway: GatewayProcess, key: str, item_id: str, times: int, chat: bool = False) -> None:
    call = _chat if chat else _read
    for attempt in range(times):
        response = call(gateway, key, item_id, f"wrong key number {attempt}")
        assert (response.status_code, _code(response)) == (403, "AUTH_1031"), response.text


def _assert_throttled(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("AUTH_1032", "rate_limit_error")
    assert response.headers["Retry-After"] == str(retry_after)
    assert error["details"] == {"retry_after_s": retry_after}


def test_a_client_waits_after_too_many_wrong_keys(gateway: GatewayProcess) -> None:
    (key,), item_id = _account(gateway, "throttle-client")
    _fail(gateway, key, item_id, ATTEMPTS)
    # Even the right key waits: a refused try derives nothing and tells nothing.
    _assert_throttled(_read(gateway, key, item_id, VAULT_KEY), 1)
    time.sleep(1.1)
    _fail(gateway, key, item_id, 1)
    _assert_throttled(_read(gateway, key, item_id, "another wrong key"), 2)  # the wait doubles
    time.sleep(2.1)
    assert _read(gateway, key, item_id, VAULT_KEY).status_code == 200
    # The success forgot the client's failures: it has its full allowance again.
    _fail(gateway, key, item_id, ATTEMPTS)
    _assert_throttled(_read(gateway, key, item_id, VAULT_KEY), 1)


def test_the_chat_path_counts_against_the_same_key(gateway: GatewayProcess) -> None:
    (key,), item_id = _account(gateway, "throttle-chat")
    _fail(gateway, key, item_id, ATTEMPTS, chat=True)
    _assert_throttled(_chat(gateway, key, item_id, VAULT_KEY), 1)
    _assert_throttled(_read(gateway, key, item_id, VAULT_KEY), 1)


def test_another_account_is_not_affected(gateway: GatewayProcess) -> None:
    (guesser,), guessed = _account(gateway, "throttle-guessed")
    (other,), own = _account(gateway, "throttle-bystander")
    _fail(gateway, guesser, guessed, ATTEMPTS)
    _assert_throttled(_read(gateway, guesser, guessed, VAULT_KEY), 1)
    assert _read(gateway, other, own, VAULT_KEY).status_code == 200  # same address, other account


def test_the_account_waits_after_many_clients_guessed(gateway: GatewayProcess) -> None:
    """On the chat path the address is not counted: each API key has its own allowance, and
    the account stops them all once together they reach four times that."""
    keys, item_id = _account(gateway, "throttle-account", keys=ACCOUNT_FACTOR + 1)
    for key in keys[:ACCOUNT_FACTOR]:
        _fail(gateway, key, item_id, ATTEMPTS, chat=True)
    _assert_throttled(_chat(gateway, keys[-1], item_id, VAULT_KEY), 1)
    time.sleep(1.1)
    response = _chat(gateway, keys[-1], item_id, VAULT_KEY)
    assert response.status_code == 200, response.text


def test_others_are_answered_quickly_while_keys_are_guessed(
    gateway: GatewayProcess, upstream: ScriptedUpstream
) -> None:
    guessed = [_account(gateway, f"throttle-flood-{n}") for n in range(3)]
    (bystander,), own = _account(gateway, "throttle-flood-bystander")
    stop = threading.Event()
    codes: list[str] = []

    def guess(worker: int) -> None:
        with httpx.Client(timeout=60) as client:
            attempt = 0
            while not stop.is_set():
                (key,), item_id = guessed[(worker + attempt) % len(guessed)]
                attempt += 1
                response = client.get(
                    f"{gateway.base_url}/v1/blueprints/{item_id}",
                    headers={"Authorization": f"Bearer {key}", "X-Vault-Key": f"guess {attempt}"},
                )
                codes.append(_code(response))

    def timed(call: Any) -> float:
        started = time.perf_counter()
        response = call()
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    headers = {"Authorization": f"Bearer {bystander}"}
    with ThreadPoolExecutor(max_workers=12) as pool:
        guessers = [pool.submit(guess, worker) for worker in range(12)]
        time.sleep(0.3)
        try:
            plain = [
                timed(lambda: httpx.get(f"{gateway.base_url}/v1/models", headers=headers))
                for _ in range(10)
            ]
            chats = [
                timed(
                    lambda: httpx.post(
                        f"{gateway.base_url}/v1/chat/completions",
                        headers=headers,
                        json={"model": UPSTREAM, "messages": [{"role": "user", "content": "hi"}]},
                        timeout=30,
                    )
                )
                for _ in range(5)
            ]
            vault = timed(lambda: _read(gateway, bystander, own, VAULT_KEY))
        finally:
            stop.set()
            for future in guessers:
                future.result()
    assert max(plain) < 1.0, plain
    assert max(chats) < 1.0, chats
    assert vault < 5.0
    assert "AUTH_1031" in codes and "AUTH_1032" in codes
    # Every account was throttled, so most guesses cost no derivation at all.
    assert codes.count("AUTH_1032") > codes.count("AUTH_1031")


def test_the_wait_is_capped_and_forgotten_a_day_later() -> None:
    now = [1000.0]
    throttle = KeyThrottle(2, clock=lambda: now[0])
    for _ in range(2000):  # far past where 2.0 ** n would overflow
        throttle.failed(7, ["key k"])
    with pytest.raises(HanseError) as refused:
        throttle.check(7, ["key k"])
    assert refused.value.headers["Retry-After"] == str(int(MAX_WAIT_S))
    now[0] += MAX_WAIT_S + 1
    throttle.check(7, ["key k"])  # the wait is over, the count is not
    throttle.failed(7, ["key k"])
    with pytest.raises(HanseError):
        throttle.check(7, ["key k"])
    now[0] += FORGET_S + 1
    throttle.check(7, ["key k"])
    throttle.failed(7, ["key k"])
    throttle.check(7, ["key k"])  # one failure of a fresh count: no wait
