"""Client schemas as hostile input: references stay inside the schema, patterns run in linear time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hanse.schema_validation import outside_reference, problem


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = b'{"type": "string", "const": "secret-from-loopback"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/schema.json"
    server.shutdown()


def test_a_remote_reference_is_never_fetched(loopback: str) -> None:
    schema = {"type": "object", "properties": {"city": {"$ref": loopback}}}
    found = problem(schema, {"city": "Hamburg"})
    assert found is not None and "does not resolve within" in found
    assert "secret-from-loopback" not in found
    assert _Counting.hits == 0


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "ftp://127.0.0.1/x", "other.json"])
def test_other_schemes_do_not_resolve(ref: str) -> None:
    found = problem({"$ref": ref}, "x")
    assert found is not None and "does not resolve within" in found


def test_references_inside_the_schema_resolve() -> None:
    schema = {
        "$defs": {"city": {"type": "string", "minLength": 2}},
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/city"}},
    }
    assert problem(schema, {"city": "Hamburg"}) is None
    assert problem(schema, {"city": "H"}) is not None


def test_a_recursive_reference_validates_a_finite_value() -> None:
    schema = {"type": "array", "items": {"$ref": "#"}}
    assert problem(schema, [[[]], []]) is None
    assert problem(schema, [[1]]) is not None


@pytest.mark.timeout(10)
@pytest.mark.parametrize("pattern", ["^(a|a){1,30}b$", "^(a+)+$", "^(.*a){25}$"])
def test_a_catastrophic_pattern_is_linear(pattern: str) -> None:
    # Python's `re` takes minutes to hours on each of these; RE2 answers at once.
    assert problem({"type": "string", "pattern": pattern}, "a" * 40 + "!") is not None
    schema = {"type": "object", "patternProperties": {pattern: {"type": "integer"}}}
    assert problem(schema, {"a" * 40 + "!": "not checked"}) is None


def test_a_pattern_outside_re2_is_a_problem_not_a_crash() -> None:
    found = problem({"type": "string", "pattern": r"(a)\1"}, "aa")
    assert found is not None and "RE2" in found


def test_outside_references_are_found_at_any_depth() -> None:
    deep: dict[str, Any] = {"$ref": "https://internal.example/x"}
    for _ in range(100_000):  # deeper than any recursion limit
        deep = {"items": deep}
    assert outside_reference(deep) == "https://internal.example/x"
    assert outside_reference({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#"}) is None
    assert outside_reference({"anyOf": [{"$dynamicRef": "file:///etc/passwd"}]}) is not None
