"""The agent's two tools (SPEC §5.1): their definitions (also in OpenAI's shape) and how a JSON
``submit_answer`` call becomes the same in-sandbox ``submit_answer`` call that code makes."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from leakbench.grading.submission import PROBA_KEYS

PYTHON_EXPRESSION = "python_expression"
SUBMIT_ANSWER = "submit_answer"

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": PYTHON_EXPRESSION,
        "description": (
            "Run Python code in your persistent sandbox (state is kept between calls, like a "
            "notebook). Pre-loaded: train_df (with target), test_df (features only), pd, np, "
            "sklearn, scipy. Returns printed output and the value of a final expression, "
            "truncated if long; an exception returns its traceback. Inside the code, "
            'submit_answer({"y_pred_proba": proba, "pipeline": pipe}) submits.'
        ),
        "input_schema": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "Python code"}},
            "required": ["expression"],
        },
    },
    {
        "name": SUBMIT_ANSWER,
        "description": (
            "Submit your answer: probabilities of target=1 for every test_df row, in order, and "
            "your fitted pipeline. Values may be numbers or names of sandbox variables, e.g. "
            '{"answer": {"y_pred_proba": "proba", "pipeline": "pipe"}}. Only the first valid '
            "submission counts and ends the episode."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "answer": {
                    "type": "object",
                    "description": f"keys: one of {', '.join(PROBA_KEYS)}; optional pipeline",
                }
            },
            "required": ["answer"],
        },
    },
]


def as_openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool definitions (``TOOL_SPECS``' shape) in the shape of OpenAI's Chat Completions API:
    ``{"type": "function", "function": {name, description, parameters}}``."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("input_schema", {"type": "object", "properties": {}}),
            },
        }
        for tool in tools
    ]


class ToolInputError(ValueError):
    """A tool call whose input cannot be used; the message goes back to the agent."""


def expression_of(tool_input: dict[str, Any]) -> str:
    code = tool_input.get("expression")
    if not isinstance(code, str):
        raise ToolInputError("python_expression needs an 'expression' string")
    return code


def submit_code(tool_input: dict[str, Any]) -> str:
    """The sandbox code for a JSON ``submit_answer`` call.

    A string value names a sandbox variable; anything else is a JSON value passed as data.
    """
    answer = tool_input.get("answer", tool_input)
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except json.JSONDecodeError:
            raise ToolInputError("submit_answer needs an 'answer' object") from None
    if not isinstance(answer, dict):
        raise ToolInputError("submit_answer needs an 'answer' object")
    parts = []
    for key, value in answer.items():
        if not isinstance(key, str):
            raise ToolInputError("answer keys must be strings")
        if isinstance(value, str):
            if not value.isidentifier():
                raise ToolInputError(f"answer[{key!r}]: {value!r} is not a variable name")
            parts.append(f"{key!r}: {value}")
        else:
            parts.append(f"{key!r}: __import__('json').loads({json.dumps(value)!r})")
    return "submit_answer({" + ", ".join(parts) + "})"


def parse_arguments(name: str, arguments: Any) -> tuple[dict[str, Any], str | None]:
    """A tool call's ``arguments`` string as the input dict, or ``({}, problem)``.

    Parsed leniently, as the Anthropic SDK parses a tool input: NaN and Infinity come through as
    floats (``json_safe`` spells them for the history). Arguments encoded twice (a JSON string
    holding the object), which some models write, are read through.
    """
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}, None  # a call without arguments; the episode says which are needed
    if not isinstance(arguments, str):
        return {}, f"the arguments of this {name} call are not a JSON string; nothing was run"
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        start = arguments[:80] + ("..." if len(arguments) > 80 else "")
        return {}, (
            f"the arguments of this {name} call are not valid JSON ({exc.msg}, character "
            f"{exc.pos}), so nothing was run; they began: {start!r}. Send a JSON object, "
            'e.g. {"expression": "train_df.shape"}'
        )
    except RecursionError:
        return {}, f"the arguments of this {name} call are nested too deeply; nothing was run"
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError, RecursionError):
            value = json.loads(value)
    if not isinstance(value, dict):
        return {}, (
            f"the arguments of this {name} call must be a JSON object, not "
            f"{type(value).__name__}; nothing was run"
        )
    return value, None
