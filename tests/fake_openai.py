"""A fake OpenAI-compatible Chat Completions API on 127.0.0.1 for tests (stdlib only).

It speaks the real wire format of ``POST /v1/chat/completions`` and ``GET /v1/models/{id}``,
checks the API key (``authorization: Bearer``), plays a scripted conversation and injects the
faults the harness must survive. The machinery (lifecycle, fault queue, request log, slow,
dropped and malformed replies) is the fake Anthropic server's; only the wire format differs.

A *script* is a callable ``(request_body: dict) -> dict | Fault``: the dict is a reply built with
``text_reply``/``tool_calls_reply``/``length_reply``/``content_filter_reply``/``refusal_reply``;
the server wraps it in a ``chat.completion``. ``ScriptedConversation`` picks reply *k* from the
number of assistant messages in the request, so replies stay deterministic when many
conversations share one server.

    from tests.fake_openai import FakeOpenAI, ScriptedConversation, text_reply

    with FakeOpenAI(ScriptedConversation([text_reply("hi")])) as server:
        client = openai.OpenAI(api_key=server.api_key, base_url=server.base_url)
        ...
        assert len(server.chat_requests()) == 1
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from http.server import ThreadingHTTPServer
from typing import Any

from tests import fake_anthropic
from tests.fake_anthropic import (
    FakeAnthropic,
    Fault,
    RecordedRequest,
    dropped,
    malformed,
    slow,
)

__all__ = [
    "DEFAULT_API_KEY",
    "FakeOpenAI",
    "Fault",
    "ScriptedConversation",
    "bad_request",
    "content_filter_reply",
    "context_overflow",
    "dropped",
    "error_fault",
    "length_reply",
    "malformed",
    "rate_limited",
    "raw_reply",
    "refusal_reply",
    "server_error",
    "slow",
    "text_reply",
    "tool_calls_reply",
    "unavailable",
    "usage",
]

DEFAULT_API_KEY = "sk-fake-openai-test-key-0000"
CHAT_PATH = "/v1/chat/completions"

Reply = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Replies


def usage(prompt: int = 100, completion: int = 20, cached: int = 0) -> dict[str, Any]:
    """A ``usage`` object; ``cached`` of the ``prompt`` tokens were read from the cache."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _tool_call(call: Sequence[Any]) -> dict[str, Any]:
    """``(name, arguments)`` or ``(name, arguments, id)``; a str ``arguments`` is sent as is
    (malformed JSON, say), anything else JSON-encoded (NaN allowed, as a lenient server would)."""
    name, args = call[0], call[1]
    call_id = call[2] if len(call) > 2 else f"call_{uuid.uuid4().hex[:24]}"
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def text_reply(
    text: str, *, finish_reason: str = "stop", usage: dict[str, Any] | None = None
) -> Reply:
    """An assistant message with text only."""
    return {"message": {"content": text}, "finish_reason": finish_reason, "usage": usage}


def tool_calls_reply(
    calls: Iterable[Sequence[Any]],
    *,
    text: str | None = None,
    finish_reason: str = "tool_calls",
    usage: dict[str, Any] | None = None,
) -> Reply:
    """An assistant message asking for tool calls: ``[(name, arguments[, id]), ...]``."""
    message = {"content": text, "tool_calls": [_tool_call(call) for call in calls]}
    return {"message": message, "finish_reason": finish_reason, "usage": usage}


def length_reply(
    partial_call: Sequence[Any] | None = None,
    *,
    text: str | None = None,
    complete_calls: Iterable[Sequence[Any]] = (),
    usage: dict[str, Any] | None = None,
) -> Reply:
    """A reply cut off by the token limit (``finish_reason: length``): text, complete tool calls,
    then the partial one (give its arguments as a str to cut them mid-JSON)."""
    calls = [_tool_call(call) for call in complete_calls]
    if partial_call is not None:
        calls.append(_tool_call(partial_call))
    message: dict[str, Any] = {"content": text}
    if calls:
        message["tool_calls"] = calls
    return {"message": message, "finish_reason": "length", "usage": usage}


def content_filter_reply(text: str | None = None) -> Reply:
    """A reply stopped by the provider's content filter."""
    return {"message": {"content": text}, "finish_reason": "content_filter", "usage": None}


