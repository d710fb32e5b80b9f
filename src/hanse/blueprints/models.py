"""Blueprints and skills as written: parsed strictly (unknown keys are errors) and checked whole.

A blueprint's errors name the field at fault under the prefix the caller gives (`blueprint_config.`
inline, nothing for the vault endpoints): a bad regex, an unknown railguard type or a template
naming an undeclared variable is a VALIDATION_4xxx before anything is stored or run.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hanse.blueprints import patterns, pii, template
from hanse.errors import INVALID_VALUE, HanseError
from hanse.wire.request import Penalty, Probability, ResponseFormat, Tool
from hanse.wire.validation import raise_for_validation_error

ITEM_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_ITEM_ID = re.compile(ITEM_ID)
ItemId = Annotated[str, Field(pattern=ITEM_ID)]
Text = Annotated[str, Field(max_length=100_000)]
Message = Annotated[str, Field(min_length=1, max_length=10_000)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Regex = Annotated[str, Field(min_length=1, max_length=1000)]


_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Variable(_Strict):
    """A `{{name}}` the request may fill: required, or with a default; `enum` limits the values."""

    required: bool = False
    default: Annotated[str, Field(max_length=10_000)] | None = None
    enum: Annotated[list[Annotated[str, Field(max_length=10_000)]], Field(min_length=1)] | None = (
        None
    )
    description: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Variable:
        if self.required and self.default is not None:
            raise ValueError("a variable is either required or has a default, not both")
        if self.enum is not None and self.default is not None and self.default not in self.enum:
            raise ValueError("the default must be one of `enum`")
        return self


class Parameters(_Strict):
    """Request parameters a blueprint may preset (`defaults`) or fix (`locked`)."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0, le=2**31)] | None = None
    min_p: Probability | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    max_tokens: Annotated[int, Field(ge=1, le=2**31)] | None = None
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    response_format: ResponseFormat | None = None


class Locked(Parameters):
    """`locked` may also fix the model, which then beats the request's own."""

    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class DenyPattern(_Strict):
    """Text matching `pattern` blocks the request or answer (or is replaced by `placeholder`)."""

    type: Literal["deny_pattern"]
    pattern: Regex
    action: Literal["block", "redact"] = "block"
    message: Message | None = None
    placeholder: Annotated[str, Field(max_length=100)] = "[REDACTED]"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        patterns.compile_pattern(value)
        return value


class Pii(_Strict):
    """Personal data of the given kinds is redacted (`[EMAIL]`, ...) or blocks."""

    type: Literal["pii"]
    kinds: Annotated[list[pii.PiiKind], Field(min_length=1, max_length=4)]
    action: Literal["redact", "block"] = "redact"
    message: Message | None = None


class MaxInputTokens(_Strict):
    """The client's messages may hold at most `limit` tokens (estimated)."""

    type: Literal["max_input_tokens"]
    limit: Annotated[int, Field(ge=1, le=10_000_000)]
    message: Message | None = None


InputRule = Annotated[DenyPattern | Pii | MaxInputTokens, Field(discriminator="type")]
OutputRule = Annotated[DenyPattern | Pii, Field(discriminator="type")]


class Railguards(_Strict):
    input: Annotated[list[InputRule], Field(max_length=50)] = []
    output: Annotated[list[OutputRule], Field(max_length=50)] = []


class When(_Strict):
    last_user_matches: Regex

    @field_validator("last_user_matches")
    @classmethod
    def _compiles(cls, value: str) -> str:
        patterns.compile_pattern(value)
        return value


class Override(_Strict):
    """When the condition holds, `reply` is the answer and no model runs."""

    when: When
    reply: Message


class Blueprint(_Strict):
    name: Name
    description: Annotated[str, Field(max_length=2000)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    system: Text | None = None
    variables: Annotated[
        dict[Annotated[str, Field(pattern=template.NAME)], Variable], Field(max_length=64)
    ] = {}
    defaults: Parameters = Parameters()
    locked: Locked = Locked()
    skills: Annotated[list[ItemId], Field(max_length=32)] = []
    railguards: Railguards = Railguards()
    overrides: Annotated[list[Override], Field(max_length=50)] = []


class Skill(_Strict):
    name: Name
    description: Annotated[str, Field(max_length=2000)] | None = None
    instructions: Text = ""
    tools: Annotated[list[Tool], Field(max_length=128)] = []


def is_item_id(value: str) -> bool:
    """Whether `value` has the shape of a vault item id (a lowercase UUID)."""
    return _ITEM_ID.match(value) is not None


def parse_blueprint(data: Any, prefix: str) -> Blueprint:
    """A checked blueprint from a JSON object (bytes or already decoded)."""
    blueprint = _parse(Blueprint, data, prefix)
    _check_templates(blueprint, prefix)
    _check_output_widths(blueprint, prefix)
    return blueprint


def parse_skill(data: Any, prefix: str) -> Skill:
    skill = _parse(Skill, data, prefix)
    names = [tool.function.name for tool in skill.tools]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise _invalid(f"{prefix}tools[{index}].function.name", f"Two tools named `{name}`.")
    return skill


def _parse(model: type[_M], data: Any, prefix: str) -> _M:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data or b"null")
        return model.model_validate(data)
    except ValidationError as exc:
        raise_for_validation_error(exc, prefix=prefix)


def _check_templates(blueprint: Blueprint, prefix: str) -> None:
    texts = {"system": blueprint.system or ""}
    texts |= {f"overrides[{i}].reply": o.reply for i, o in enumerate(blueprint.overrides)}
    for field, text in texts.items():
        for name in template.names(text):
            if name not in blueprint.variables:
                raise _invalid(
                    prefix + field,
                    f"`{prefix}{field}` uses the variable `{name}`, which `variables` does not "
                    "declare.",
                )


def _check_output_widths(blueprint: Blueprint, prefix: str) -> None:
    for index, rule in enumerate(blueprint.railguards.output):
        if isinstance(rule, DenyPattern) and patterns.max_width(rule.pattern) is None:
            raise _invalid(
                f"{prefix}railguards.output[{index}].pattern",
                "An output pattern must match at most "
                f"{patterns.MAX_WIDTH} characters, so that a stream can hold back enough text "
                "to catch it: use a bounded repeat such as `\\s{1,3}` rather than `\\s+` or `.*`.",
            )


def _invalid(param: str, message: str) -> HanseError:
    return HanseError(INVALID_VALUE, message, param=param, details={"parameter": param})
