"""OpenAI-compatible models through Chat Completions tool calling (SPEC §5.3).

One loop for every server that speaks the Chat Completions API: OpenAI, vLLM, SGLang, Ollama,
gateways. The official ``openai`` SDK does the HTTP work: retries (408/409/429/5xx, connection
errors) with its own backoff, timeouts, and ``OPENAI_BASE_URL`` when no base URL is set; there is
no retry layer of ours on top. What the SDK still throws after its retries becomes an
``AgentError``, which ends the episode as ``error``.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import openai

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
from leakbench.env.tools import as_openai_tools, parse_arguments
from leakbench.errors import LeakbenchError
from leakbench.settings import AgentSettings, ModelPrice, RunSettings

__all__ = ["DEFAULT_API_KEY_ENV", "OpenAIAgent", "check_api_key", "describe_error", "make_client"]

PROVIDER = "openai"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"  # the SDK's own
# Chat Completions has no is_error on a tool message: an error result says so in its text.
ERROR_PREFIX = "Error: "
CUT_OFF = (
    "(Your last reply was cut off at the limit of {max_tokens} output tokens: keep replies "
    "shorter.) "
)


# ---------------------------------------------------------------------------------------------
# Client


def make_client(
    run_settings: RunSettings,
    api_key: str | None = None,
    base_url: str | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
) -> openai.OpenAI:
    """The SDK client shared by all episodes of a run.

    The key is ``api_key``, else the variable ``api_key_env`` from the environment, else from a
    ``.env`` file in the working directory; without one this is a ``LeakbenchError`` naming the
    variable. ``base_url=None`` lets the SDK read ``OPENAI_BASE_URL`` (default: OpenAI's API).
    """
    key = api_key or api_key_from_env(api_key_env)
    if not key:
        raise LeakbenchError(
            f"{api_key_env} is not set, and OpenAI-compatible models need it",
            hint=f"export it, or put {api_key_env}=... in a .env file in this folder (a local "
            "server that checks no key takes any value); or run the built-in scripted agent, "
            "which needs no key: --model local/baseline",
        )
    try:
        return openai.OpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=run_settings.max_retries,
            timeout=run_settings.request_timeout_s,
        )
    except openai.OpenAIError as exc:  # e.g. an unusable OPENAI_* variable in the environment
        raise LeakbenchError(f"cannot create the OpenAI client: {describe_error(exc)}") from None


def check_api_key(
    client: openai.OpenAI, model: str, api_key_env: str = DEFAULT_API_KEY_ENV
) -> None:
    """One cheap request before any episode: a rejected key, an unknown model or an unreachable
    server is a ``LeakbenchError`` with one clear line (the key is never shown)."""
    model = bare_model(model)
    try:
        try:
            client.models.retrieve(model)
        except openai.NotFoundError:
            # vLLM and some gateways have no per-model endpoint: ask the model for one token.
            client.chat.completions.create(
                model=model,
                max_completion_tokens=1,
                messages=[{"role": "user", "content": "ping"}],
            )
    except openai.AuthenticationError:
        raise LeakbenchError(
            f"the server at {client.base_url} rejected the API key (401)",
            hint=f"check {api_key_env} in your environment or .env file",
        ) from None
    except openai.PermissionDeniedError as exc:
        raise LeakbenchError(
            f"the API key may not use model '{model}' (403): {_error_message(exc)}"
        ) from None
    except openai.NotFoundError:
        raise LeakbenchError(
            f"unknown model '{model}' at {client.base_url}",
            hint="use a name the server lists at GET /v1/models, e.g. --model openai/gpt-4.1-mini",
            exit_code=2,
        ) from None
    except openai.APIConnectionError as exc:
        raise LeakbenchError(
            f"cannot reach the OpenAI-compatible API at {client.base_url}: {describe_error(exc)}"
        ) from None
    except openai.OpenAIError as exc:
        raise LeakbenchError(
            f"the API key check at {client.base_url} failed: {describe_error(exc)}"
        ) from None
    except ValueError as exc:  # a body that is not JSON
        raise LeakbenchError(f"malformed reply from {client.base_url}: {exc}") from None


def bare_model(model: str) -> str:
    """``openai/gpt-4.1-mini`` -> ``gpt-4.1-mini`` (``openai/org/name`` -> ``org/name``)."""
    return model.removeprefix(f"{PROVIDER}/")


# ---------------------------------------------------------------------------------------------
# Errors


def _error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    # The SDK keeps the inner object of {"error": {...}} as the body.
    body = exc.body
    return body if isinstance(body, dict) else {}


def _error_message(exc: openai.APIStatusError) -> str:
    message = _error_body(exc).get("message")
    return str(message) if message else str(exc.message)


def _error_type(exc: openai.APIStatusError) -> str:
    body = _error_body(exc)
    return str(body.get("type") or body.get("code") or "error")


def describe_error(exc: Exception) -> str:
    """One line about an SDK error: status, error type, message; never request headers."""
    if isinstance(exc, openai.APIStatusError):
        text = f"HTTP {exc.status_code} {_error_type(exc)}: {_error_message(exc)}"
        if exc.request_id:
            text += f" (request {exc.request_id})"
    elif isinstance(exc, openai.APITimeoutError):
        text = "request timed out"
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        text = "connection error" + (f": {type(cause).__name__}: {cause}" if cause else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return one_line(text)


def is_context_overflow(exc: openai.APIStatusError) -> bool:
    """The request no longer fits the model's context window (or the server's size limit)."""
    code = str(_error_body(exc).get("code") or "")
    return mentions_context_overflow(exc.status_code, f"{code} {_error_message(exc)}")


# ---------------------------------------------------------------------------------------------
# The agent


class OpenAIAgent:
    """An ``Agent`` that asks an OpenAI-compatible model for each turn; one instance per
    episode, the client shared."""

    def __init__(
        self,
        model: str,
        agent_settings: AgentSettings,
        run_settings: RunSettings,
        price: ModelPrice | None,
        client: openai.OpenAI | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = DEFAULT_API_KEY_ENV,
    ) -> None:
        self.model = bare_model(model)
        self.name = f"{PROVIDER}/{self.model}"
        self.settings = agent_settings
        self.price = price
        if client is None:
            client = make_client(run_settings, base_url=base_url, api_key_env=api_key_env)
        self.client = client
        self._tools: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []
        self._started = False  # the first next_turn sends the prompts, nothing more
        self._sent = 0  # history messages already in earlier records
        self._cut_off = False  # the last reply hit the token limit without a tool call

    # -- Agent protocol -------------------------------------------------------------------------

    def begin(self, system_prompt: str, task_prompt: str, tools: list[dict[str, Any]]) -> None:
        self._tools = as_openai_tools(tools)
        self._messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": task_prompt},
        ]
        self._started = False
        self._sent = 0
        self._cut_off = False

    def next_turn(self, results: list[ToolResult]) -> Turn:
        if not self._messages:
            raise RuntimeError("next_turn() before begin()")
        if self._started:
            self._messages += self._answers(results)
        self._started = True
        response, record = self._call()
        if response is None:  # the prompt no longer fits
            return Turn("", [], "context_overflow", Usage(), [record])
        usage = self._usage(response)
        record["usage"] = usage.as_dict()
        return self._turn(response.choices[0], usage, record)

    # -- one API call ---------------------------------------------------------------------------

    def _answers(self, results: list[ToolResult]) -> list[dict[str, Any]]:
        """The messages that answer the last reply: a tool message per tool call, or a nudge."""
        pending = _pending_tool_call_ids(self._messages)
        answered = {r.call_id for r in results}
        messages = [
            {"role": "tool", "tool_call_id": r.call_id, "content": _result_text(r)} for r in results
        ]
        # Every tool call needs an answer before the conversation can go on; the episode
        # should answer each one, but a gap here must not turn into a 400 for the episode.
        messages += [
            {"role": "tool", "tool_call_id": i, "content": ERROR_PREFIX + MISSING_RESULT}
            for i in pending
            if i not in answered
        ]
        if not messages:
            note = CUT_OFF.format(max_tokens=self.settings.max_tokens) if self._cut_off else ""
            messages = [{"role": "user", "content": note + NUDGE}]
        return messages

    def _request(self) -> dict[str, Any]:
        # max_completion_tokens: OpenAI's reasoning models refuse the older max_tokens.
        # temperature is always sent, so a server's own default (vLLM takes one from the
        # model's generation config) never changes what a run measures.
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(self._messages),
            "max_completion_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
        }
        if self._tools:
            request["tools"] = self._tools
        return request

    def _call(self) -> tuple[Any | None, dict[str, Any]]:
        """One ``chat.completions.create``; returns the response (None on context overflow)
        and its transcript record, which holds only what is new since the previous call."""
        request = self._request()
        first = self._sent == 0
        record: dict[str, Any] = {
            "kind": "openai.chat.completions.create",
            "request": {
                "model": self.model,
                "max_completion_tokens": self.settings.max_tokens,
                "temperature": self.settings.temperature,
                **({"tools": self._tools} if first else {}),
                "new_messages": copy.deepcopy(self._messages[self._sent :]),
            },
        }
        self._sent = len(self._messages)
        started = time.perf_counter()
        try:
            raw = self.client.chat.completions.with_raw_response.create(**request)
            response = raw.parse()
        except openai.APIStatusError as exc:
            record["wall_s"] = time.perf_counter() - started
            record["request_id"] = exc.request_id
            record["error"] = describe_error(exc)
            if is_context_overflow(exc):
                record["stop_reason"] = "context_overflow"
                return None, record
            raise AgentError(f"OpenAI-compatible API: {describe_error(exc)}") from exc
        except ValueError as exc:  # a body that is not JSON
            raise AgentError(f"OpenAI-compatible API: malformed response: {exc}") from exc
        except openai.OpenAIError as exc:  # timeouts, connection errors, validation
            raise AgentError(f"OpenAI-compatible API: {describe_error(exc)}") from exc
        record["wall_s"] = time.perf_counter() - started
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices or _message(choices[0]) is None:
            # e.g. a gateway's {"error": ...} sent with status 200
            raise AgentError(f"OpenAI-compatible API: malformed response: {str(response)[:200]!r}")
        choice = choices[0]
        record["request_id"] = getattr(response, "_request_id", None)
        record["retries"] = getattr(raw, "retries_taken", None)  # done by the SDK
        raw_usage = getattr(response, "usage", None)
        record["response"] = {
            "id": getattr(response, "id", None),
            "message": _dump(_message(choice)),
            "finish_reason": getattr(choice, "finish_reason", None),
            "usage": _dump(raw_usage) if raw_usage is not None else None,
        }
        record["stop_reason"] = record["response"]["finish_reason"]
        return response, record

    def _usage(self, response: Any) -> Usage:
        """prompt_tokens counts the cached tokens too: they are recorded as cache reads and the
        rest as input, so input + cache read is the prompt and each is priced once."""
        raw = getattr(response, "usage", None)
        prompt = _count(getattr(raw, "prompt_tokens", 0))
        details = getattr(raw, "prompt_tokens_details", None)
        cached = min(_count(getattr(details, "cached_tokens", 0)), prompt)
        usage = Usage(
            input_tokens=prompt - cached,
            output_tokens=_count(getattr(raw, "completion_tokens", 0)),
            cache_read_tokens=cached,
        )
        usage.cost_usd = cost_usd(usage, self.price)
        return usage

    # -- response -> Turn -----------------------------------------------------------------------

    def _turn(self, choice: Any, usage: Usage, record: dict[str, Any]) -> Turn:
        message = _message(choice)
        finish = getattr(choice, "finish_reason", None)
        content = getattr(message, "content", None)
        text = content if isinstance(content, str) else ""
        refusal = getattr(message, "refusal", None)
        cut_off = finish == "length"
        raw_calls = list(getattr(message, "tool_calls", None) or [])
        calls: list[ToolCall] = []
        sent_back: list[dict[str, Any]] = []
        for k, raw in enumerate(raw_calls):
            # Only the call being written when the limit hit can be incomplete.
            call, param = self._tool_call(raw, k, truncated=cut_off and k == len(raw_calls) - 1)
            calls.append(call)
            sent_back.append(param)
        # The reply goes back into the history as it came, but for arguments that are not
        # strict JSON (servers that parse the history again would refuse the next request).
        # An empty reply is left out: the API rejects an assistant message with nothing in it.
        if text or sent_back:
            reply: dict[str, Any] = {"role": "assistant", "content": text or None}
            if sent_back:
                reply["tool_calls"] = sent_back
            self._messages.append(reply)
        self._sent = len(self._messages)  # the reply is in this record's response already
        self._cut_off = cut_off and not calls
        stop: StopKind
        if finish == "content_filter":
            stop = "content_filter"
        elif refusal and not calls:
            stop = "refusal"
            text = text or str(refusal)
        elif cut_off:
            stop = "max_tokens"
        elif calls:
            # tool_calls, and also stop (some servers say so) with calls: every tool call
            # needs a result before the conversation can go on.
            stop = "tool_use"
        else:
            stop = "end_turn"  # stop, and any finish reason this version does not know
        return Turn(text, calls, stop, usage, [record])

    def _tool_call(self, raw: Any, k: int, truncated: bool) -> tuple[ToolCall, dict[str, Any]]:
        """A reply's tool call for the episode, and as it is sent back in the history."""
        function = getattr(raw, "function", None)
        # A server that gives no id still needs one, to pair the call with its result.
        call_id = getattr(raw, "id", None) or f"call_{len(self._messages)}_{k}"
        name = getattr(function, "name", None) or ""
        arguments = getattr(function, "arguments", None)
        tool_input, problem = parse_arguments(name, arguments)
        if function is None:
            problem = f"unsupported tool call type {getattr(raw, 'type', None)!r}; nothing was run"
        param = {
            "id": call_id,
            "type": "function",
            "function": {
                "name": name,
                "arguments": "{}" if problem else json.dumps(json_safe(tool_input)),
            },
        }
        call = ToolCall(call_id, name, tool_input, truncated=truncated, problem=problem)
        return call, param


def _message(choice: Any) -> Any:
    return getattr(choice, "message", None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _result_text(result: ToolResult) -> str:
    text = result.content or NO_OUTPUT
    return ERROR_PREFIX + text if result.is_error else text


def _pending_tool_call_ids(messages: list[dict[str, Any]]) -> list[str]:
    """Ids of the tool calls in the last message, if it is a reply that awaits results."""
    if not messages or messages[-1]["role"] != "assistant":
        return []
    return [call["id"] for call in messages[-1].get("tool_calls", [])]


def _dump(model: Any) -> Any:
    dump = getattr(model, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else model
