"""What the agents that call a model API share (``anthropic.py``, ``openai.py``), whatever its
wire format: the cost of a call, the texts sent when a turn has no tool results, tool inputs made
safe for strict JSON, the API key lookup, and how a context overflow reads in an error message.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leakbench.agents.base import Usage
    from leakbench.settings import ModelPrice

NUDGE = (
    "Please continue with the task using the tools: python_expression to work in the sandbox, "
    "and submit_answer when your predictions are ready."
)
MISSING_RESULT = "(no result: this tool call was not run)"
NO_OUTPUT = "(no output)"
# Phrases of a 400 when the input does not fit: Anthropic ("prompt is too long: N tokens > M
# maximum", "input length and `max_tokens` exceed context limit"), OpenAI and vLLM ("This
# model's maximum context length is N tokens", code context_length_exceeded), SGLang ("longer
# than the model's context length").
CONTEXT_HINTS = (
    "prompt is too long",
    "context limit",
    "context window",
    "context length",
    "context_length_exceeded",
)


def cost_usd(usage: Usage, price: ModelPrice | None) -> float:
    """US dollars for ``usage`` at ``price`` (per million tokens); 0 without a price."""
    if price is None:
        return 0.0
    return (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read
    ) / 1e6


def json_safe(value: Any) -> Any:
    """``value`` with each NaN or infinity spelled as a string ("NaN", "Infinity", "-Infinity").

    JSON has no such numbers, but the SDKs (and ``json.loads``) parse a reply leniently, so a
    tool input can hold one. The episode gets the input as parsed and answers that call at its
    step (a submission of NaN probabilities fails its check); only the history sent back, which
    is encoded strictly (by the SDK, or by a server that parses it again), spells the number as
    the model wrote it, so the next request is not refused.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def api_key_from_env(name: str) -> str | None:
    """The variable ``name`` from the environment, else from a ``.env`` file in the working
    directory; None when neither has a non-empty value."""
    value = os.environ.get(name)
    if value:
        return value
    path = Path.cwd() / ".env"
    if not path.is_file():
        return None
    from dotenv import dotenv_values

    return dotenv_values(path).get(name) or None


def mentions_context_overflow(status_code: int, message: str) -> bool:
    """An API error that says the request no longer fits the model's context window (or the
    API's size limit)."""
    if status_code == 413:
        return True
    if status_code != 400:
        return False
    message = message.lower()
    return any(hint in message for hint in CONTEXT_HINTS)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line (whitespace runs collapsed), at most ``limit`` characters."""
    return " ".join(text.split())[:limit]