def raw_reply(body: Any) -> Reply:
    """Send ``body`` as the whole 200 response, whatever it holds."""
    return {"raw": body}


def refusal_reply(refusal: str = "I'm sorry, I can't help with that.") -> Reply:
    """A refusal in the message's ``refusal`` field."""
    return {"message": {"content": None, "refusal": refusal}, "finish_reason": "stop"}


# ---------------------------------------------------------------------------------------------
# Faults (slow, dropped and malformed are the fake Anthropic server's)


def error_fault(
    status: int,
    error_type: str,
    message: str,
    *,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> Fault:
    """A status error; the error's ``code`` rides in ``Fault.error_type`` as ``type:code``."""
    kind = f"{error_type}:{code}" if code else error_type
    headers = fake_anthropic._retry_headers(retry_after_s)
    return Fault("status", status, kind, message, headers)


def rate_limited(retry_after_s: float = 0.001) -> Fault:
    """429 with a ``retry-after`` header (tiny by default, for fast tests)."""
    return error_fault(
        429, "requests", "Rate limit reached for requests", code="rate_limit_exceeded",
        retry_after_s=retry_after_s,
    )  # fmt: skip


def server_error(retry_after_s: float | None = 0.001) -> Fault:
    """500 ``server_error``."""
    return error_fault(
        500, "server_error", "The server had an error while processing your request.",
        retry_after_s=retry_after_s,
    )  # fmt: skip


def unavailable(retry_after_s: float | None = 0.001) -> Fault:
    """503, as vLLM or a gateway sends while it is overloaded."""
    return error_fault(503, "server_error", "Service unavailable", retry_after_s=retry_after_s)


def context_overflow(tokens: int = 9000, limit: int = 8192) -> Fault:
    """400 ``context_length_exceeded``, worded as OpenAI and vLLM word it."""
    return error_fault(
        400,
        "invalid_request_error",
        f"This model's maximum context length is {limit} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
    )


def bad_request(message: str = "messages: invalid role") -> Fault:
    return error_fault(400, "invalid_request_error", message)


# ---------------------------------------------------------------------------------------------
# Scripts


class ScriptedConversation(fake_anthropic.ScriptedConversation):
    """Reply number *k* (k = assistant messages already in the request) is ``turns[k]``; a turn
    may be a reply, a Fault, or a callable ``(body) -> reply | Fault``. Past the end: ``after``."""

    def __init__(
        self,
        turns: Sequence[Reply | Fault | Callable[[dict[str, Any]], Reply | Fault]],
        after: Reply | Fault | None = None,
    ) -> None:
        super().__init__(turns, after if after is not None else text_reply("(script exhausted)"))


def echo_script(body: dict[str, Any]) -> Reply:
    """Default script: a short text reply."""
    return text_reply("ok")


# ---------------------------------------------------------------------------------------------
# Server


class FakeOpenAI(FakeAnthropic):
    """The server. Use as a context manager, or ``start()``/``stop()``.

    ``fail_first(n, fault)`` makes the next n chat requests fail that way whatever the script
    says; ``api_key=None`` accepts any key; ``known_models`` limits the models it serves;
    ``models_endpoint=False`` answers ``GET /v1/models/{id}`` with 404, as vLLM does.
    """

    def __init__(
        self,
        script: Callable[[dict[str, Any]], Reply | Fault] | None = None,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        latency_s: float = 0.0,
        known_models: Iterable[str] | None = None,
        models_endpoint: bool = True,
    ) -> None:
        super().__init__(
            script or echo_script, api_key=api_key, latency_s=latency_s, known_models=known_models
        )
        self.models_endpoint = models_endpoint

    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    @property
    def base_url(self) -> str:
        """With ``/v1``, as the openai SDK and ``OPENAI_BASE_URL`` expect."""
        return f"{super().base_url}/v1"

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == CHAT_PATH]

    message_requests = chat_requests  # so fail_first and message_bodies count chat requests

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.chat_requests()]


