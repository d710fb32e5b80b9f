"""A bad config stops `hanse serve` at once with a useful message; pure functions the spine relies on."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hanse.auth import scope_allows
from hanse.config.loader import default_catalog_data, load_catalog
from hanse.config.schema import Catalog
from hanse.errors import HanseError
from hanse.providers.llama_engine import _stop_index, _stop_prefix_length
from hanse.resolve import resolve_model
from hanse.wire.validation import param_path
from tests.harness import HANSE, free_port

GOOD = """
[[providers]]
id = "local"
kind = "local"

[[models]]
id = "tiny"
context_length = 2048

[[models.routes]]
provider = "local"
"""

# (config text, the key path the message must name, words of the problem)
BAD_CONFIGS: dict[str, tuple[str, str, str]] = {
    "invalid-toml": (GOOD.replace('kind = "local"', "kind = local"), "line 4", "not valid TOML"),
    "unknown-key": (
        GOOD.replace("context_length = 2048", "context_length = 2048\ncontext_lenght = 4096"),
        "models[0].context_lenght",
        "Extra inputs are not permitted",
    ),
    "unknown-provider": (
        GOOD.replace('provider = "local"', 'provider = "elsewhere"'),
        "models[0].routes[0].provider",
        "unknown provider 'elsewhere'",
    ),
    "pue-out-of-range": (
        GOOD.replace('kind = "local"', 'kind = "local"\npue = 0.5'),
        "providers[0].pue",
        "greater than or equal to 1",
    ),
    "openai-compatible-without-base-url": (
        GOOD + '\n[[providers]]\nid = "up"\nkind = "openai_compatible"\n',
        "providers[1].base_url",
        "needs base_url",
    ),
    "bad-base-url": (
        GOOD + '\n[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "ftp://x"\n',
        "providers[1].base_url",
        "http:// or https://",
    ),
    "duplicate-model": (
        GOOD
        + '\n[[models]]\nid = "tiny"\ncontext_length = 1\n[[models.routes]]\nprovider = "local"\n',
        "models[1].id",
        "duplicate id 'tiny'",
    ),
    "wrong-type": (
        GOOD.replace("context_length = 2048", 'context_length = "big"'),
        "models[0].context_length",
        "valid integer",
    ),
    "model-id-with-flavor": (
        GOOD.replace('id = "tiny"', 'id = "tiny:eco"'),
        "models[0].id",
        "flavor suffix",
    ),
}


def _serve(config: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "HANSE_DATA_DIR": str(tmp_path / "data")}
    env.pop("HANSE_CONFIG", None)
    started = time.monotonic()
    result = subprocess.run(
        [HANSE, "serve", "--port", str(free_port()), "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_stops_serve_with_a_useful_message(tmp_path: Path, case: str) -> None:
    text, key, problem = BAD_CONFIGS[case]
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result, elapsed = _serve(config, tmp_path)
    assert result.returncode != 0
    assert elapsed < 10  # before any model is loaded
    assert str(config) in result.stderr
    assert key in result.stderr and problem in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    config = tmp_path / "absent.toml"
    result, elapsed = _serve(config, tmp_path)
    assert result.returncode != 0 and elapsed < 10
    assert str(config) in result.stderr and "No such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_good_config_loads(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(GOOD)
    catalog = load_catalog(config)
    assert catalog.model("tiny") is not None and catalog.provider("local").kind == "local"
    assert load_catalog(None).model("smollm2-135m") is not None


# --- hanse.auth.scope_allows ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "required", "allowed"),
    [
        (["*"], "inference.chat", True),
        (["*"], "vault.read", True),
        (["inference.*"], "inference.chat", True),
        (["inference.*"], "inference.models", True),
        (["inference.*"], "vault.read", False),
        (["inference.chat"], "inference.chat", True),
        (["inference.chat"], "inference.models", False),
        (["inference.models", "inference.chat"], "inference.chat", True),
        ([], "inference.chat", False),  # an explicitly empty list grants nothing
        ([], "vault.read", False),
        (["vault.*"], "inference.chat", False),
        (["inference"], "inference.chat", False),
        (["inference.chat.extra"], "inference.chat", False),
    ],
)
def test_scope_allows(scopes: list[str], required: str, allowed: bool) -> None:
    assert scope_allows(scopes, required) is allowed


# --- hanse.resolve.resolve_model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    data = default_catalog_data()
    route = [{"provider": "hanse-local"}]
    for model_id in ("a:b", "x:turbo", "qwen2.5:7b"):
        data["models"].append({"id": model_id, "context_length": 1024, "routes": route})
    return Catalog.model_validate(data)


@pytest.mark.parametrize(
    ("requested", "model_id", "flavor"),
    [
        ("smollm2-135m", "smollm2-135m", "balanced"),
        ("smollm2-135m:balanced", "smollm2-135m", "balanced"),
        ("smollm2-135m:speed", "smollm2-135m", "speed"),
        ("smollm2-135m:price", "smollm2-135m", "price"),
        ("smollm2-135m:eco", "smollm2-135m", "eco"),
        ("smollm2-135m:batch", "smollm2-135m", "batch"),
        ("a:b", "a:b", "balanced"),
        ("a:b:eco", "a:b", "eco"),
        ("x:turbo", "x:turbo", "balanced"),
        ("qwen2.5:7b:speed", "qwen2.5:7b", "speed"),
    ],
)
def test_resolve_model(catalog: Catalog, requested: str, model_id: str, flavor: str) -> None:
    resolved = resolve_model(catalog, requested)
    assert (resolved.model.id, resolved.flavor) == (model_id, flavor)


@pytest.mark.parametrize(
    "requested", ["nope", "nope:eco", "smollm2-135m:turbo", "smollm2-135m:", ":eco", "a", "ECO"]
)
def test_resolve_unknown_model(catalog: Catalog, requested: str) -> None:
    with pytest.raises(HanseError) as caught:
        resolve_model(catalog, requested)
    error = caught.value
    assert error.error.code == "INFERENCE_3001" and error.error.status == 404
    assert error.param == "model" and error.details["model"] == requested


# --- hanse.wire.validation.param_path -------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), ""),
        (("temperature",), "temperature"),
        (("messages", 0, "user", "content"), "messages[0].content"),
        (("messages", 0, "user", "content", "str"), "messages[0].content"),
        (
            ("messages", 2, "user", "content", "list[tagged-union[TextPart,ImagePart]]", 0, "text"),
            "messages[2].content[0]",
        ),
        (
            ("messages", 0, "user", "content", "list[...]", 1, "image_url", "image_url", "url"),
            "messages[0].content[1].image_url.url",
        ),
        (("messages", 1, "tool", "tool_call_id"), "messages[1].tool_call_id"),
        (
            ("messages", 0, "assistant", "tool_calls", 0, "function", "function", "arguments"),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            ("messages", 0, "assistant", "tool_calls", 0, "custom", "custom", "input"),
            "messages[0].tool_calls[0].custom.input",
        ),
        (("stop", "list[str]", 3), "stop[3]"),
        (("stop", "str"), "stop"),
        (
            ("response_format", "json_schema", "json_schema", "name"),
            "response_format.json_schema.name",
        ),
        (("tool_choice", "NamedToolChoice", "function", "name"), "tool_choice.function.name"),
        (("tool_choice", "literal['none','auto','required']"), "tool_choice"),
        (("tools", 0, "function", "function", "parameters"), "tools[0].function.parameters"),
        (("tools", 0, "custom", "custom", "name"), "tools[0].custom.name"),
        (("metadata", "user"), "metadata.user"),
    ],
)
def test_param_path(loc: tuple[int | str, ...], path: str) -> None:
    assert param_path(loc) == path


# --- hanse.providers.llama_engine stop helpers ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stops", "index"),
    [
        ("hello world", ["wor"], 6),
        ("hello world", ["xyz"], None),
        ("hello world", [], None),
        ("hello world", ["world", "lo"], 3),
        ("stop here", ["stop"], 0),
        ("1, 2, 3", [", 3", "2"], 3),
    ],
)
def test_stop_index(text: str, stops: list[str], index: int | None) -> None:
    assert _stop_index(text, stops) == index


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("hello wo", ["world"], 2),
        ("hello", ["xyz"], 0),
        ("hello", [], 0),
        ("abcab", ["abc"], 2),
        ("abc", ["abc"], 0),  # a whole stop is _stop_index's business
        ("a", ["abc"], 1),
        ("", ["abc"], 0),
        ("aab", ["abq", "aabq"], 3),
        ("xx ab", ["b", "abz"], 2),
        ("end.", [".\n"], 1),
    ],
)
def test_stop_prefix_length(text: str, stops: list[str], held: int) -> None:
    assert _stop_prefix_length(text, stops) == held
