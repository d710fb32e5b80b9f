"""The blueprint stage: a request with a blueprint or skills becomes the request the model sees.

load    blueprint_config (inline) wins over blueprint_id (vault); skills from the blueprint,
        skill_ids (vault) and skill_configs (inline), in that order
render  the system template with the request's variables (checked against the declarations)
skills  instructions appended to the system message, tools merged (a name clash is an error)
params  `defaults` fill what the request left out; `locked` always wins (model included)
screen  input railguards; a block, or else a matching override, is the answer (no model call)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hanse.auth import SCOPE_VAULT_READ, Principal, require_scope
from hanse.blueprints import template
from hanse.blueprints.inputs import find_override, resolve_variables, screen
from hanse.blueprints.models import (
    Blueprint,
    Parameters,
    Skill,
    is_item_id,
    parse_blueprint,
    parse_skill,
)
from hanse.blueprints.output import OutputGuard
from hanse.errors import INVALID_VALUE, HanseError
from hanse.vault.service import VAULT_KEY_HEADER, Vault, VaultSession, not_found
from hanse.wire.request import ChatCompletionRequest, SystemMessage, Tool


@dataclass(frozen=True, slots=True)
class DirectAnswer:
    """An answer no model produces: an input railguard's block, or an override's reply."""

    content: str
    finish_reason: Literal["blocked", "blueprint_override"]

    @property
    def status(self) -> str:
        """The ledger's word for it."""
        return "blocked" if self.finish_reason == "blocked" else "override"


@dataclass(slots=True)
class Composed:
    """The request as the model will see it, its output railguards, and maybe a direct answer."""

    wire: ChatCompletionRequest
    output: OutputGuard = field(default_factory=OutputGuard)
    answer: DirectAnswer | None = None


class _VaultAccess:
    """Unlocks the vault on first use only: inline blueprints and skills need no key."""

    def __init__(self, vault: Vault, principal: Principal, headers: Mapping[str, str]) -> None:
        self._vault, self._principal, self._headers = vault, principal, headers
        self._session: VaultSession | None = None

    async def load(self, kind: Literal["blueprint", "skill"], item_id: str) -> dict[str, Any]:
        if self._session is None:
            require_scope(self._principal, SCOPE_VAULT_READ)
            key = self._headers.get(VAULT_KEY_HEADER.lower())
            self._session = await self._vault.unlock(self._principal.account_id, key)
        if not is_item_id(item_id):
            raise not_found(kind, item_id)
        return (await self._session.get(kind, item_id)).data


async def apply_blueprint(
    vault: Vault, principal: Principal, headers: Mapping[str, str], wire: ChatCompletionRequest
) -> Composed:
    """The composed request; unchanged when it names no blueprint and no skill."""
    access = _VaultAccess(vault, principal, headers)
    blueprint = await _blueprint(access, wire)
    skills = await _skills(access, wire, blueprint)
    if blueprint is None and not skills:
        if wire.variables is not None:
            raise _invalid("variables", "`variables` needs a blueprint.")
        return Composed(wire)
    blueprint = blueprint or Blueprint(name="skills")
    values = resolve_variables(blueprint.variables, wire.variables or {})
    output = OutputGuard.of(blueprint.railguards)
    if output.rules and wire.logprobs:
        raise _invalid("logprobs", "`logprobs` would reveal text the output railguards withhold.")
    screened = screen(blueprint.railguards, list(wire.messages), values)
    system = [template.render(blueprint.system, screened.values)] if blueprint.system else []
    system += [skill.instructions for _, skill in skills if skill.instructions]
    messages = [SystemMessage(role="system", content="\n\n".join(system))] if system else []
    update: dict[str, Any] = {
        "messages": messages + screened.messages,
        "tools": _merge_tools(wire.tools, skills),
        "model": blueprint.locked.model or wire.model or blueprint.model,
        **_parameters(wire, blueprint),
    }
    composed = Composed(wire.model_copy(update=update), output)
    if screened.blocked is not None:
        composed.answer = DirectAnswer(screened.blocked, "blocked")
    else:
        reply = find_override(blueprint.overrides, screened.messages, screened.values)
        composed.answer = DirectAnswer(reply, "blueprint_override") if reply else None
    return composed


async def _blueprint(access: _VaultAccess, wire: ChatCompletionRequest) -> Blueprint | None:
    if wire.blueprint_config is not None:
        return parse_blueprint(wire.blueprint_config, "blueprint_config.")
    if wire.blueprint_id is not None:
        return parse_blueprint(await access.load("blueprint", wire.blueprint_id), "blueprint.")
    return None


async def _skills(
    access: _VaultAccess, wire: ChatCompletionRequest, blueprint: Blueprint | None
) -> list[tuple[str, Skill]]:
    """Each skill with the parameter that brought it in; a vault skill is loaded once."""
    ids = {f"blueprint.skills[{i}]": s for i, s in enumerate(blueprint.skills if blueprint else [])}
    ids |= {f"skill_ids[{i}]": s for i, s in enumerate(wire.skill_ids or [])}
    skills: list[tuple[str, Skill]] = []
    seen: set[str] = set()
    for param, item_id in ids.items():
        if item_id not in seen:
            seen.add(item_id)
            skills.append((param, parse_skill(await access.load("skill", item_id), "skill.")))
    for index, config in enumerate(wire.skill_configs or []):
        prefix = f"skill_configs[{index}]"
        skills.append((prefix, parse_skill(config, prefix + ".")))
    return skills


def _merge_tools(tools: list[Tool] | None, skills: list[tuple[str, Skill]]) -> list[Tool] | None:
    merged = list(tools or [])
    for param, skill in skills:
        for tool in skill.tools:
            name = tool.function.name
            if any(t.function.name == name for t in merged):
                raise _invalid(
                    param,
                    f"The skill `{skill.name}` adds the tool `{name}`, which the request or "
                    "another skill already has.",
                )
            merged.append(tool)
    return merged or None


def _parameters(wire: ChatCompletionRequest, blueprint: Blueprint) -> dict[str, Any]:
    """`defaults` where the request is silent, `locked` everywhere (max_completion_tokens is
    max_tokens)."""
    given = {name: getattr(wire, name) for name in Parameters.model_fields}
    given["max_tokens"] = wire.max_completion_tokens or wire.max_tokens
    update: dict[str, Any] = {}
    for name, value in given.items():
        locked = getattr(blueprint.locked, name)
        default = getattr(blueprint.defaults, name)
        if locked is not None:
            update[name] = locked
        elif value is None and default is not None:
            update[name] = default
    if "max_tokens" in update:
        update["max_completion_tokens"] = None
    return update


def _invalid(param: str, message: str) -> HanseError:
    return HanseError(INVALID_VALUE, message, param=param, details={"parameter": param})
