"""The blueprint stage: a request with a blueprint or skills becomes the request the model sees.

load    blueprint_config (inline) wins over blueprint_id (vault); skills from the blueprint,
        skill_ids (vault) and skill_configs (inline), in that order
render  the system template with the request's variables (checked against the declarations)
skills  instructions appended to the system message, tools merged (a name clash is an error)
params  `defaults` fill what the request left out; `locked` always wins (model included)
screen  input railguards; a block, or else a matching override, is the answer (no model call)

What comes from the vault is secret: an error about a vault item names its parameter
(`blueprint_id`, `skill_ids[1]`) and its id, never its content, and nothing here logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

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
from hanse.vault.service import VAULT_KEY_HEADER, Vault, VaultSession, not_found, vault_clients
from hanse.wire.request import ChatCompletionRequest, CustomTool, SystemMessage, Tool, tool_name

_Item = TypeVar("_Item", Blueprint, Skill)


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

    def __init__(
        self, vault: Vault, principal: Principal, headers: Mapping[str, str], address: str | None
    ) -> None:
        self._vault, self._principal, self._headers = vault, principal, headers
        self._address = address
        self._session: VaultSession | None = None

    async def load(self, kind: Literal["blueprint", "skill"], item_id: str) -> dict[str, Any]:
        if self._session is None:
            require_scope(self._principal, SCOPE_VAULT_READ)
            key = self._headers.get(VAULT_KEY_HEADER.lower())
            clients = vault_clients(self._principal.key_id, self._address)
            self._session = await self._vault.unlock(
                self._principal.account_id, key, clients=clients
            )
        if not is_item_id(item_id):
            raise not_found(kind, item_id)
        return (await self._session.get(kind, item_id)).data


async def apply_blueprint(
    vault: Vault,
    principal: Principal,
    headers: Mapping[str, str],
    wire: ChatCompletionRequest,
    address: str | None = None,
) -> Composed:
    """The composed request; unchanged when it names no blueprint and no skill. `address`, the
    client's, counts its wrong vault keys apart from other clients of the same API key."""
    access = _VaultAccess(vault, principal, headers, address)
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
        data = await access.load("blueprint", wire.blueprint_id)
        return _stored(parse_blueprint, data, "blueprint_id", wire.blueprint_id)
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
            data = await access.load("skill", item_id)
            skills.append((param, _stored(parse_skill, data, param, item_id)))
    for index, config in enumerate(wire.skill_configs or []):
        prefix = f"skill_configs[{index}]"
        skills.append((prefix, parse_skill(config, prefix + ".")))
    return skills


def _stored(parse: Callable[[Any, str], _Item], data: Any, param: str, item_id: str) -> _Item:
    """A vault item parsed again; checked when written, it fails only if the rules have changed
    since. The error names the item, not what in it failed, which could quote its content."""
    try:
        return parse(data, "")
    except HanseError:
        raise _invalid(
            param,
            f"The stored item `{item_id}` no longer passes the checks: read it, fix it and write "
            "it again.",
        ) from None


def _merge_tools(
    tools: list[Tool | CustomTool] | None, skills: list[tuple[str, Skill]]
) -> list[Tool | CustomTool] | None:
    """The request's tools, then each skill's; a name already taken is an error naming the
    skill's parameter and the tool's index, and the name itself only for an inline skill (a vault
    skill's tool names are its secret content)."""
    merged: list[Tool | CustomTool] = list(tools or [])
    for param, skill in skills:
        for index, tool in enumerate(skill.tools):
            name = tool.function.name
            if any(tool_name(t) == name for t in merged):
                which = f"`{name}`" if param.startswith("skill_configs") else f"number {index}"
                raise _invalid(
                    param,
                    f"The tool {which} of the skill `{param}` has a name that the request or "
                    "another skill already uses.",
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
