"""Token estimates for models whose tokenizer the gateway does not hold."""

from __future__ import annotations

from typing import Any

_CHARS_PER_TOKEN = 4
_PER_MESSAGE = 4


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
