"""Messages and tools rendered for a chat template that knows neither content parts nor tools."""

from __future__ import annotations

import json
from typing import Any

from hanse.domain import InferenceRequest
from hanse.tokens import message_text

_TOOLS_INSTRUCTIONS = (
    "You can call functions. To call one, answer with only a JSON object of the form "
    '{{"name": <function name>, "arguments": <arguments object>}} and nothing else. '
    "Otherwise answer normally. The functions:\n{tools}"
)


def prompt_messages(request: InferenceRequest) -> list[dict[str, str]]:
    """Plain `{role, content}` messages; tools, when offered, described in the system message."""
    messages = [_plain(message) for message in request.messages]
    if request.tools and request.tool_choice != "none":
        described = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in request.tools)
        instructions = _TOOLS_INSTRUCTIONS.format(tools=described)
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] += "\n\n" + instructions
        else:
            messages.insert(0, {"role": "system", "content": instructions})
    return messages


def tool_call_schema(request: InferenceRequest) -> dict[str, Any]:
    """A JSON schema admitting exactly a call of an allowed function with well-formed arguments."""
    forced = request.forced_tool()
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in request.tools
        if forced is None or t["function"]["name"] == forced
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _plain(message: dict[str, Any]) -> dict[str, str]:
    role = "system" if message["role"] == "developer" else message["role"]
    content = message_text({**message, "tool_calls": None})
    for call in message.get("tool_calls") or []:
        function = call["function"]
        content += json.dumps({"name": function["name"], "arguments": _arguments(function)})
    if role == "tool":
        content = f"(result of {message.get('tool_call_id', '')}) {content}"
    return {"role": role, "content": content}


def _arguments(function: dict[str, Any]) -> Any:
    try:
        return json.loads(function["arguments"])
    except ValueError:
        return function["arguments"]
