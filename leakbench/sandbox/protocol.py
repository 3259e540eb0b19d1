"""Framing of the messages between the harness and a worker or the zygote.

Every message is an 8-byte big-endian length followed by the body. Harness -> worker bodies are
pickles (that direction is trusted: the harness only sends what it built). Worker -> harness
bodies are JSON, and the harness enforces ``MAX_MESSAGE_BYTES`` before reading a body, so a
hostile worker can neither run code in the harness nor exhaust its memory.
"""

from __future__ import annotations

import json
import pickle
import select
import socket
import time
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a pickled pipeline (its bytes, base64) or predictions
# During an exec call a worker sends only a submission (probabilities for the test rows and an
# unfitted recipe) and its result (output capped at stdout_max_chars): far below this.
EXEC_MESSAGE_BYTES = 8 * 1024 * 1024
_HEADER = 8


class PeerGone(Exception):
    """The other end closed the connection or broke the protocol."""


class PeerTimeout(Exception):
    """The other end did not answer before the deadline."""


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(_HEADER, "big") + body


def send_pickle(sock: socket.socket, obj: Any, deadline: float | None = None) -> None:
    """Send a trusted object to a worker (harness side)."""
    _send(sock, _frame(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), deadline)


def send_frame(sock: socket.socket, frame: bytes, deadline: float | None = None) -> None:
    """Send an already framed body (lets the harness pickle the episode data once)."""
    _send(sock, frame, deadline)


def pickle_frame(obj: Any) -> bytes:
    """Pickle and frame an object once, to be sent many times."""
    return _frame(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def send_json(sock: socket.socket, obj: Any) -> None:
    """Send plain data to the harness (worker side; blocking)."""
    sock.sendall(_frame(json.dumps(obj).encode()))


def _send(sock: socket.socket, data: bytes, deadline: float | None) -> None:
    try:
        sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))
        sock.sendall(data)
    except TimeoutError as exc:
        raise PeerTimeout("the sandbox did not accept the request in time") from exc
    except OSError as exc:
        raise PeerGone(f"the sandbox connection broke ({exc.strerror or exc})") from exc


def _read_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerTimeout("the sandbox did not answer in time")
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                raise PeerTimeout("the sandbox did not answer in time")
        try:
            sock.settimeout(None)
            k = sock.recv_into(view[got:], n - got)
        except OSError as exc:
            raise PeerGone(f"the sandbox connection broke ({exc.strerror or exc})") from exc
        if k == 0:
            raise PeerGone("the sandbox process exited")
        got += k
    return bytes(buf)


def recv_json(
    sock: socket.socket, deadline: float | None, limit: int = MAX_MESSAGE_BYTES
) -> dict[str, Any]:
    """Read one message from a worker; never unpickles, never reads more than ``limit`` bytes
    (checked from the header, before the body is read)."""
    n = int.from_bytes(_read_exact(sock, _HEADER, deadline), "big")
    if n > limit:
        raise PeerGone(f"the sandbox sent a message of {n} bytes (limit {limit})")
    body = _read_exact(sock, n, deadline)
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError, MemoryError) as exc:
        # Whatever the worker sent that does not decode (garbage, nesting deep enough to
        # exhaust the parser's recursion) is the worker's fault, never the harness's.
        raise PeerGone("the sandbox sent a malformed message") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise PeerGone("the sandbox sent a malformed message")
    return msg


def recv_pickle(sock: socket.socket) -> Any:
    """Read one trusted message from the harness (worker side; blocking)."""
    n = int.from_bytes(_read_exact(sock, _HEADER, None), "big")
    return pickle.loads(_read_exact(sock, n, None))
