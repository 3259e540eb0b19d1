"""A fake Anthropic Messages API on 127.0.0.1 for tests and benchmarks (stdlib only).

It speaks the real wire format of ``POST /v1/messages`` and ``GET /v1/models/{id}``, checks the
API key (``x-api-key`` or ``authorization: Bearer``), plays a scripted conversation and can inject
the faults the harness must survive (429, 529, 500, slow replies, dropped connections, malformed
bodies, context overflow).

A *script* is a callable ``(request_body: dict) -> dict | Fault``: the dict is a reply built with
``text_reply``/``tool_use_reply``/``stop_reply``/``max_tokens_reply``; the server fills in ``id``,
``type``, ``role`` and ``model``. Deciding from the request alone (``ScriptedConversation`` picks
the turn from the number of assistant messages in it) keeps replies deterministic when many
conversations share one server.

    from tests.fake_anthropic import FakeAnthropic, ScriptedConversation, text_reply

    with FakeAnthropic(ScriptedConversation([text_reply("hi")])) as server:
        client = anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url)
        ...
        assert len(server.message_requests()) == 1
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_API_KEY = "sk-ant-fake-test-key-0000"
DEFAULT_USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}

Reply = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Replies


def _usage(usage: dict[str, int] | None) -> dict[str, int]:
    return {**DEFAULT_USAGE, **(usage or {})}


def _tool_block(call: Sequence[Any]) -> dict[str, Any]:
    name, args = call[0], call[1]
    call_id = call[2] if len(call) > 2 else f"toolu_{uuid.uuid4().hex[:24]}"
    return {"type": "tool_use", "id": call_id, "name": name, "input": args}


def text_reply(
    text: str, *, stop_reason: str = "end_turn", usage: dict[str, int] | None = None
) -> Reply:
    """An assistant message with one text block."""
    return {
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "usage": _usage(usage),
    }


def tool_use_reply(
    calls: Iterable[Sequence[Any]], *, text: str | None = None, usage: dict[str, int] | None = None
) -> Reply:
    """An assistant message asking for tool calls: ``[(name, input) or (name, input, id), ...]``."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [_tool_block(call) for call in calls]
    return {"content": content, "stop_reason": "tool_use", "usage": _usage(usage)}


def stop_reply(
    stop_reason: str, *, text: str | None = None, usage: dict[str, int] | None = None
) -> Reply:
    """A reply ending with ``stop_reason`` (``refusal``, ``pause_turn``,
    ``model_context_window_exceeded``, ``stop_sequence``, ...)."""
    content = [{"type": "text", "text": text}] if text else []
    reply = {"content": content, "stop_reason": stop_reason, "usage": _usage(usage)}
    if stop_reason == "stop_sequence":
        reply["stop_sequence"] = "###"
    return reply


