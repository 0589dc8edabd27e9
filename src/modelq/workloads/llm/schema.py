"""What an ``llm`` job takes: prompts or chat message lists, the model and its sampling options.

Checked twice: at submit time (the API answers 422 naming the field, before anything is queued)
and again by the worker, which also sees messages published without going through modelq.
Pure pydantic, no HTTP client: the API imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelq.errors import InvalidInput

if TYPE_CHECKING:
    from modelq.config import LLMEndpoint, Settings

Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(BaseModel):
    """One chat message, as the OpenAI chat API takes it (extra keys such as ``name`` pass through)."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None


class LLMInput(BaseModel):
    """The input of an ``llm`` job (the task's keyword arguments)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompts: list[str | list[Message]] = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    reduce: str | None = Field(default=None, min_length=1)
    reduce_max_tokens: int | None = Field(default=None, ge=1)
    all_or_nothing: bool = False
    max_in_flight: int | None = Field(default=None, ge=1)

    def messages(self, index: int) -> list[dict[str, Any]]:
        """The chat messages sent for prompt ``index``: the system prompt first unless the item has its own."""
        item = self.prompts[index]
        if isinstance(item, str):
            messages = [{"role": "user", "content": item}]
        else:
            messages = [m.model_dump(exclude_none=True) for m in item]
        if self.system is not None and not any(m["role"] in ("system", "developer") for m in messages):
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    def reduce_messages(self, texts: list[tuple[int, str]]) -> list[dict[str, Any]]:
        """The reduce prompt with the map results: in place of ``{results}``, else after it.

        Each result is numbered by its prompt's position (``[1]`` is the first prompt), so a
        summary can cite them; failed prompts are left out.
        """
        joined = "\n\n".join(f"[{index + 1}] {text}" for index, text in texts)
        assert self.reduce is not None
        if "{results}" in self.reduce:
            content = self.reduce.replace("{results}", joined)
        else:
            content = f"{self.reduce}\n\n{joined}"
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages


@dataclass(frozen=True)
class Resolved:
    """A checked job input and the endpoint that serves its model."""

    input: LLMInput
    endpoint_name: str
    endpoint: LLMEndpoint


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "input"


def resolve_endpoint(settings: Settings, model: str) -> tuple[str, LLMEndpoint]:
    """The first configured endpoint whose ``models`` patterns match ``model``.

    Raises:
        InvalidInput: no endpoint serves this model (field ``model``).
    """
    for name, endpoint in settings.llm.endpoints.items():
        if any(fnmatchcase(model, pattern) for pattern in endpoint.models):
            return name, endpoint
    if not settings.llm.endpoints:
        raise InvalidInput(
            f"no LLM endpoint is configured, so model {model!r} cannot be served; "
            "declare one in llm_endpoints (modelq.yml) or MODELQ_LLM_ENDPOINTS",
            field="model",
        )
    served = "; ".join(f"{name}: {', '.join(e.models)}" for name, e in settings.llm.endpoints.items())
    raise InvalidInput(f"no LLM endpoint serves model {model!r} (configured: {served})", field="model")


def _check_prompt(index: int, item: Any) -> None:
    """One prompt: a string, or a non-empty list of chat messages (errors name ``prompts.<i>...``)."""
    if isinstance(item, str):
        return
    if not isinstance(item, list):
        raise InvalidInput(
            f"prompts.{index}: a prompt is a string or a list of chat messages, not {type(item).__name__}",
            field=f"prompts.{index}",
        )
    if not item:
        raise InvalidInput(f"prompts.{index}: a chat message list must not be empty", field=f"prompts.{index}")
    for position, message in enumerate(item):
        try:
            Message.model_validate(message)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = _field(("prompts", index, position, *first.get("loc", ())))
            raise InvalidInput(f"{field}: {first.get('msg', 'invalid value')}", field=field) from None


def check_llm_input(data: dict[str, Any], settings: Settings) -> Resolved:
    """Check an ``llm`` job's input against its schema and the configured limits.

    Raises:
        InvalidInput: with ``field`` naming the offending input key (``prompts``, ``prompts.3.role``,
            ``model``...); too many prompts names the limit and the setting that raises it.
    """
    prompts = data.get("prompts")
    limit = settings.llm.max_prompts
    # The cap is checked before anything else looks at the prompts: a huge list is refused cheaply.
    if isinstance(prompts, list) and len(prompts) > limit:
        raise InvalidInput(
            f"prompts has {len(prompts)} items; the limit is {limit} per job "
            "(MODELQ_LLM_MAX_PROMPTS); split the work into several jobs",
            field="prompts",
            limit=limit,
        )
    if isinstance(prompts, list):
        for index, item in enumerate(prompts):
            _check_prompt(index, item)
    try:
        checked = LLMInput.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        raise InvalidInput(f"{_field(loc)}: {first.get('msg', 'invalid value')}", field=_field(loc)) from None
    if checked.max_in_flight is not None and checked.max_in_flight > settings.llm.max_in_flight:
        raise InvalidInput(
            f"max_in_flight is {checked.max_in_flight}; a worker process allows at most "
            f"{settings.llm.max_in_flight} (MODELQ_LLM_MAX_IN_FLIGHT)",
            field="max_in_flight",
            limit=settings.llm.max_in_flight,
        )
    name, endpoint = resolve_endpoint(settings, checked.model)
    return Resolved(input=checked, endpoint_name=name, endpoint=endpoint)
