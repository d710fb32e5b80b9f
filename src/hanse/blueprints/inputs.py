"""What the client sent, seen through a blueprint: variables, input railguards, overrides.

Input railguards run on every text of every message the client sent (contents, refusals, names,
tool calls and their results: texts.py) and on the variables' values, which reach the model through
the system message. The blueprint's own text (system, skills) is the author's and is not screened.

Rules read each text normalised (normalise.py), so invisible or full-width characters do not hide a
phrase. A text no rule changed goes on exactly as the client wrote it; a text a redaction changed
goes on in its normalised form, placeholders in place (spans in the normal form have no exact
counterpart in the original). A redaction in an identifier blocks instead: a placeholder would
break the id or function name.
"""

from __future__ import annotations

from dataclasses import dataclass

from hanse.blueprints import patterns, template
from hanse.blueprints.models import MaxInputTokens, Override, Railguards, Variable
from hanse.blueprints.normalise import normalise
from hanse.blueprints.rules import INPUT_BLOCKED, scan, text_rule
from hanse.blueprints.texts import rewrite, texts
from hanse.errors import INVALID_VALUE, MISSING_FIELD, UNKNOWN_PARAMETER, HanseError
from hanse.tokens import estimate_text_tokens, estimate_tokens
from hanse.wire.request import Message, TextPart, UserMessage


def resolve_variables(declared: dict[str, Variable], given: dict[str, str]) -> dict[str, str]:
    """Every declared variable's value: given, else its default, else empty; errors name it."""
    for name in given:
        if name not in declared:
            raise HanseError(
                UNKNOWN_PARAMETER,
                f"The blueprint declares no variable `{name}`.",
                param=f"variables.{name}",
                details={"parameter": f"variables.{name}", "declared": list(declared)},
            )
    values: dict[str, str] = {}
    for name, spec in declared.items():
        param = f"variables.{name}"
        if name in given:
            if spec.enum is not None and given[name] not in spec.enum:
                raise HanseError(
                    INVALID_VALUE,
                    f"`{param}` must be one of: {', '.join(spec.enum)}.",
                    param=param,
                    details={"parameter": param, "constraint": {"enum": spec.enum}},
                )
            values[name] = given[name]
        elif spec.required:
            raise HanseError(
                MISSING_FIELD,
                f"The blueprint needs the variable `{name}`.",
                param=param,
                details={"parameter": param},
            )
        else:
            values[name] = spec.default or ""
    return values


@dataclass(frozen=True, slots=True)
class Screened:
    """The client's messages and variable values after the input railguards, or why they blocked."""

    messages: list[Message]
    values: dict[str, str]
    blocked: str | None = None


def screen(railguards: Railguards, messages: list[Message], values: dict[str, str]) -> Screened:
    """Run the input railguards in order: the first block wins; redactions accumulate."""
    if not railguards.input:
        return Screened(messages, values)
    slots = [slot for message in messages for slot in texts(message)]
    slots += [(value, False) for value in values.values()]
    normal = [normalise(text) for text, _ in slots]
    seen = list(normal)  # what the rules read, redactions applied
    for rule in railguards.input:
        if isinstance(rule, MaxInputTokens):
            count = estimate_tokens([m.model_dump(exclude_none=True) for m in messages]) + sum(
                estimate_text_tokens(v) for v in values.values()
            )
            if count > rule.limit:
                return Screened(messages, values, rule.message or INPUT_BLOCKED)
            continue
        compiled = text_rule(rule, INPUT_BLOCKED)
        for index, text in enumerate(seen):
            result = scan([compiled], text)
            if result.blocked is not None:
                return Screened(messages, values, result.blocked.message)
            if result.text != text and slots[index][1]:
                return Screened(messages, values, compiled.message)
            seen[index] = result.text
    if seen == normal:
        return Screened(messages, values)
    replaced = iter(
        after if after != before else text
        for (text, _), before, after in zip(slots, normal, seen, strict=True)
    )
    messages = [rewrite(message, lambda _text, _id: next(replaced)) for message in messages]
    return Screened(messages, {name: next(replaced) for name in values})


def find_override(
    overrides: list[Override], messages: list[Message], values: dict[str, str]
) -> str | None:
    """The reply of the first override whose condition holds, rendered; None if none does."""
    users = [m for m in messages if isinstance(m, UserMessage)]
    if not users:
        return None
    last = "\n".join(_texts(users[-1]))
    for override in overrides:
        if patterns.compile_pattern(override.when.last_user_matches).search(last):
            return template.render(override.reply, values)
    return None


def _texts(message: Message) -> list[str]:
    content = message.content
    if isinstance(content, str):
        return [content]
    return [part.text for part in content or [] if isinstance(part, TextPart)]
