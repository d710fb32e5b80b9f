"""Rate limits per account, in one process and through Redis; and when Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hanse.config.ratelimits import AccountLimits, RateLimitsConfig
from hanse.ratelimits.buckets import PERIOD_S, LocalBuckets, decide, remaining
from hanse.ratelimits.shared import SharedBuckets
from hanse.redislink import RedisLink
from tests.harness import REDIS_URL, GatewayProcess, free_port, redis_prefix
from tests.upstream import USAGE, ScriptedUpstream

ADMIN = "limits-admin"
PLAN_RPM = 3


def catalog(base_url: str) -> str:
    return f"""
[rate_limits]
requests_per_minute = 0
  [rate_limits.plans.credits_only]
  requests_per_minute = {PLAN_RPM}

[[providers]]
id = "up"
kind = "openai_compatible"
base_url = "{base_url}"

[[models]]
id = "free"
context_length = 4096
  [[models.routes]]
  provider = "up"
  upstream_model = "ok"
"""


@pytest.fixture(scope="module", params=["in-process", "redis"])
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: ScriptedUpstream,
) -> Iterator[GatewayProcess]:
    env = {"HANSE_ADMIN_TOKEN": ADMIN, "HANSE_REDIS_URL": ""}
    if request.param == "redis":
        env.update(HANSE_REDIS_URL=REDIS_URL, HANSE_REDIS_PREFIX=redis_prefix())
    workdir = Path(tmp_path_factory.mktemp(request.param))
    process = GatewayProcess(workdir, catalog(upstream.base_url), env=env).start()
    yield process
    process.stop()


def admin(gateway: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, f"{gateway.base_url}/admin{path}", headers=headers, **kwargs)


def account(gateway: GatewayProcess, name: str, plan: str = "credits_only", **limits: Any) -> str:
    """A new account on `plan` with these own limits, and a key of it."""
    assert admin(gateway, "POST", "/accounts", json={"name": name, "plan": plan}).is_success
    if limits:
        assert admin(gateway, "PATCH", f"/accounts/{name}", json=limits).is_success
    return gateway.create_key(account=name)


def ask(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "free", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )


def test_an_unlimited_account_gets_no_limit_headers(gateway: GatewayProcess) -> None:
    response = ask(gateway, account(gateway, "free-for-all", plan="energy_then_credits"))
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("x-ratelimit")]


def test_all_keys_of_an_account_share_its_plan_limit(gateway: GatewayProcess) -> None:
    first = account(gateway, "shared")
    second = gateway.create_key(account="shared")
    answers = [ask(gateway, key) for key in (first, second, first)]
    assert [a.status_code for a in answers] == [200] * PLAN_RPM
    assert [a.headers["x-ratelimit-limit-requests"] for a in answers] == [str(PLAN_RPM)] * 3
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    assert [int(a.headers["x-ratelimit-reset-requests"]) for a in answers] == [20, 40, 60]

    refused = ask(gateway, second)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("AUTH_1028", "rate_limit_error")
    assert error["details"]["requests_per_minute"] == PLAN_RPM
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    assert 19_000 <= int(refused.headers["retry-after-ms"]) <= 20_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # The SDK sees a RateLimitError; another account of the same plan has its own bucket.
    sdk = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=first, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        sdk.models.list()
    assert ask(gateway, account(gateway, "neighbour")).status_code == 200


def test_an_account_limit_beats_its_plan(gateway: GatewayProcess) -> None:
    key = account(gateway, "tight")
    changed = gateway.cli("accounts", "limits", "tight", "--requests-per-minute", "1")
    assert changed.returncode == 0, changed.stderr
    assert "requests/min 1" in changed.stdout
    assert ask(gateway, key).status_code == 200
    assert ask(gateway, key).status_code == 429
    # 0 lifts the limit, `plan` restores the plan's; a fresh key is not in any process cache.
    assert gateway.cli("accounts", "limits", "tight", "--requests-per-minute", "0").returncode == 0
    unlimited = ask(gateway, gateway.create_key(account="tight"))
    assert unlimited.status_code == 200 and "x-ratelimit-limit-requests" not in unlimited.headers
    assert (
        gateway.cli("accounts", "limits", "tight", "--requests-per-minute", "plan").returncode == 0
    )
    shown = gateway.cli("accounts", "show", "tight").stdout
    assert "requests/min the plan" in shown
    assert gateway.cli("accounts", "limits", "tight", "--requests-per-minute", "x").returncode == 2


def test_tokens_per_minute_count_what_answers_used(gateway: GatewayProcess) -> None:
    # 20 tokens a minute; each answer uses 18: the second request still finds room, the third not.
    key = account(gateway, "wordy", plan="energy_then_credits", tokens_per_minute=20)
    first, second, third = (ask(gateway, key) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    assert second.headers["x-ratelimit-remaining-tokens"] == str(20 - USAGE["total_tokens"])
    assert third.json()["error"]["details"]["tokens_per_minute"] == 20
    assert "x-ratelimit-limit-requests" not in third.headers


def test_bad_limits_are_refused(gateway: GatewayProcess) -> None:
    account(gateway, "typo", plan="energy_then_credits")
    for patch in ({"requests_per_minute": -1}, {"tokens_per_minute": "5"}, {"per_hour": 5}):
        response = admin(gateway, "PATCH", "/accounts/typo", json=patch)
        assert response.status_code == 400, patch
        assert response.json()["error"]["code"].startswith("VALIDATION_4")


# --- Redis unreachable ----------------------------------------------------------------------------


def gone_redis(tmp_path: Path, upstream: ScriptedUpstream, fallback: str) -> GatewayProcess:
    env = {
        "HANSE_ADMIN_TOKEN": ADMIN,
        "HANSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "HANSE_RATE_LIMIT_FALLBACK": fallback,
    }
    return GatewayProcess(tmp_path, catalog(upstream.base_url), env=env).start()


def test_redis_down_fails_open_to_per_process_limits(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    gateway = gone_redis(tmp_path, upstream, "open")
    try:
        key = account(gateway, "open")
        assert [ask(gateway, key).status_code for _ in range(PLAN_RPM + 1)] == [200] * 3 + [429]
        ready = httpx.get(f"{gateway.base_url}/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "SYSTEM_9004"
        assert ready.json()["error"]["details"]["checks"]["redis"] == "unreachable"
        outage = [line for line in gateway.log().splitlines() if "redis unreachable" in line]
        assert len(outage) == 1 and "rate limits per process" in outage[0]
    finally:
        gateway.stop()


def test_redis_down_fails_closed_when_asked(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    gateway = gone_redis(tmp_path, upstream, "closed")
    try:
        refused = ask(gateway, account(gateway, "closed"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "SYSTEM_9003"
        assert refused.headers["retry-after"] == "1"
        # An account without limits needs no counter: it is served.
        free = account(gateway, "unlimited", plan="energy_then_credits")
        assert ask(gateway, free).status_code == 200
        assert "refused (SYSTEM_9003)" in gateway.log()
    finally:
        gateway.stop()


# --- the arithmetic, on both stores -------------------------------------------------------------


def test_the_bucket_refills_continuously() -> None:
    limits = AccountLimits(requests_per_minute=7, tokens_per_minute=0)
    now = [1000.0]
    buckets = LocalBuckets(clock=lambda: now[0])

    def take() -> bool:
        return asyncio.run(buckets.take(1, limits)).allowed

    assert [take() for _ in range(8)] == [True] * 7 + [False]  # 60/7 s intervals add up exactly
    now[0] += PERIOD_S / 7 - 0.01
    assert not take()
    now[0] += 0.02
    assert take() and not take()
    assert remaining(7, 0) == 7 and remaining(7, PERIOD_S) == 0
    refused = decide(limits, now[0] + PERIOD_S, 0, now[0])
    assert not refused.allowed and refused.retry_after_s == pytest.approx(PERIOD_S / 7)


def test_redis_and_local_buckets_agree() -> None:
    limits = AccountLimits(requests_per_minute=5, tokens_per_minute=100)

    async def run() -> tuple[list[bool], list[bool]]:
        link = RedisLink(REDIS_URL, redis_prefix(), 1.0, "test")
        shared, local = SharedBuckets(link), LocalBuckets()
        verdicts: tuple[list[bool], list[bool]] = ([], [])
        for store, out in ((shared, verdicts[0]), (local, verdicts[1])):
            for _ in range(3):
                out.append((await store.take(7, limits)).allowed)
            await store.spend(7, limits, 150)  # over the minute's tokens: in debt
            out.append((await store.take(7, limits)).allowed)
        await link.close()
        return verdicts

    shared, local = asyncio.run(run())
    assert shared == local == [True, True, True, False]
    config = RateLimitsConfig.model_validate({"plans": {"energy_only": {"tokens_per_minute": 9}}})
    assert config.for_account("energy_only", 4, None) == AccountLimits(4, 9)
    assert config.for_account("credits_only", None, None) == AccountLimits(0, 0)
