"""What an agent is: anything that can take the next turn of an episode.

The episode owns the tools, the step count and the limits; an agent only turns the results of its
last tool calls into its next turn. So a scripted policy and Claude are judged the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

StopKind = Literal[
    "tool_use",  # the turn asks for tool calls
    "end_turn",  # the agent is done talking (no tool calls)
    "max_tokens",  # the reply was cut off; tool calls in it may be incomplete
    "refusal",  # the model refused
    "content_filter",  # the provider's content filter stopped the reply
    "context_overflow",  # the conversation no longer fits the model's context window
]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    truncated: bool = False  # cut off by max_tokens: the episode must not run it
    # Why the call's input could not be read (arguments that are not a JSON object): the
    # episode does not run it and returns this to the agent as an error result.
    problem: str | None = None


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Turn:
    """One agent turn: what it said, which tools it calls, why it stopped, what it cost."""

    text: str
    tool_calls: list[ToolCall]
    stop: StopKind
    usage: Usage = field(default_factory=Usage)
    # Raw exchange for the transcript: request and response content blocks, timings, ids.
    records: list[dict[str, Any]] = field(default_factory=list)


class AgentError(Exception):
    """The agent could not produce a turn for reasons outside its control (an API failure that
    survived the SDK's retries): the episode ends as ``error`` with this message."""


class Agent(Protocol):
    name: str

    def begin(self, system_prompt: str, task_prompt: str, tools: list[dict[str, Any]]) -> None:
        """Start a conversation. ``tools`` are Anthropic-style tool definitions (an agent for
        another API converts them, e.g. with ``env.tools.as_openai_tools``)."""

    def next_turn(self, results: list[ToolResult]) -> Turn:
        """The next turn, given the results of the previous turn's tool calls (empty at first,
        and after a turn without tool calls)."""
