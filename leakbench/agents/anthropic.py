"""Claude through the Anthropic Messages API tool-use loop (SPEC §5.3).

The official SDK does the HTTP work: retries (408/409/429/5xx/529, connection errors) with its own
backoff, timeouts and ``ANTHROPIC_BASE_URL``; there is no retry layer of ours on top. What the SDK
still throws after its retries becomes an ``AgentError``, which ends the episode as ``error``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import anthropic

from leakbench.agents.base import AgentError, StopKind, ToolCall, ToolResult, Turn, Usage
from leakbench.agents.model_api import (
    MISSING_RESULT,
    NO_OUTPUT,
    NUDGE,
    api_key_from_env,
    cost_usd,
    json_safe,
    mentions_context_overflow,
    one_line,
)
from leakbench.agents.prompts import load_prompts
from leakbench.errors import LeakbenchError
from leakbench.settings import AgentSettings, ModelPrice, RunSettings

__all__ = [
    "NUDGE",
    "AnthropicAgent",
    "check_api_key",
    "describe_error",
    "load_prompts",
    "make_client",
]

PROVIDER = "anthropic"
# pause_turn means "send the reply back and I will go on"; more than a few in a row is a loop.
MAX_CONTINUATIONS = 3
DEFAULT_TEMPERATURE = 1.0  # the API's own default: not sent
LEGACY_API_VERSION = "2023-06-01"  # the last API version that accepts ``temperature``
EPHEMERAL = {"type": "ephemeral"}


# ---------------------------------------------------------------------------------------------
# Client


def make_client(
    run_settings: RunSettings, api_key: str | None = None, base_url: str | None = None
) -> anthropic.Anthropic:
    """The SDK client shared by all episodes of a run.

    The key is ``api_key``, else ``ANTHROPIC_API_KEY`` from the environment, else from a ``.env``
    file in the working directory; without one the SDK's own credential lookup (auth token,
    profiles) still applies and ``check_api_key`` reports what is missing. ``base_url=None``
    lets the SDK read ``ANTHROPIC_BASE_URL``.
    """
    key = api_key or api_key_from_env("ANTHROPIC_API_KEY")
    try:
        return anthropic.Anthropic(
            api_key=key or None,
            base_url=base_url,
            max_retries=run_settings.max_retries,
            timeout=run_settings.request_timeout_s,
        )
    except anthropic.AnthropicError as exc:  # a broken SDK profile named in the environment
        raise LeakbenchError(f"cannot load Anthropic credentials: {describe_error(exc)}") from None


def check_api_key(client: anthropic.Anthropic, model: str) -> None:
    """One cheap request before any episode: a missing or rejected key, an unknown model or an
    unreachable API is a ``LeakbenchError`` with one clear line (the key is never shown)."""
    model = bare_model(model)
    credentials = (getattr(client, name, None) for name in ("api_key", "auth_token", "credentials"))
    if not any(credentials):
        # A preset can name a Claude model by itself (seed does): say how to run without one.
        raise LeakbenchError(
            f"ANTHROPIC_API_KEY is not set, and model {model} needs it",
            hint="export it, or put ANTHROPIC_API_KEY=... in a .env file in this folder; "
            "or run the built-in scripted agent, which needs no key: --model local/baseline",
        )
    try:
        try:
            client.models.retrieve(model)
        except anthropic.NotFoundError:
            # Some gateways have no models endpoint: ask the model itself for one token.
            client.messages.create(
                model=model, max_tokens=1, messages=[{"role": "user", "content": "ping"}]
            )
    except anthropic.AuthenticationError:
        raise LeakbenchError(
            f"the Anthropic API rejected the API key (401) at {client.base_url}",
            hint="check ANTHROPIC_API_KEY in your environment or .env file",
        ) from None
    except anthropic.PermissionDeniedError as exc:
        raise LeakbenchError(
            f"the API key may not use model '{model}' (403): {_error_message(exc)}"
        ) from None
    except anthropic.NotFoundError:
        raise LeakbenchError(
            f"unknown model '{model}' at {client.base_url}",
            hint="use a model name such as claude-haiku-4-5",
            exit_code=2,
        ) from None
    except anthropic.APIConnectionError as exc:
        raise LeakbenchError(
            f"cannot reach the Anthropic API at {client.base_url}: {describe_error(exc)}"
        ) from None
    except anthropic.AnthropicError as exc:
        raise LeakbenchError(
            f"the API key check at {client.base_url} failed: {describe_error(exc)}"
        ) from None
    except ValueError as exc:  # a body that is not JSON
        raise LeakbenchError(f"malformed reply from {client.base_url}: {exc}") from None


def bare_model(model: str) -> str:
    """``anthropic/claude-haiku-4-5`` -> ``claude-haiku-4-5``."""
    return model.removeprefix(f"{PROVIDER}/")


# ---------------------------------------------------------------------------------------------
# Errors


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(exc.message)


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("type") or "error")
    return "error"


def describe_error(exc: Exception) -> str:
    """One line about an SDK error: status, error type, message; never request headers."""
    if isinstance(exc, anthropic.APIStatusError):
        text = f"HTTP {exc.status_code} {_error_type(exc)}: {_error_message(exc)}"
        if exc.request_id:
            text += f" (request {exc.request_id})"
    elif isinstance(exc, anthropic.APITimeoutError):
        text = "request timed out"
    elif isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        text = "connection error" + (f": {type(cause).__name__}: {cause}" if cause else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return one_line(text)


def is_context_overflow(exc: anthropic.APIStatusError) -> bool:
    """The request no longer fits the model's context window (or the API's size limit)."""
    return mentions_context_overflow(exc.status_code, _error_message(exc))


# ---------------------------------------------------------------------------------------------
# The agent


class AnthropicAgent:
    """An ``Agent`` that asks Claude for each turn; one instance per episode, the client shared."""

    def __init__(
        self,
        model: str,
        agent_settings: AgentSettings,
        run_settings: RunSettings,
        price: ModelPrice | None,
        client: anthropic.Anthropic | None = None,
    ) -> None:
        self.model = bare_model(model)
        self.name = f"{PROVIDER}/{self.model}"
        self.settings = agent_settings
        self.price = price
        self.client = client if client is not None else make_client(run_settings)
        self._system: list[dict[str, Any]] = []
        self._tools: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []
        self._started = False  # the first next_turn sends the task prompt, nothing more
        self._sent = 0  # history messages already in earlier records

    # -- Agent protocol -------------------------------------------------------------------------

    def begin(self, system_prompt: str, task_prompt: str, tools: list[dict[str, Any]]) -> None:
        self._system = [{"type": "text", "text": system_prompt}]
        self._tools = [dict(tool) for tool in tools]
        self._messages = [{"role": "user", "content": [{"type": "text", "text": task_prompt}]}]
        self._started = False
        self._sent = 0

    def next_turn(self, results: list[ToolResult]) -> Turn:
        if not self._messages:
            raise RuntimeError("next_turn() before begin()")
        if self._started:
            self._messages.append(self._user_message(results))
        self._started = True

        usage = Usage()
        records: list[dict[str, Any]] = []
        blocks: list[Any] = []
        stop_reason: str | None = None
        for _ in range(1 + MAX_CONTINUATIONS):
            response, record = self._call()
            records.append(record)
            if response is None:  # the prompt no longer fits
                return Turn("", [], "context_overflow", usage, records)
            call_usage = self._usage(response)
            usage.add(call_usage)
            record["usage"] = call_usage.as_dict()
            content = list(response.content)
            blocks += content
            stop_reason = response.stop_reason
            # Each reply is its own assistant message (a pause_turn continuation too): the API
            # joins consecutive ones, and the count of assistant messages stays the count of
            # replies. An empty reply is left out, as the API rejects empty messages.
            sent_back = [p for p in (_block_param(b) for b in content) if p is not None]
            if sent_back:
                self._messages.append({"role": "assistant", "content": sent_back})
            self._sent = len(self._messages)  # the reply is in this record's response already
            if stop_reason != "pause_turn":
                break
        return self._turn(blocks, stop_reason, usage, records)

    # -- one API call ---------------------------------------------------------------------------

    def _user_message(self, results: list[ToolResult]) -> dict[str, Any]:
        pending = _pending_tool_use_ids(self._messages)
        answered = {r.call_id for r in results}
        content: list[dict[str, Any]] = [
            {
                "type": "tool_result",
                "tool_use_id": r.call_id,
                "content": r.content or NO_OUTPUT,
                "is_error": r.is_error,
            }
            for r in results
        ]
        # The API rejects a tool_use left without a result; the episode should answer each one,
        # but a gap here must not turn into a 400 for the whole episode.
        content += [
            {"type": "tool_result", "tool_use_id": i, "content": MISSING_RESULT, "is_error": True}
            for i in pending
            if i not in answered
        ]
        if not content:
            content = [{"type": "text", "text": NUDGE}]
        return {"role": "user", "content": content}

    def _request(self) -> dict[str, Any]:
        """The request body: the history with cache breakpoints on the tools, the system prompt
        and the last block of the two newest user messages (4, the API's maximum). The newest
        one writes the cache; the one before reads what the previous call wrote, however many
        blocks the last reply added."""
        system = [dict(block) for block in self._system]
        tools = [dict(tool) for tool in self._tools]
        if system:
            system[-1]["cache_control"] = EPHEMERAL
        if tools:
            tools[-1]["cache_control"] = EPHEMERAL
        messages = list(self._messages)
        user_indices = [i for i, m in enumerate(messages) if m["role"] == "user"][-2:]
        for i in user_indices:
            content = [dict(block) for block in messages[i]["content"]]
            content[-1]["cache_control"] = EPHEMERAL
            messages[i] = {"role": "user", "content": content}
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.settings.max_tokens,
            "system": system,
            "messages": messages,
        }
        if tools:
            request["tools"] = tools
        temperature = self.settings.temperature
        if temperature != DEFAULT_TEMPERATURE:
            # API version 2026-10-21 (the SDK's default) rejects sampling parameters, even at
            # their defaults; only the legacy version still takes one.
            request["extra_body"] = {"temperature": temperature}
            request["extra_headers"] = {"anthropic-version": LEGACY_API_VERSION}
        return request

    def _call(self) -> tuple[Any | None, dict[str, Any]]:
        """One ``messages.create``; returns the response (None on context overflow) and its
        transcript record, which holds only what is new since the previous call."""
        request = self._request()
        first = self._sent == 0
        record: dict[str, Any] = {
            "kind": "anthropic.messages.create",
            "request": {
                "model": self.model,
                "max_tokens": self.settings.max_tokens,
                **request.get("extra_body", {}),
                **({"system": self._system, "tools": self._tools} if first else {}),
                "new_messages": copy.deepcopy(self._messages[self._sent :]),
            },
        }
        self._sent = len(self._messages)
        started = time.perf_counter()
        try:
            raw = self.client.messages.with_raw_response.create(**request)
            response = raw.parse()
        except anthropic.APIStatusError as exc:
            record["wall_s"] = time.perf_counter() - started
            record["request_id"] = exc.request_id
            record["error"] = describe_error(exc)
            if is_context_overflow(exc):
                record["stop_reason"] = "context_overflow"
                return None, record
            raise AgentError(f"Anthropic API: {describe_error(exc)}") from exc
        except anthropic.APIError as exc:
            raise AgentError(f"Anthropic API: {describe_error(exc)}") from exc
        except ValueError as exc:  # the SDK does not wrap a body that is not JSON
            raise AgentError(f"Anthropic API: malformed response: {exc}") from exc
        except anthropic.AnthropicError as exc:
            raise AgentError(f"Anthropic API: {describe_error(exc)}") from exc
        record["wall_s"] = time.perf_counter() - started
        if not isinstance(response, anthropic.types.Message) or not isinstance(
            getattr(response, "content", None), list
        ):
            raise AgentError(f"Anthropic API: malformed response: {str(response)[:200]!r}")
        record["request_id"] = getattr(response, "_request_id", None)
        record["retries"] = getattr(raw, "retries_taken", None)  # done by the SDK
        record["response"] = {
            "id": getattr(response, "id", None),
            "content": [_dump(b) for b in response.content],
            "stop_reason": getattr(response, "stop_reason", None),
            "stop_sequence": getattr(response, "stop_sequence", None),
        }
        record["stop_reason"] = record["response"]["stop_reason"]
        return response, record

    def _usage(self, response: Any) -> Usage:
        raw = getattr(response, "usage", None)
        usage = Usage(
            input_tokens=getattr(raw, "input_tokens", 0) or 0,
            output_tokens=getattr(raw, "output_tokens", 0) or 0,
            cache_read_tokens=getattr(raw, "cache_read_input_tokens", 0) or 0,
            cache_write_tokens=getattr(raw, "cache_creation_input_tokens", 0) or 0,
        )
        usage.cost_usd = cost_usd(usage, self.price)
        return usage

    # -- response -> Turn -----------------------------------------------------------------------

    def _turn(
        self, blocks: list[Any], stop_reason: str | None, usage: Usage, records: list[dict]
    ) -> Turn:
        text = "\n".join(b.text for b in blocks if getattr(b, "type", None) == "text" and b.text)
        cut_off = stop_reason in ("max_tokens", "model_context_window_exceeded")
        last = blocks[-1] if blocks else None
        calls = [
            ToolCall(
                id=b.id,
                name=b.name,
                input=b.input if isinstance(b.input, dict) else {},
                # Only the block being written when the limit hit can be incomplete.
                truncated=cut_off and b is last,
            )
            for b in blocks
            if getattr(b, "type", None) == "tool_use"
        ]
        stop: StopKind
        if stop_reason == "max_tokens":
            stop = "max_tokens"
        elif stop_reason == "refusal":
            stop = "refusal"
        elif stop_reason == "model_context_window_exceeded":
            stop = "context_overflow"
        elif calls:
            # tool_use, and also end_turn/stop_sequence/pause_turn with calls: every tool_use
            # needs a result before the conversation can go on.
            stop = "tool_use"
        else:
            stop = "end_turn"
        return Turn(text, calls, stop, usage, records)


def _pending_tool_use_ids(messages: list[dict[str, Any]]) -> list[str]:
    """Ids of the tool calls in the trailing assistant message(s), which await results."""
    ids: list[str] = []
    for message in reversed(messages):
        if message["role"] != "assistant":
            break
        ids[:0] = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
    return ids


def _dump(block: Any) -> dict[str, Any]:
    dumped = block.model_dump(mode="json", exclude_none=True)
    if getattr(block, "type", None) == "tool_use":
        dumped["input"] = json_safe(block.input)  # pydantic would make a NaN null
    return dumped


def _block_param(block: Any) -> dict[str, Any] | None:
    """A response content block as it is sent back in the history (None: leave it out)."""
    kind = getattr(block, "type", None)
    if kind == "text":
        # the API rejects empty text blocks in a request
        return {"type": "text", "text": block.text} if block.text else None
    if kind == "tool_use":
        return {
            "type": "tool_use",
            "id": block.id,
            "name": block.name,
            "input": json_safe(block.input),
        }
    return _dump(block)  # thinking, server tools: sent back as received
