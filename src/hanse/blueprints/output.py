"""Output railguards on the model's answer: whole, or incrementally on a stream.

A stream holds back, per choice, as many characters as the longest match of any output rule can
span, so a match is seen whole before any of it goes out: a blocked phrase never reaches the
client, however the provider's chunks cut it. A block ends the stream with `finish_reason:
"blocked"` (the rule's message as its content) and stops the provider; what the model produced
until then is charged as for a cut stream. Tool-call arguments are not screened, a custom tool's
`input` no more than a function's `arguments`.

An audio answer is screened by its transcript: the sound cannot be redacted, so any match (a block
or a redaction) blocks the choice. A stream's transcript is scanned whole as it grows, and its
audio stops at the match; the audio pieces before it have gone out (the sound cannot be held back
by characters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from hanse.blueprints.models import Railguards
from hanse.blueprints.rules import OUTPUT_BLOCKED, TextRule, scan, text_rule
from hanse.domain import Choice, ChoiceDelta, Completion, StreamEvent, Usage

_CONTEXT = 1000  # released text kept for the lookbehinds of later matches
SCREENED = ("content", "reasoning", "refusal")  # the texts of a choice the output rules see


@dataclass(slots=True)
class _ChoiceText:
    """One streamed choice: `text[:released]` has gone out; the rest is held."""

    text: str = ""
    released: int = 0

    def feed(self, rules: list[TextRule], hold: int, piece: str, final: bool) -> str | TextRule:
        """What may go out now, or the rule that blocks."""
        result = scan(rules, self.text + piece, self.released, final)
        if result.blocked is not None:
            return result.blocked
        self.text = result.text
        end = len(self.text) if final else max(self.released, len(self.text) - hold)
        out = self.text[self.released : end]
        cut = max(0, end - _CONTEXT)
        self.text, self.released = self.text[cut:], end - cut
        return out


@dataclass(slots=True)
class OutputGuard:
    """A blueprint's output railguards; without any it changes nothing."""

    rules: list[TextRule] = field(default_factory=list)

    @classmethod
    def of(cls, railguards: Railguards) -> OutputGuard:
        return cls([text_rule(rule, OUTPUT_BLOCKED) for rule in railguards.output])

    def complete(self, completion: Completion) -> tuple[Completion, str]:
        """The answer screened, and its ledger status (`ok` or `blocked`)."""
        status = "ok"
        for choice in completion.choices if self.rules else []:
            heard = self._transcript_rule((choice.audio or {}).get("transcript"))
            if heard is not None:
                status = "blocked"
                _block_choice(choice, heard.message)
                continue
            for name in SCREENED:
                text = getattr(choice, name)
                if text is None:
                    continue
                result = scan(self.rules, text)
                if result.blocked is None:
                    setattr(choice, name, result.text)
                    continue
                status = "blocked"
                _block_choice(choice, result.blocked.message)
                break
        return completion, status

    def _transcript_rule(self, transcript: object) -> TextRule | None:
        """The first rule an audio transcript meets, by a block or a redaction (sound cannot be
        redacted, so either blocks)."""
        if not isinstance(transcript, str) or not transcript:
            return None
        for rule in self.rules:
            result = scan([rule], transcript)
            if result.blocked is not None or result.text != transcript:
                return rule
        return None

    def stream(
        self, first: StreamEvent, events: AsyncGenerator[StreamEvent, None], input_tokens: int
    ) -> tuple[StreamEvent, AsyncGenerator[StreamEvent, None]]:
        """The stream screened; its first event (the role chunk) goes out without waiting."""
        if not self.rules or not isinstance(first, ChoiceDelta):
            return first, events
        opening = ChoiceDelta(
            index=first.index,
            system_fingerprint=first.system_fingerprint,
            service_tier=first.service_tier,
        )
        return opening, self._screened(first, events, input_tokens)

    async def _screened(
        self, first: ChoiceDelta, events: AsyncGenerator[StreamEvent, None], input_tokens: int
    ) -> AsyncGenerator[StreamEvent, None]:
        hold = max(rule.width for rule in self.rules)
        texts: dict[tuple[int, str], _ChoiceText] = {}
        transcripts: dict[int, str] = {}  # each choice's audio transcript so far
        finished: set[int] = set()
        received = 0  # pieces of text the model produced: what a blocked stream costs
        event: StreamEvent | None = first
        try:
            while event is not None:
                if isinstance(event, Usage):
                    # A choice the provider left without a finish reason still gets its held text.
                    for index in sorted({index for index, _ in texts} - finished):
                        out = self._feed(texts, index, hold, ChoiceDelta(index=index), final=True)
                        if isinstance(out, TextRule):
                            for delta in self._block(index, out, texts, finished):
                                yield delta
                            break
                        finished.add(index)
                        yield out
                    yield event
                else:
                    received += 1 if any(getattr(event, n) for n in SCREENED) else 0
                    final = event.finish_reason is not None
                    out = self._feed(texts, event.index, hold, event, final)
                    if not isinstance(out, TextRule) and event.audio:
                        heard = transcripts.get(event.index, "")
                        heard += str(event.audio.get("transcript") or "")
                        transcripts[event.index] = heard
                        out = self._transcript_rule(heard) or out
                    if isinstance(out, TextRule):
                        for delta in self._block(event.index, out, texts, finished):
                            yield delta
                        # Pieces, not tokens: what the model produced until the block, estimated.
                        yield Usage(input_tokens, received, source="estimated")
                        return
                    if final:
                        finished.add(event.index)
                    yield out
                event = await anext(events, None)
        finally:
            await events.aclose()

    def _feed(
        self,
        texts: dict[tuple[int, str], _ChoiceText],
        index: int,
        hold: int,
        event: ChoiceDelta,
        final: bool,
    ) -> ChoiceDelta | TextRule:
        """`event` with each screened text replaced by what may go out now, or the blocking rule."""
        released: dict[str, str | None] = {}
        for name in SCREENED:
            piece = getattr(event, name)
            state = texts.get((index, name))
            if state is None and piece is None:
                released[name] = None
                continue
            state = texts.setdefault((index, name), _ChoiceText())
            out = state.feed(self.rules, hold, piece or "", final)
            if isinstance(out, TextRule):
                return out
            released[name] = out or None
        return dataclasses.replace(
            event,
            content=released["content"],
            reasoning=released["reasoning"],
            refusal=released["refusal"],
        )

    @staticmethod
    def _block(
        index: int,
        rule: TextRule,
        texts: dict[tuple[int, str], _ChoiceText],
        finished: set[int],
    ) -> list[ChoiceDelta]:
        """The blocking choice ends with the rule's message; every other open choice ends too."""
        deltas = [ChoiceDelta(index=index, content=rule.message, finish_reason="blocked")]
        for other in sorted({i for i, _ in texts} - finished - {index}):
            deltas.append(ChoiceDelta(index=other, finish_reason="blocked"))
        return deltas


def _block_choice(choice: Choice, message: str) -> None:
    """The choice's answer replaced by the rule's message (`finish_reason: "blocked"`)."""
    choice.content, choice.finish_reason = message, "blocked"
    choice.tool_calls, choice.logprobs = [], None
    choice.reasoning = choice.refusal = None
    choice.audio = None
