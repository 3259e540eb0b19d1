"""The OpenAI-compatible agent, end to end through the real SDK against the fake Chat
Completions API."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import threading
import time
from pathlib import Path

import openai
import pytest

from leakbench.agents import make_agent as make_any_agent
from leakbench.agents import parse_model
from leakbench.agents.base import AgentError, ToolResult
from leakbench.agents.model_api import MISSING_RESULT, NUDGE
from leakbench.agents.openai import OpenAIAgent, check_api_key, make_client
from leakbench.env.tools import TOOL_SPECS, as_openai_tools, parse_arguments
from leakbench.errors import LeakbenchError, UsageError
from leakbench.settings import AgentSettings, ModelPrice, RunSettings, Settings
from tests.fake_openai import (
    DEFAULT_API_KEY,
    FakeOpenAI,
    ScriptedConversation,
    content_filter_reply,
    context_overflow,
    dropped,
    length_reply,
    malformed,
    rate_limited,
    raw_reply,
    refusal_reply,
    server_error,
    slow,
    text_reply,
    tool_calls_reply,
    unavailable,
    usage,
)

MODEL = "fake-model"
PRICE = ModelPrice(input=2.0, output=8.0, cache_write=0.0, cache_read=0.5)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real key or server leaks in; the SDK's backoff is shortened for speed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no stray .env
    # Timeouts and dropped connections carry no retry-after header: without this the SDK
    # waits 0.5 s, 1 s, ... between attempts.
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01, raising=False)


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def make_agent(
    server: FakeOpenAI,
    *,
    max_retries: int = 2,
    timeout_s: float = 60.0,  # generous: only the tests about timeouts set a short one
    api_key: str = DEFAULT_API_KEY,
    price: ModelPrice | None = PRICE,
    agent_settings: AgentSettings | None = None,
) -> OpenAIAgent:
    run = RunSettings(max_retries=max_retries, request_timeout_s=timeout_s)
    client = make_client(run, api_key=api_key, base_url=server.base_url)
    settings = agent_settings or AgentSettings(max_tokens=321, temperature=0.3)
    agent = OpenAIAgent(MODEL, settings, run, price, client=client)
    agent.begin("SYSTEM PROMPT", "TASK PROMPT", TOOL_SPECS)
    return agent


# ---------------------------------------------------------------------------------------------
# Tools and model names


def test_tool_schemas_come_from_the_one_definition() -> None:
    tools = as_openai_tools(TOOL_SPECS)
    assert [t["type"] for t in tools] == ["function", "function"]
    for tool, spec in zip(tools, TOOL_SPECS, strict=True):
        assert tool["function"] == {
            "name": spec["name"],
            "description": spec["description"],
            "parameters": spec["input_schema"],
        }


def test_parse_model_knows_openai() -> None:
    assert parse_model("openai/gpt-4.1-mini") == ("openai", "gpt-4.1-mini")
    # served names may hold a slash (vLLM serves Hugging Face ids)
    assert parse_model("openai/Qwen/Qwen3-8B") == ("openai", "Qwen/Qwen3-8B")
    with pytest.raises(UsageError, match="no name"):
        parse_model("openai/")
    with pytest.raises(UsageError) as info:
        parse_model("opneai/gpt-4.1")
    assert "openai" in str(info.value)


def test_make_agent_builds_an_openai_agent(server: FakeOpenAI) -> None:
    settings = Settings().with_overrides({"agent.max_tokens": 55})
    client = make_client(settings.run, api_key=DEFAULT_API_KEY, base_url=server.base_url)
    agent = make_any_agent("openai/gpt-x", settings, client)
    assert isinstance(agent, OpenAIAgent)
    assert (agent.name, agent.model, agent.client) == ("openai/gpt-x", "gpt-x", client)
    assert agent.price is None  # no built-in price for gpt-x: cost unknown


# ---------------------------------------------------------------------------------------------
# Conversation


def test_tool_calls_then_text_only_turn_then_nudge(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation(
        [
            tool_calls_reply(
                [
                    ("python_expression", {"expression": "train_df.shape"}, "call_a"),
                    ("python_expression", {"expression": "test_df.shape"}, "call_b"),
                ],
                text="Let me look.",
            ),
            text_reply("I think I know what to do."),
            tool_calls_reply([("submit_answer", {"answer": {"y_pred": [0.5]}}, "call_c")]),
        ]
    )
    agent = make_agent(server)
    assert agent.name == f"openai/{MODEL}"

    turn = agent.next_turn([])
    assert turn.stop == "tool_use"
    assert turn.text == "Let me look."
    assert [(c.id, c.name, c.input, c.truncated, c.problem) for c in turn.tool_calls] == [
        ("call_a", "python_expression", {"expression": "train_df.shape"}, False, None),
        ("call_b", "python_expression", {"expression": "test_df.shape"}, False, None),
    ]

    turn = agent.next_turn(
        [ToolResult("call_a", "(800, 11)"), ToolResult("call_b", "NameError", is_error=True)]
    )
    assert (turn.stop, turn.text, turn.tool_calls) == ("end_turn", "I think I know what to do.", [])

    turn = agent.next_turn([])
    assert turn.stop == "tool_use"
    assert turn.tool_calls[0].name == "submit_answer"

    bodies = server.chat_bodies()
    assert len(bodies) == 3
    first = bodies[0]
    assert first["model"] == MODEL
    assert first["max_completion_tokens"] == 321
    assert first["temperature"] == 0.3
    assert first["tools"] == as_openai_tools(TOOL_SPECS)
    assert first["messages"] == [
        {"role": "system", "content": "SYSTEM PROMPT"},
        {"role": "user", "content": "TASK PROMPT"},
    ]
    # the reply goes back with its tool calls, so the ids match the tool messages
    sent_back = bodies[1]["messages"][2]
    assert sent_back["role"] == "assistant"
    assert sent_back["content"] == "Let me look."
    assert [c["id"] for c in sent_back["tool_calls"]] == ["call_a", "call_b"]
    assert json.loads(sent_back["tool_calls"][0]["function"]["arguments"]) == {
        "expression": "train_df.shape"
    }
    assert bodies[1]["messages"][3:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "(800, 11)"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: NameError"},
    ]
    assert bodies[2]["messages"][-1] == {"role": "user", "content": NUDGE}


def test_unanswered_tool_calls_get_an_error_result(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation(
        [
            tool_calls_reply([("python_expression", {"expression": "1"}, "call_x")]),
            text_reply("ok"),
        ]
    )
    agent = make_agent(server)
    agent.next_turn([])
    assert agent.next_turn([]).text == "ok"  # the fake refuses a call left unanswered
    assert server.chat_bodies()[-1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_x",
        "content": f"Error: {MISSING_RESULT}",
    }


def test_usage_cached_tokens_cost_and_records(server: FakeOpenAI) -> None:
    used = usage(prompt=5000, completion=200, cached=4000)
    server.script = ScriptedConversation(
        [
            tool_calls_reply([("python_expression", {"expression": "1+1"}, "call_1")], usage=used),
            text_reply("done", usage=used),
        ]
    )
    agent = make_agent(server)
    turn = agent.next_turn([])
    u = turn.usage
    # the cached tokens are part of prompt_tokens: input + cache read = the prompt
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        1000,
        200,
        4000,
        0,
    )
    assert u.cost_usd == pytest.approx((1000 * 2.0 + 200 * 8.0 + 4000 * 0.5) / 1e6)

    [record] = turn.records
    assert record["kind"] == "openai.chat.completions.create"
    assert [t["function"]["name"] for t in record["request"]["tools"]] == [
        "python_expression",
        "submit_answer",
    ]
    assert [m["role"] for m in record["request"]["new_messages"]] == ["system", "user"]
    assert record["response"]["message"]["tool_calls"][0]["function"]["arguments"] == (
        '{"expression": "1+1"}'
    )
    assert record["response"]["usage"]["prompt_tokens_details"]["cached_tokens"] == 4000
    assert record["stop_reason"] == "tool_calls"
    assert record["request_id"].startswith("req_fake_")
    assert record["wall_s"] > 0
    assert record["retries"] == 0
    assert record["usage"]["cache_read_tokens"] == 4000

    turn = agent.next_turn([ToolResult("call_1", "2")])
    [record] = turn.records
    # only what is new: the tool result, not the prompts or the reply again
    assert "tools" not in record["request"]
    assert record["request"]["new_messages"] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "2"}
    ]

    no_price = make_agent(server, price=None)
    assert no_price.next_turn([]).usage.cost_usd == 0.0


def test_usage_without_details_or_usage(server: FakeOpenAI) -> None:
    server.script = lambda body: {
        "message": {"content": "hi"},
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    u = make_agent(server).next_turn([]).usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (7, 3, 0)


# ---------------------------------------------------------------------------------------------
# Tool-call arguments


def test_malformed_arguments_are_an_error_result_not_a_crash(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation(
        [
            tool_calls_reply(
                [
                    ("python_expression", '{"expression": "train_df.sha', "call_bad"),
                    ("python_expression", {"expression": "1"}, "call_ok"),
                ]
            ),
            text_reply("fixed"),
        ]
    )
    agent = make_agent(server)
    turn = agent.next_turn([])
    bad, ok = turn.tool_calls
    assert (bad.id, bad.name, bad.input, bad.truncated) == (
        "call_bad",
        "python_expression",
        {},
        False,
    )
    assert "not valid JSON" in bad.problem and "train_df.sha" in bad.problem
    assert ok.problem is None and ok.input == {"expression": "1"}
    # what the episode answers for it goes back as an error result; the history holds strict
    # JSON in its place (servers that parse the history again would refuse the next request)
    turn = agent.next_turn([ToolResult("call_bad", bad.problem, True), ToolResult("call_ok", "1")])
    assert turn.text == "fixed"
    messages = server.chat_bodies()[1]["messages"]
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": "call_bad",
        "content": f"Error: {bad.problem}",
    }


@pytest.mark.parametrize(
    ("arguments", "expected", "problem"),
    [
        ('{"expression": "1"}', {"expression": "1"}, None),
        ("", {}, None),  # no arguments: the episode says which are needed
        ('"{\\"expression\\": \\"2\\"}"', {"expression": "2"}, None),  # encoded twice
        ("[1, 2]", {}, "must be a JSON object, not list"),
        ('"just text"', {}, "must be a JSON object, not str"),
        ("{'expression': 1}", {}, "not valid JSON"),
        ("[" * 100_000, {}, "nothing was run"),
    ],
)
def test_parse_arguments(arguments: str, expected: dict, problem: str | None) -> None:
    tool_input, found = parse_arguments("python_expression", arguments)
    assert tool_input == expected
    if problem is None:
        assert found is None
    else:
        assert problem in found and "\n" not in found


def test_nan_in_arguments_reaches_the_episode_and_goes_back_as_strict_json(
    server: FakeOpenAI,
) -> None:
    nan_args = '{"answer": {"y_pred": [NaN, 0.5, Infinity, -Infinity]}}'
    server.script = ScriptedConversation(
        [tool_calls_reply([("submit_answer", nan_args, "call_nan")]), text_reply("ok")]
    )
    agent = make_agent(server)
    [call] = agent.next_turn([]).tool_calls
    values = call.input["answer"]["y_pred"]
    assert math.isnan(values[0]) and values[1:] == [0.5, math.inf, -math.inf]
    assert call.problem is None
    # the fake refuses arguments in the history that are not strict JSON
    assert agent.next_turn([ToolResult("call_nan", "rejected: NaN", True)]).text == "ok"
    sent = server.chat_bodies()[1]["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"answer": {"y_pred": ["NaN", 0.5, "Infinity", "-Infinity"]}}


def test_tool_call_without_an_id_gets_one(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation(
        [
            tool_calls_reply([("python_expression", {"expression": "1"}, "")]),
            text_reply("ok"),
        ]
    )
    agent = make_agent(server)
    [call] = agent.next_turn([]).tool_calls
    assert call.id
    assert agent.next_turn([ToolResult(call.id, "1")]).text == "ok"


# ---------------------------------------------------------------------------------------------
# Finish reasons


def test_length_marks_the_cut_off_tool_call(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation(
        [
            length_reply(
                ("python_expression", '{"expression": "pipe = make_pipeline(', "call_cut"),
                complete_calls=[("python_expression", {"expression": "1"}, "call_ok")],
                text="Writing the pipeline",
            ),
            text_reply("ok"),
        ]
    )
    agent = make_agent(server)
    turn = agent.next_turn([])
    assert (turn.stop, turn.text) == ("max_tokens", "Writing the pipeline")
    assert [(c.id, c.truncated) for c in turn.tool_calls] == [
        ("call_ok", False),
        ("call_cut", True),
    ]
    turn = agent.next_turn(
        [ToolResult("call_ok", "1"), ToolResult("call_cut", "cut off", is_error=True)]
    )
    assert turn.stop == "end_turn"


def test_length_without_tool_calls_says_so_in_the_next_message(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation([length_reply(text="A long explanation"), text_reply("k")])
    agent = make_agent(server)
    turn = agent.next_turn([])
    assert (turn.stop, turn.text, turn.tool_calls) == ("max_tokens", "A long explanation", [])
    agent.next_turn([])
    last = server.chat_bodies()[-1]["messages"][-1]
    assert last["role"] == "user"
    assert "cut off at the limit of 321 output tokens" in last["content"]
    assert last["content"].endswith(NUDGE)


def test_content_filter_ends_the_turn_with_its_own_stop(server: FakeOpenAI) -> None:
    server.script = lambda body: content_filter_reply()
    turn = make_agent(server).next_turn([])
    assert (turn.stop, turn.text, turn.tool_calls) == ("content_filter", "", [])
    assert turn.records[0]["stop_reason"] == "content_filter"


def test_refusal_field_is_a_refusal(server: FakeOpenAI) -> None:
    server.script = lambda body: refusal_reply("I can't help with that.")
    turn = make_agent(server).next_turn([])
    assert (turn.stop, turn.text) == ("refusal", "I can't help with that.")


def test_stop_with_tool_calls_still_runs_them(server: FakeOpenAI) -> None:
    # some servers say "stop" even when the reply asks for tool calls
    server.script = lambda body: tool_calls_reply(
        [("python_expression", {"expression": "1"}, "call_s")], finish_reason="stop"
    )
    turn = make_agent(server).next_turn([])
    assert turn.stop == "tool_use" and [c.id for c in turn.tool_calls] == ["call_s"]


def test_context_length_exceeded_is_context_overflow(server: FakeOpenAI) -> None:
    server.script = ScriptedConversation(
        [tool_calls_reply([("python_expression", {"expression": "1"}, "t1")]), context_overflow()]
    )
    agent = make_agent(server)
    agent.next_turn([])
    turn = agent.next_turn([ToolResult("t1", "x" * 100)])
    assert (turn.stop, turn.tool_calls) == ("context_overflow", [])
    assert "maximum context length" in turn.records[0]["error"]
    assert len(server.chat_requests()) == 2  # a 400 is not retried


# ---------------------------------------------------------------------------------------------
# Faults: the SDK retries, we do not


@pytest.mark.parametrize("fault", [rate_limited(), server_error(), unavailable()])
def test_retryable_status_then_success(server: FakeOpenAI, fault) -> None:
    # retry-after-ms asks for 1 ms, retry-after for 30 s: a bound far from both
    fault = dataclasses.replace(fault, headers={**fault.headers, "retry-after": "30"})
    server.script = lambda body: text_reply("recovered")
    server.fail_first(1, fault)
    started = time.monotonic()
    turn = make_agent(server).next_turn([])
    assert turn.text == "recovered"
    assert len(server.chat_requests()) == 2
    assert server.chat_requests()[1].headers["x-stainless-retry-count"] == "1"
    assert turn.records[0]["retries"] == 1
    assert time.monotonic() - started < 15  # the retry-after-ms header was honoured


def test_persistent_500_is_agent_error_after_the_sdk_retries(server: FakeOpenAI) -> None:
    server.script = lambda body: server_error()
    with pytest.raises(AgentError) as info:
        make_agent(server, max_retries=2).next_turn([])
    message = str(info.value)
    assert "500" in message and "server_error" in message and "\n" not in message
    assert len(server.chat_requests()) == 3


def test_slow_replies_past_every_retry_are_agent_error(server: FakeOpenAI) -> None:
    # a slow reply waits 10 minutes (stopping the server ends the wait): only the client's
    # timeout can end the request
    server.script = lambda body: slow(600.0, then=text_reply("too late"))
    started = time.monotonic()
    with pytest.raises(AgentError, match="timed out"):
        make_agent(server, max_retries=1, timeout_s=0.5).next_turn([])
    assert time.monotonic() - started < 60
    assert len(server.chat_requests()) == 2


def test_dropped_connection_then_success(server: FakeOpenAI) -> None:
    server.script = lambda body: text_reply("back")
    server.fail_first(1, dropped())
    assert make_agent(server).next_turn([]).text == "back"
    assert len(server.chat_requests()) == 2


def test_malformed_body_is_agent_error(server: FakeOpenAI) -> None:
    server.fail_first(1, malformed())
    with pytest.raises(AgentError, match="malformed"):
        make_agent(server).next_turn([])


def test_a_200_without_choices_is_agent_error(server: FakeOpenAI) -> None:
    # e.g. a gateway that sends its error with status 200
    server.script = lambda body: raw_reply({"error": {"message": "upstream failed"}})
    with pytest.raises(AgentError, match="malformed response"):
        make_agent(server).next_turn([])


def test_an_empty_reply_is_a_turn_without_tool_calls(server: FakeOpenAI) -> None:
    # (the history has no assistant message to count turns by: count the messages instead)
    server.script = lambda body: text_reply("then this" if len(body["messages"]) > 2 else "")
    agent = make_agent(server)
    assert agent.next_turn([]).stop == "end_turn"
    # an empty reply is left out of the history (the API refuses an empty assistant message)
    assert agent.next_turn([]).text == "then this"
    assert [m["role"] for m in server.chat_bodies()[1]["messages"]] == ["system", "user", "user"]


def test_rejected_key_mid_run_is_agent_error(server: FakeOpenAI) -> None:
    secret = "sk-wrong-key-123456"
    with pytest.raises(AgentError) as info:
        make_agent(server, api_key=secret).next_turn([])
    assert "401" in str(info.value) and secret not in str(info.value)
    assert len(server.chat_requests()) == 1  # 401 is not retried


def test_concurrent_conversations_on_one_server(server: FakeOpenAI) -> None:
    def script(body: dict) -> dict:
        task = body["messages"][1]["content"]
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        return text_reply(f"{task}:{turn}")

    server.script = script
    server.latency_s = 0.02
    run = RunSettings(max_retries=0, request_timeout_s=60)
    client = make_client(run, api_key=DEFAULT_API_KEY, base_url=server.base_url)
    seen: dict[int, list[str]] = {}

    def episode(k: int) -> None:
        agent = OpenAIAgent(MODEL, AgentSettings(), run, PRICE, client=client)
        agent.begin("s", f"task{k}", TOOL_SPECS)
        seen[k] = [agent.next_turn([]).text for _ in range(3)]

    threads = [threading.Thread(target=episode, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "conversations still running"
    assert seen == {k: [f"task{k}:0", f"task{k}:1", f"task{k}:2"] for k in range(6)}


# ---------------------------------------------------------------------------------------------
# Client and key check


def test_make_client_reads_env_and_settings(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
    client = make_client(RunSettings(max_retries=3, request_timeout_s=7.5))
    assert client.max_retries == 3
    assert client.timeout == 7.5
    check_api_key(client, f"openai/{MODEL}")
    [request] = server.requests
    assert (request.method, request.path) == ("GET", f"/v1/models/{MODEL}")


def test_make_client_takes_another_key_variable_and_a_dotenv_file(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(f"VLLM_KEY={DEFAULT_API_KEY}\n")
    client = make_client(RunSettings(), base_url=server.base_url, api_key_env="VLLM_KEY")
    check_api_key(client, MODEL)


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "MY_GATEWAY_KEY"])
def test_missing_key_is_a_clear_error_naming_the_variable(variable: str) -> None:
    with pytest.raises(LeakbenchError) as info:
        make_client(RunSettings(), base_url="http://127.0.0.1:9/v1", api_key_env=variable)
    assert info.value.exit_code == 1
    assert str(info.value).startswith(f"{variable} is not set")
    assert ".env" in str(info.value) and "local/baseline" in str(info.value)
    assert "\n" not in str(info.value)


def test_rejected_key_is_a_clear_error_without_the_key(server: FakeOpenAI) -> None:
    secret = "sk-proj-not-the-right-one"
    client = make_client(RunSettings(), api_key=secret, base_url=server.base_url)
    with pytest.raises(LeakbenchError) as info:
        check_api_key(client, MODEL, api_key_env="MY_KEY")
    assert info.value.exit_code == 1
    assert "rejected" in str(info.value) and "401" in str(info.value)
    assert "MY_KEY" in str(info.value)
    assert secret not in str(info.value) and secret[-8:] not in str(info.value)


@pytest.mark.parametrize("models_endpoint", [True, False])
def test_unknown_model_is_a_usage_error(models_endpoint: bool) -> None:
    with FakeOpenAI(known_models=[MODEL], models_endpoint=models_endpoint) as fake:
        client = make_client(RunSettings(), api_key=DEFAULT_API_KEY, base_url=fake.base_url)
        check_api_key(client, MODEL)
        with pytest.raises(LeakbenchError, match="unknown model 'nope'") as info:
            check_api_key(client, "openai/nope")
        assert info.value.exit_code == 2
        # a 404 from the models endpoint (vLLM has none) is checked by asking for one token
        pings = fake.chat_bodies()
        assert [p["model"] for p in pings] == ([] if models_endpoint else [MODEL]) + ["nope"]
        assert all(p["max_completion_tokens"] == 1 for p in pings)


def test_unreachable_server_is_a_clear_error() -> None:
    # A port bound but not listening refuses connections.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
        client = make_client(
            RunSettings(max_retries=0, request_timeout_s=30), api_key="k", base_url=base_url
        )
        with pytest.raises(LeakbenchError, match="cannot reach") as info:
            check_api_key(client, MODEL)
    assert info.value.exit_code == 1
