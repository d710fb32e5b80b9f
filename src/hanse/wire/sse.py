"""Server-sent events framing."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """One `data:` event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_named_event(name: str, payload: dict[str, Any]) -> bytes:
    """One event with its `event:` name (Anthropic's and the Responses API's streams)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