class _Handler(fake_anthropic._Handler):
    fake: FakeOpenAI

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        request_id = {"x-request-id": f"req_fake_{uuid.uuid4().hex[:20]}"}
        super()._send(status, payload, {**request_id, **(headers or {})})

    def _send_error(self, status: int, error_type: str, message: str, headers=None) -> None:
        kind, _, code = error_type.partition(":")
        error = {"message": message, "type": kind, "param": None, "code": code or None}
        self._send_json(status, {"error": error}, headers)

    def _authorised(self) -> bool:
        expected = self.fake.api_key
        bearer = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if expected is None or bearer == expected:
            return True
        self._send_error(
            401,
            "invalid_request_error:invalid_api_key",
            "Incorrect API key provided. You can find your API key in your account settings.",
        )
        return False

    def _model_not_found(self, model: str) -> None:
        self._send_error(
            404,
            "invalid_request_error:model_not_found",
            f"The model `{model}` does not exist or you do not have access to it.",
        )

    # -- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        if not self._authorised():
            return
        prefix = "/v1/models/"
        if not self.fake.models_endpoint or not self.path.startswith(prefix):
            self._send_error(404, "not_found_error", f"Not Found: {self.path}")
            return
        model = self.path[len(prefix) :].split("?")[0]
        known = self.fake.known_models
        if known is not None and model not in known:
            self._model_not_found(model)
            return
        self._send_json(
            200, {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
        )

    def do_POST(self) -> None:
        body = self._read_body()
        self._record(body)
        if not self._authorised():
            return
        if self.path.split("?")[0] != CHAT_PATH:
            self._send_error(404, "not_found_error", f"Not Found: {self.path}")
            return
        problem = _invalid_request(body)
        if problem:
            self._send_error(400, "invalid_request_error", problem)
            return
        known = self.fake.known_models
        if known is not None and body["model"] not in known:
            self._model_not_found(body["model"])
            return
        fault = self.fake._next_fault()
        reply = None
        if fault is None:
            try:
                reply = self.fake.script(body)
            except Exception as exc:  # a broken script is a test bug: make it loud
                self._send_error(500, "server_error", f"fake script raised {exc!r}")
                return
            if isinstance(reply, Fault):
                fault = reply
        if self.fake.latency_s:
            self.fake._stopping.wait(self.fake.latency_s)
        if fault is not None:
            self._play_fault(fault, body)
            return
        self._send_message(body, reply)

    def _send_message(self, body: dict[str, Any], reply: Reply | None) -> None:
        reply = reply or text_reply("ok")
        if "raw" in reply:
            self._send_json(200, reply["raw"])
            return
        message = {"role": "assistant", "content": None, "refusal": None, **reply["message"]}
        completion = {
            "id": f"chatcmpl-fake{uuid.uuid4().hex[:20]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.get("finish_reason", "stop"),
                    "logprobs": None,
                }
            ],
            "usage": reply.get("usage") or usage(),
        }
        # A lenient server's NaN in a tool call's arguments is inside a string: still valid JSON.
        self._send_json(200, completion)


def _invalid_request(body: Any) -> str | None:
    """What OpenAI's API would refuse in a request body (a 400), or None."""
    if not isinstance(body, dict) or "messages" not in body or "model" not in body:
        return "body must hold model and messages"
    calls: dict[str, bool] = {}  # tool call id -> answered
    for i, message in enumerate(body["messages"]):
        role = message.get("role")
        unanswered = [k for k, done in calls.items() if not done]
        if role != "tool" and unanswered:
            return f"messages[{i}]: tool calls without a tool message: {unanswered}"
        if role == "assistant":
            if message.get("content") is None and not message.get("tool_calls"):
                return f"messages[{i}]: an assistant message needs content or tool_calls"
            for call in message.get("tool_calls") or []:
                arguments = call.get("function", {}).get("arguments")
                try:
                    json.loads(arguments, parse_constant=_no_constant)
                except (TypeError, ValueError):
                    # OpenAI takes any string; vLLM and Ollama parse it again, strictly.
                    return f"messages[{i}]: tool call arguments are not strict JSON: {arguments!r}"
                calls[call["id"]] = False
        elif role == "tool":
            if message.get("tool_call_id") not in calls:
                return f"messages[{i}]: a tool message must answer a preceding tool call"
            calls[message["tool_call_id"]] = True
        elif role not in ("user", "system", "developer"):
            return f"messages[{i}]: unknown role {role!r}"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
