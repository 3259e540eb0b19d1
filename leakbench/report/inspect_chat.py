"""One episode's transcript as Inspect AI chat messages (``leakbench export``).

inspect_ai is imported only when a log is made: ``leakbench`` itself starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inspect_ai.model import ChatMessage

# leakbench turn stop -> Inspect StopReason
STOP_REASON = {
    "tool_use": "tool_calls",
    "end_turn": "stop",
    "max_tokens": "max_tokens",
    "refusal": "content_filter",
    "content_filter": "content_filter",
    "context_overflow": "model_length",
}
TRUNCATED = "cut off by max_tokens; not run"


def chat(events: list[dict[str, Any]], model: str) -> tuple[str, list[ChatMessage]]:
    """The task prompt and the chat of one episode's transcript events: system prompt, task,
    then one assistant message per turn (text and tool calls), each followed by its tool
    results."""
    from inspect_ai.model import (
        ChatMessageAssistant,
        ChatMessageSystem,
        ChatMessageTool,
        ChatMessageUser,
    )
    from inspect_ai.tool import ToolCall, ToolCallContent, ToolCallError

    task_prompt = ""
    messages: list[ChatMessage] = []
    functions: dict[str, str] = {}
    timed_out: set[str] = set()
    for event in events:
        kind = event.get("type")
        if kind == "begin":
            task_prompt = str(event.get("task", ""))
            messages.append(ChatMessageSystem(content=str(event.get("system", "")), source="input"))
            messages.append(ChatMessageUser(content=task_prompt, source="input"))
        elif kind == "turn":
            calls = []
            for call in event.get("tool_calls") or []:
                arguments = call.get("input") if isinstance(call.get("input"), dict) else {}
                code = arguments.get("expression")
                functions[str(call.get("id"))] = str(call.get("name"))
                calls.append(
                    ToolCall(
                        id=str(call.get("id")),
                        function=str(call.get("name")),
                        arguments=arguments,
                        parse_error=TRUNCATED if call.get("truncated") else call.get("problem"),
                        view=ToolCallContent(format="markdown", content=f"```python\n{code}\n```")
                        if isinstance(code, str)
                        else None,
                    )
                )
            messages.append(
                ChatMessageAssistant(
                    content=str(event.get("text") or ""),
                    tool_calls=calls or None,
                    model=model,
                    source="generate",
                    metadata={
                        "step": event.get("step"),
                        "stop": event.get("stop"),
                        "usage": event.get("usage") or {},
                    },
                )
            )
        elif kind == "sandbox_call" and event.get("timed_out"):
            timed_out.add(str(event.get("id")))
        elif kind == "tool_result":
            call_id = str(event.get("id"))
            content = str(event.get("content", ""))
            error = None
            if event.get("is_error"):
                error = ToolCallError("timeout" if call_id in timed_out else "unknown", content)
            messages.append(
                ChatMessageTool(
                    content=content,
                    tool_call_id=call_id,
                    function=functions.get(call_id),
                    error=error,
                )
            )
    return task_prompt, messages
