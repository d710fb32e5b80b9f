"""Text railguards, ready to run: each finds spans; a span blocks or is replaced by a placeholder.

Rules run in the order the blueprint lists them, each on the text the previous ones left. A
stream scans text that is still arriving: a match is only acted on once the character after it
is known (`final` = no more text comes), since the next piece could still change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hanse.blueprints import patterns, pii
from hanse.blueprints.models import DenyPattern, Pii

INPUT_BLOCKED = "This request was blocked by the blueprint's railguards."
OUTPUT_BLOCKED = "This answer was withheld by the blueprint's railguards."


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True, slots=True)
class TextRule:
    """One deny_pattern or pii railguard."""

    action: Literal["block", "redact"]
    message: str
    width: int
    pattern: str | None = None
    placeholder: str = ""
    kinds: tuple[pii.PiiKind, ...] = ()

    def spans(self, text: str, pos: int) -> list[Span]:
        """Non-overlapping, non-empty matches starting at `pos` or later, in text order."""
        if self.pattern is not None:
            found = [
                Span(m.start(), m.end(), self.placeholder)
                for m in patterns.compile_pattern(self.pattern).finditer(text, pos)
                if m.end() > m.start()
            ]
            return found
        taken: list[Span] = []
        for kind in pii.ORDER:
            if kind in self.kinds:
                for start, end in pii.find(kind, text, pos):
                    if all(end <= s.start or start >= s.end for s in taken):
                        taken.append(Span(start, end, pii.PLACEHOLDERS[kind]))
        return sorted(taken, key=lambda s: s.start)


def text_rule(rule: DenyPattern | Pii, default_message: str) -> TextRule:
    message = rule.message or default_message
    if isinstance(rule, DenyPattern):
        return TextRule(
            action=rule.action,
            message=message,
            width=patterns.max_width(rule.pattern) or patterns.MAX_WIDTH,
            pattern=rule.pattern,
            placeholder=rule.placeholder,
        )
    kinds = tuple(dict.fromkeys(rule.kinds))
    return TextRule(
        action=rule.action, message=message, width=max(pii.WIDTHS[k] for k in kinds), kinds=kinds
    )


@dataclass(frozen=True, slots=True)
class Scan:
    """What the rules made of a text: the text after redaction, or the rule that blocked it."""

    text: str
    blocked: TextRule | None = None


def scan(rules: list[TextRule], text: str, pos: int = 0, final: bool = True) -> Scan:
    """Run `rules` over `text[pos:]` (earlier text is context only, for lookbehinds)."""
    for rule in rules:
        spans = [s for s in rule.spans(text, pos) if final or s.end < len(text)]
        if not spans:
            continue
        if rule.action == "block":
            return Scan(text, rule)
        for span in reversed(spans):
            text = text[: span.start] + span.placeholder + text[span.end :]
    return Scan(text)
