"""Token estimates for models whose tokenizer the gateway does not hold."""

from __future__ import annotations

import math
from typing import Any

_CHARS_PER_TOKEN = 4
_PER_MESSAGE = 4
_IMAGE_BASE = 85
_IMAGE_TILE = 170


def estimate_text_tokens(text: str) -> int:
    """About four characters a token: the usual rule for BPE tokenizers on English text."""
    return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """An estimate of a conversation's prompt tokens, counting the chat template's per-message cost."""
    total = 0
    for message in messages:
        total += _PER_MESSAGE + estimate_text_tokens(message_text(message))
    return total


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: its content (string or text parts) and any tool calls."""
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(p.get("text") or p.get("refusal") or "" for p in content)
    else:
        text = ""
    for call in message.get("tool_calls") or []:
        text += call["function"]["name"] + call["function"]["arguments"]
    return text


def estimate_image_tokens(width: int, height: int, detail: str | None) -> int:
    """OpenAI's published count for an image: 85 at low detail; otherwise 85 + 170 per 512-pixel
    tile, after fitting the image in 2048 x 2048 and its short side in 768 pixels."""
    if detail == "low":
        return _IMAGE_BASE
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return _IMAGE_BASE + _IMAGE_TILE * math.ceil(w / 512) * math.ceil(h / 512)