def max_tokens_reply(
    partial_call: Sequence[Any] | None = None,
    *,
    text: str | None = None,
    complete_calls: Iterable[Sequence[Any]] = (),
    usage: dict[str, int] | None = None,
) -> Reply:
    """A reply cut off by ``max_tokens``: text, complete tool calls, then the partial one."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [_tool_block(call) for call in complete_calls]
    if partial_call is not None:
        content.append(_tool_block(partial_call))
    return {"content": content, "stop_reason": "max_tokens", "usage": _usage(usage)}


# ---------------------------------------------------------------------------------------------
# Faults


@dataclass(frozen=True)
class Fault:
    """Something other than a normal reply. Build with the functions below."""

    kind: str  # "status" | "slow" | "drop" | "malformed"
    status: int = 0
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    then: Reply | None = None  # for "slow": the reply sent after the delay (default: the script's)


def _retry_headers(retry_after_s: float | None) -> dict[str, str]:
    if retry_after_s is None:
        return {}
    # retry-after-ms is what the SDK reads first; retry-after (whole seconds) is the standard one.
    return {
        "retry-after-ms": str(max(1, round(retry_after_s * 1000))),
        "retry-after": str(int(retry_after_s + 0.999)),
    }


def error_fault(
    status: int, error_type: str, message: str, *, retry_after_s: float | None = None
) -> Fault:
    return Fault("status", status, error_type, message, _retry_headers(retry_after_s))


def rate_limited(retry_after_s: float = 0.001) -> Fault:
    """429 ``rate_limit_error`` with a ``retry-after`` header (tiny by default, for fast tests)."""
    return error_fault(
        429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
        retry_after_s=retry_after_s,
    )  # fmt: skip


def overloaded(retry_after_s: float | None = 0.001) -> Fault:
    """529 ``overloaded_error``."""
    return error_fault(529, "overloaded_error", "Overloaded", retry_after_s=retry_after_s)


def server_error(retry_after_s: float | None = 0.001) -> Fault:
    """500 ``api_error``."""
    return error_fault(500, "api_error", "Internal server error", retry_after_s=retry_after_s)


def context_overflow(tokens: int = 201_234, limit: int = 200_000) -> Fault:
    """400 ``invalid_request_error``: the prompt no longer fits the context window."""
    return error_fault(
        400, "invalid_request_error", f"prompt is too long: {tokens} tokens > {limit} maximum"
    )


def bad_request(message: str = "messages: roles must alternate") -> Fault:
    return error_fault(400, "invalid_request_error", message)


def slow(delay_s: float, then: Reply | None = None) -> Fault:
    """Wait ``delay_s`` (past the client's timeout, say), then send ``then`` or the script's."""
    return Fault("slow", delay_s=delay_s, then=then)


def dropped() -> Fault:
    """Close the connection without sending a response."""
    return Fault("drop")


def malformed() -> Fault:
    """200 with a body that is not valid JSON."""
    return Fault("malformed")


# ---------------------------------------------------------------------------------------------
# Scripts


def assistant_turns(body: dict[str, Any]) -> int:
    """How many assistant messages the request already holds: the index of the reply wanted."""
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


class ScriptedConversation:
    """Reply number *k* (k = assistant messages already in the request) is ``turns[k]``; a turn
    may be a reply, a Fault, or a callable ``(body) -> reply | Fault``. Past the end: ``after``."""

    def __init__(
        self,
        turns: Sequence[Reply | Fault | Callable[[dict[str, Any]], Reply | Fault]],
        after: Reply | Fault | None = None,
    ) -> None:
        self.turns = list(turns)
        self.after = after if after is not None else text_reply("(script exhausted)")

    def __call__(self, body: dict[str, Any]) -> Reply | Fault:
        k = assistant_turns(body)
        turn = self.turns[k] if k < len(self.turns) else self.after
        return turn(body) if callable(turn) else turn


def echo_script(body: dict[str, Any]) -> Reply:
    """Default script: a short text reply."""
    return text_reply("ok")


# ---------------------------------------------------------------------------------------------
# Server


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    received_at: float


class FakeAnthropic:
    """The server. Use as a context manager, or ``start()``/``stop()``.

    ``fail_first(n, fault)`` makes the next n ``/v1/messages`` requests fail that way whatever the
    script says; ``latency_s`` delays every reply (benchmarks); ``api_key=None`` accepts any key.
    """

    def __init__(
        self,
        script: Callable[[dict[str, Any]], Reply | Fault] | None = None,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        latency_s: float = 0.0,
        known_models: Iterable[str] | None = None,
    ) -> None:
        self.script = script or echo_script
        self.api_key = api_key
        self.latency_s = latency_s
        self.known_models = set(known_models) if known_models is not None else None
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            for sock in list(self._sockets):
                _close_quietly(sock)
            self._sockets.clear()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the fake API server did not stop"
        self._httpd = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- control and inspection -----------------------------------------------------------------

    def fail_first(self, n: int, fault: Fault) -> None:
        """The next ``n`` message requests get ``fault`` (queued after any already queued)."""
        with self._lock:
            self._faults.extend([fault] * n)

    def message_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages")]

    def message_bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.message_requests()]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    # -- used by the handler --------------------------------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------

    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", f"req_fake_{uuid.uuid4().hex[:20]}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout) or the server is stopping
            self.close_connection = True

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _send_error(self, status: int, error_type: str, message: str, headers=None) -> None:
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_fake_{uuid.uuid4().hex[:20]}",
        }
        self._send_json(status, body, headers)

    def _authorised(self) -> bool:
        # The real API takes the key as x-api-key; newer SDKs send it as a Bearer token.
        expected = self.fake.api_key
        bearer = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if expected is None or expected in (self.headers.get("x-api-key"), bearer):
            return True
        self._send_error(401, "authentication_error", "invalid x-api-key")
        return False

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake._record(RecordedRequest(self.command, self.path, headers, body, time.time()))

    # -- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        if not self._authorised():
            return
        prefix = "/v1/models/"
        if not self.path.startswith(prefix):
            self._send_error(404, "not_found_error", f"Not found: {self.path}")
            return
        model = self.path[len(prefix) :].split("?")[0]
        known = self.fake.known_models
        if known is not None and model not in known:
            self._send_error(404, "not_found_error", f"model: {model}")
            return
        self._send_json(
            200,
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-10-01T00:00:00Z",
                "lifecycle": "active",
            },
        )

    def do_POST(self) -> None:
        body = self._read_body()
        self._record(body)
        if not self._authorised():
            return
        if self.path.split("?")[0] != "/v1/messages":
            self._send_error(404, "not_found_error", f"Not found: {self.path}")
            return
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            self._send_error(400, "invalid_request_error", "body must hold model and messages")
            return
        known = self.fake.known_models
        if known is not None and body["model"] not in known:
            self._send_error(404, "not_found_error", f"model: {body['model']}")
            return
        # Like the real API: version 2026-10-21 removed the sampling parameters.
        version = self.headers.get("anthropic-version") or ""
        sampling = [k for k in ("temperature", "top_p", "top_k") if k in body]
        if sampling and version >= "2026-10-21":
            self._send_error(
                400, "invalid_request_error", f"{sampling[0]}: Extra inputs are not permitted"
            )
            return
        fault = self.fake._next_fault()
        if fault is None:
            try:
                reply = self.fake.script(body)
            except Exception as exc:  # a broken script is a test bug: make it loud
                self._send_error(500, "api_error", f"fake script raised {exc!r}")
                return
            if isinstance(reply, Fault):
                fault = reply
        else:
            reply = None
        if self.fake.latency_s:
            self.fake._stopping.wait(self.fake.latency_s)
        if fault is not None:
            self._play_fault(fault, body)
            return
        self._send_message(body, reply)

    def _play_fault(self, fault: Fault, body: dict[str, Any]) -> None:
        if fault.kind == "status":
            self._send_error(fault.status, fault.error_type, fault.message, fault.headers)
        elif fault.kind == "drop":
            self.close_connection = True
            _close_quietly(self.connection)
        elif fault.kind == "malformed":
            self._send(200, b'{"id": "msg_fake", "type": "message", "content": [{"ty')
        elif fault.kind == "slow":
            self.fake._stopping.wait(fault.delay_s)
            reply = fault.then if fault.then is not None else self.fake.script(body)
            if isinstance(reply, Fault):
                self._play_fault(reply, body)
            else:
                self._send_message(body, reply)
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _send_message(self, body: dict[str, Any], reply: Reply | None) -> None:
        reply = reply or text_reply("ok")
        message = {
            "id": f"msg_fake_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": reply.get("content", []),
            "stop_reason": reply.get("stop_reason", "end_turn"),
            "stop_sequence": reply.get("stop_sequence"),
            "usage": _usage(reply.get("usage")),
        }
        self._send_json(200, message)
