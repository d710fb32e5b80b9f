"""The client matrix's lanes: each scenario of tests/clients/test_*.py runs on a gateway serving the
embedded model, and on one whose model is served by llama-cpp-python's own OpenAI server.

A module lists in `ON_EMBEDDED_ROUTE` the scenarios that need what that server cannot serve (tools,
`json_schema`: its lane's catalog routes them to the embedded engine, docs/clients.md) and in
`UNCHARGED` those the gateway refuses before any route; `served_by` checks the ledger for each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hanse.providers.local import embedded_model_path
from tests.harness import GatewayProcess
from tests.llama_server import ALIAS, LlamaServer

# The client matrix's routes: llama_cpp.server, and the embedded engine for what it cannot serve.
LLAMA_ROUTE, EMBEDDED_ROUTE = "llama", "hanse-local"


def client_catalog(base_url: str, model: str) -> str:
    """A catalog whose `model` is served by the server at `base_url`, except what that server
    cannot do: `response_format` `json_schema` and tools go to the embedded engine (docs/clients.md).

    The embedded route is priced so that it ranks after the server for everything else: the
    account that uses it needs credits."""
    return (
        f'[[providers]]\nid = "{LLAMA_ROUTE}"\nkind = "openai_compatible"\n'
        f'base_url = "{base_url}"\nread_timeout_s = 60\n\n'
        f'[[providers]]\nid = "{EMBEDDED_ROUTE}"\nkind = "local"\nn_ctx = 2048\n\n'
        f'[[models]]\nid = "{model}"\ncontext_length = 2048\n'
        # The server reports no usage in streams: count with the GGUF's own vocabulary.
        f'tokenizer = "gguf:{embedded_model_path()}"\n'
        "capabilities = { function_calling = true, structured_output = true, json_schema = true }\n"
        f'[[models.routes]]\nprovider = "{LLAMA_ROUTE}"\nupstream_model = "{ALIAS}"\n'
        'unsupported = ["json_schema", "function_calling"]\n'
        f'[[models.routes]]\nprovider = "{EMBEDDED_ROUTE}"\n'
        'input_eur_per_million = "1"\noutput_eur_per_million = "1"\n'
    )


EMBEDDED_LANE, UPSTREAM_LANE = "embedded", "llama-server"
LANE_MODELS = {EMBEDDED_LANE: "smollm2-135m", UPSTREAM_LANE: "smollm2-upstream"}


def lane_gateway(lane: str, workdir: Path, llama: LlamaServer | None) -> GatewayProcess:
    """A started gateway for `lane` (the upstream lane needs the server)."""
    config = None
    if lane == UPSTREAM_LANE:
        assert llama is not None
        config = client_catalog(llama.base_url, LANE_MODELS[lane])
    return GatewayProcess(workdir, config=config).start()


def lane_key(gateway: GatewayProcess, lane: str) -> str:
    """A key whose account can pay for the lane's routes (the upstream lane's embedded one is priced)."""
    key = gateway.create_key(account="clients")
    if lane == UPSTREAM_LANE:
        topup = gateway.cli("accounts", "topup", "clients", "--credits", "10")
        assert topup.returncode == 0, topup.stderr
    return key


def expected_route(lane: str, on_embedded_route: bool) -> str:
    """The route that must serve a scenario on `lane`."""
    return LLAMA_ROUTE if lane == UPSTREAM_LANE and not on_embedded_route else EMBEDDED_ROUTE


def last_ledger_id(gateway: GatewayProcess) -> int:
    return int(gateway.sql("SELECT COALESCE(MAX(id), 0) AS id FROM ledger")[0]["id"])


def routes_since(gateway: GatewayProcess, ledger_id: int) -> list[str]:
    """The routes that served every request charged after the ledger row `ledger_id`."""
    rows = gateway.sql("SELECT route FROM ledger WHERE id > :id ORDER BY id", id=ledger_id)
    return [str(row["route"]) for row in rows]


@pytest.fixture(scope="module", params=list(LANE_MODELS))
def lane(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(Path(tmp_path_factory.mktemp("llama"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    lane: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[GatewayProcess]:
    """The lane's gateway, in place of tests/conftest.py's; the server starts with the upstream
    lane and serves the rest of the module."""
    llama = request.getfixturevalue("llama") if lane == UPSTREAM_LANE else None
    process = lane_gateway(lane, Path(tmp_path_factory.mktemp("gateway")), llama)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api_key(gateway: GatewayProcess, lane: str) -> str:
    return lane_key(gateway, lane)


@pytest.fixture(scope="module")
def model(lane: str) -> str:
    return LANE_MODELS[lane]


@pytest.fixture(autouse=True)
def served_by(request: pytest.FixtureRequest, lane: str, gateway: GatewayProcess) -> Iterator[None]:
    """Every answer a scenario was charged for came from the route its lane promises."""
    before = last_ledger_id(gateway)
    yield
    name = request.function.__name__
    routes = routes_since(gateway, before)
    if name in getattr(request.module, "UNCHARGED", set()):
        assert routes == []
    else:
        embedded = name in getattr(request.module, "ON_EMBEDDED_ROUTE", set())
        assert routes and set(routes) == {expected_route(lane, embedded)}, routes
