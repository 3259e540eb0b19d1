"""The Anthropic agent, end to end through the real SDK against the fake Messages API."""

from __future__ import annotations

import dataclasses
import itertools
import socket
import threading
import time
from pathlib import Path

import anthropic
import pytest

from leakbench.agents.anthropic import (
    NUDGE,
    AnthropicAgent,
    check_api_key,
    load_prompts,
    make_client,
)
from leakbench.agents.base import AgentError, ToolResult
from leakbench.errors import ConfigError, LeakbenchError
from leakbench.settings import AgentSettings, ModelPrice, RunSettings
from tests.fake_anthropic import (
    DEFAULT_API_KEY,
    FakeAnthropic,
    ScriptedConversation,
    context_overflow,
    dropped,
    malformed,
    max_tokens_reply,
    overloaded,
    rate_limited,
    server_error,
    slow,
    stop_reply,
    text_reply,
    tool_use_reply,
)

MODEL = "claude-haiku-4-5"
PRICE = ModelPrice(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10)
TOOLS = [
    {
        "name": "python_expression",
        "description": "Run Python code in the sandbox.",
        "input_schema": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
    {
        "name": "submit_answer",
        "description": "Submit the predictions.",
        "input_schema": {
            "type": "object",
            "properties": {"answer": {"type": "object"}},
            "required": ["answer"],
        },
    },
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real key, gateway or profile leaks in; the SDK's backoff is shortened for speed."""
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CONFIG_DIR",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_FEDERATION_RULE_ID",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no SDK profile in ~/.config/anthropic
    monkeypatch.chdir(tmp_path)  # no stray .env
    # Timeouts and dropped connections carry no retry-after header: without this the SDK
    # waits 0.5 s, 1 s, ... between attempts.
    monkeypatch.setattr(anthropic._base_client, "INITIAL_RETRY_DELAY", 0.01, raising=False)


@pytest.fixture
def server():
    with FakeAnthropic() as fake:
        yield fake


def make_agent(
    server: FakeAnthropic,
    *,
    max_retries: int = 2,
    timeout_s: float = 60.0,  # generous: only the tests about timeouts set a short one
    api_key: str = DEFAULT_API_KEY,
    price: ModelPrice | None = PRICE,
) -> AnthropicAgent:
    run = RunSettings(max_retries=max_retries, request_timeout_s=timeout_s)
    client = make_client(run, api_key=api_key, base_url=server.base_url)
    agent = AnthropicAgent(MODEL, AgentSettings(max_tokens=321), run, price, client=client)
    agent.begin("SYSTEM PROMPT", "TASK PROMPT", TOOLS)
    return agent


def assert_alternates(body: dict) -> None:
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user"
    assert all(a != b for a, b in itertools.pairwise(roles)), roles


# ---------------------------------------------------------------------------------------------
# Conversation


def test_two_tool_calls_then_text_only_turn_then_nudge(server: FakeAnthropic) -> None:
    server.script = ScriptedConversation(
        [
            tool_use_reply(
                [
                    ("python_expression", {"expression": "train_df.shape"}, "toolu_a"),
                    ("python_expression", {"expression": "test_df.shape"}, "toolu_b"),
                ],
                text="Let me look.",
            ),
            text_reply("I think I know what to do."),
            tool_use_reply([("submit_answer", {"answer": {"y_pred": [0.5]}}, "toolu_c")]),
        ]
    )
    agent = make_agent(server)
    assert agent.name == f"anthropic/{MODEL}"

    turn = agent.next_turn([])
    assert turn.stop == "tool_use"
    assert turn.text == "Let me look."
    assert [(c.id, c.name, c.input, c.truncated) for c in turn.tool_calls] == [
        ("toolu_a", "python_expression", {"expression": "train_df.shape"}, False),
        ("toolu_b", "python_expression", {"expression": "test_df.shape"}, False),
    ]

    turn = agent.next_turn(
        [ToolResult("toolu_a", "(800, 11)"), ToolResult("toolu_b", "NameError", is_error=True)]
    )
    assert (turn.stop, turn.text, turn.tool_calls) == ("end_turn", "I think I know what to do.", [])

    turn = agent.next_turn([])
    assert turn.stop == "tool_use"
    assert turn.tool_calls[0].name == "submit_answer"

    bodies = server.message_bodies()
    assert len(bodies) == 3
    first = bodies[0]
    assert first["model"] == MODEL
    assert first["max_tokens"] == 321
    assert "temperature" not in first  # API 2026-10-21 rejects it, even at its default
    assert first["system"][0]["text"] == "SYSTEM PROMPT"
    assert [t["name"] for t in first["tools"]] == ["python_expression", "submit_answer"]
    assert first["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "TASK PROMPT", "cache_control": {"type": "ephemeral"}}
            ],
        }
    ]
    results = bodies[1]["messages"][-1]["content"]
    assert [(r["type"], r["tool_use_id"], r["content"], r["is_error"]) for r in results] == [
        ("tool_result", "toolu_a", "(800, 11)", False),
        ("tool_result", "toolu_b", "NameError", True),
    ]
    # the assistant's tool_use blocks are sent back unchanged, so the ids match
    sent_back = bodies[1]["messages"][1]
    assert sent_back["role"] == "assistant"
    assert [b.get("id") for b in sent_back["content"]] == [None, "toolu_a", "toolu_b"]
    nudge = bodies[2]["messages"][-1]
    assert nudge["role"] == "user"
    assert nudge["content"][0]["text"] == NUDGE
    for body in bodies:
        assert_alternates(body)


def test_unanswered_tool_calls_get_an_error_result(server: FakeAnthropic) -> None:
    server.script = ScriptedConversation(
        [tool_use_reply([("python_expression", {"expression": "1"}, "toolu_x")]), text_reply("ok")]
    )
    agent = make_agent(server)
    agent.next_turn([])
    agent.next_turn([])
    last = server.message_bodies()[-1]["messages"][-1]["content"]
    assert [(b["type"], b["tool_use_id"], b["is_error"]) for b in last] == [
        ("tool_result", "toolu_x", True)
    ]


def test_usage_cost_and_records(server: FakeAnthropic) -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 200,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 4000,
    }
    server.script = ScriptedConversation(
        [
            tool_use_reply([("python_expression", {"expression": "1+1"}, "toolu_1")], usage=usage),
            text_reply("done", usage=usage),
        ]
    )
    agent = make_agent(server)
    turn = agent.next_turn([])
    u = turn.usage
    assert (u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens) == (
        1000,
        200,
        300,
        4000,
    )
    assert u.cost_usd == pytest.approx((1000 * 1.0 + 200 * 5.0 + 300 * 1.25 + 4000 * 0.10) / 1e6)

    [record] = turn.records
    assert record["request"]["system"] == [{"type": "text", "text": "SYSTEM PROMPT"}]
    assert [t["name"] for t in record["request"]["tools"]] == ["python_expression", "submit_answer"]
    assert record["request"]["new_messages"][0]["content"][0]["text"] == "TASK PROMPT"
    assert record["response"]["content"][0]["type"] == "tool_use"
    assert record["response"]["content"][0]["input"] == {"expression": "1+1"}
    assert record["stop_reason"] == "tool_use"
    assert record["request_id"].startswith("req_fake_")
    assert record["wall_s"] > 0
    assert record["retries"] == 0
    assert record["usage"]["cache_read_tokens"] == 4000

    turn = agent.next_turn([ToolResult("toolu_1", "2")])
    [record] = turn.records
    # only what is new: the tool results, not the task prompt or the reply again
    assert "system" not in record["request"]
    assert [m["role"] for m in record["request"]["new_messages"]] == ["user"]
    assert record["request"]["new_messages"][0]["content"][0]["tool_use_id"] == "toolu_1"

    no_price = make_agent(server, price=None)
    assert no_price.next_turn([]).usage.cost_usd == 0.0


def test_cache_breakpoints_move_with_the_history(server: FakeAnthropic) -> None:
    server.script = lambda body: tool_use_reply([("python_expression", {"expression": "1"})])
    agent = make_agent(server)
    turn = agent.next_turn([])
    for _ in range(3):
        turn = agent.next_turn([ToolResult(c.id, "out") for c in turn.tool_calls])

    for body in server.message_bodies():
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert "cache_control" not in body["tools"][0]
        marked = [
            (i, j)
            for i, m in enumerate(body["messages"])
            for j, block in enumerate(m["content"])
            if "cache_control" in block
        ]
        users = [i for i, m in enumerate(body["messages"]) if m["role"] == "user"]
        # the last block of the (at most) two newest user messages, nothing else
        assert marked == [(i, len(body["messages"][i]["content"]) - 1) for i in users[-2:]]
        assert 2 + len(marked) <= 4
    assert len(server.message_bodies()) == 4


# ---------------------------------------------------------------------------------------------
# Stop reasons


def test_pause_turn_is_continued_within_one_turn(server: FakeAnthropic) -> None:
    server.script = ScriptedConversation(
        [
            stop_reply("pause_turn", text="Working on it"),
            tool_use_reply([("python_expression", {"expression": "2"}, "toolu_p")], text="Now."),
        ]
    )
    agent = make_agent(server)
    turn = agent.next_turn([])
    assert turn.stop == "tool_use"
    assert turn.text == "Working on it\nNow."
    assert [c.id for c in turn.tool_calls] == ["toolu_p"]
    assert len(turn.records) == 2
    assert turn.records[1]["request"]["new_messages"] == []
    assert turn.usage.input_tokens == 200  # both calls counted
    bodies = server.message_bodies()
    assert len(bodies) == 2
    assert bodies[1]["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Working on it"}],
    }


def test_pause_turn_forever_is_bounded(server: FakeAnthropic) -> None:
    server.script = lambda body: stop_reply("pause_turn", text="still going")
    turn = make_agent(server).next_turn([])
    assert turn.stop == "end_turn"
    assert len(server.message_bodies()) == 4


def test_max_tokens_marks_the_cut_off_tool_call(server: FakeAnthropic) -> None:
    server.script = ScriptedConversation(
        [
            max_tokens_reply(
                ("python_expression", {"expression": "pipe = make_pipeline("}, "toolu_cut"),
                complete_calls=[("python_expression", {"expression": "1"}, "toolu_ok")],
                text="Writing the pipeline",
            ),
            text_reply("ok"),
        ]
    )
    agent = make_agent(server)
    turn = agent.next_turn([])
    assert turn.stop == "max_tokens"
    assert [(c.id, c.truncated) for c in turn.tool_calls] == [
        ("toolu_ok", False),
        ("toolu_cut", True),
    ]
    turn = agent.next_turn(
        [ToolResult("toolu_ok", "1"), ToolResult("toolu_cut", "cut off", is_error=True)]
    )
    assert turn.stop == "end_turn"
    assert_alternates(server.message_bodies()[-1])


@pytest.mark.parametrize(
    ("stop_reason", "stop"),
    [
        ("refusal", "refusal"),
        ("end_turn", "end_turn"),
        ("stop_sequence", "end_turn"),
        ("model_context_window_exceeded", "context_overflow"),
    ],
)
def test_stop_reasons(server: FakeAnthropic, stop_reason: str, stop: str) -> None:
    server.script = lambda body: stop_reply(stop_reason)
    turn = make_agent(server).next_turn([])
    assert (turn.stop, turn.text, turn.tool_calls) == (stop, "", [])


def test_refusal_keeps_its_text(server: FakeAnthropic) -> None:
    server.script = lambda body: stop_reply("refusal", text="I can't help with that.")
    turn = make_agent(server).next_turn([])
    assert (turn.stop, turn.text) == ("refusal", "I can't help with that.")


def test_prompt_too_long_is_context_overflow(server: FakeAnthropic) -> None:
    server.script = ScriptedConversation(
        [tool_use_reply([("python_expression", {"expression": "1"}, "t1")]), context_overflow()]
    )
    agent = make_agent(server)
    agent.next_turn([])
    turn = agent.next_turn([ToolResult("t1", "x" * 100)])
    assert turn.stop == "context_overflow"
    assert turn.tool_calls == []
    assert "prompt is too long" in turn.records[0]["error"]
    assert len(server.message_bodies()) == 2  # a 400 is not retried


# ---------------------------------------------------------------------------------------------
# Faults: the SDK retries, we do not


@pytest.mark.parametrize("fault", [rate_limited(), overloaded(), server_error()])
def test_retryable_status_then_success(server: FakeAnthropic, fault) -> None:
    # retry-after-ms asks for 1 ms, retry-after for 30 s: a bound far from both that holds on a
    # busy machine.
    fault = dataclasses.replace(fault, headers={**fault.headers, "retry-after": "30"})
    server.script = lambda body: text_reply("recovered")
    server.fail_first(1, fault)
    started = time.monotonic()
    turn = make_agent(server).next_turn([])
    assert turn.text == "recovered"
    assert len(server.message_requests()) == 2
    assert server.message_requests()[1].headers["x-stainless-retry-count"] == "1"
    assert turn.records[0]["retries"] == 1
    assert time.monotonic() - started < 15  # the retry-after-ms header was honoured


def test_persistent_500_is_agent_error_after_the_sdk_retries(server: FakeAnthropic) -> None:
    server.script = lambda body: server_error()
    with pytest.raises(AgentError) as info:
        make_agent(server, max_retries=2).next_turn([])
    message = str(info.value)
    assert "500" in message
    assert "api_error" in message
    assert "\n" not in message
    assert len(server.message_requests()) == 3


# A slow reply waits 10 minutes (stopping the server ends the wait): far past any timeout here,
# so only the client's timeout can end the request, and the counts below are exact.


def test_slow_reply_times_out_then_retry_succeeds(server: FakeAnthropic) -> None:
    server.script = lambda body: text_reply("in time")
    server.fail_first(1, slow(600.0))
    # long enough for the retry's prompt reply even on a busy machine
    turn = make_agent(server, max_retries=1, timeout_s=5.0).next_turn([])
    assert turn.text == "in time"
    assert len(server.message_requests()) == 2


def test_slow_replies_past_every_retry_are_agent_error(server: FakeAnthropic) -> None:
    server.script = lambda body: slow(600.0, then=text_reply("too late"))
    started = time.monotonic()
    with pytest.raises(AgentError, match="timed out"):
        make_agent(server, max_retries=1, timeout_s=1.0).next_turn([])
    assert time.monotonic() - started < 120  # ended by the timeout, not by the reply
    assert len(server.message_requests()) == 2


def test_dropped_connection_then_success(server: FakeAnthropic) -> None:
    server.script = lambda body: text_reply("back")
    server.fail_first(1, dropped())
    assert make_agent(server).next_turn([]).text == "back"
    assert len(server.message_requests()) == 2


def test_dropped_connections_past_every_retry_are_agent_error(server: FakeAnthropic) -> None:
    server.script = lambda body: dropped()
    with pytest.raises(AgentError, match="connection"):
        make_agent(server, max_retries=2).next_turn([])
    assert len(server.message_requests()) == 3


def test_malformed_body_is_agent_error(server: FakeAnthropic) -> None:
    server.fail_first(1, malformed())
    with pytest.raises(AgentError, match="malformed"):
        make_agent(server).next_turn([])


def test_rejected_key_mid_run_is_agent_error(server: FakeAnthropic) -> None:
    secret = "sk-ant-wrong-key-123456"
    with pytest.raises(AgentError) as info:
        make_agent(server, api_key=secret).next_turn([])
    assert "401" in str(info.value)
    assert "authentication_error" in str(info.value)
    assert secret not in str(info.value)
    assert len(server.message_requests()) == 1  # 401 is not retried


def test_concurrent_conversations_on_one_server(server: FakeAnthropic) -> None:
    def script(body: dict) -> dict:
        task = body["messages"][0]["content"][0]["text"]
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        return text_reply(f"{task}:{turn}")

    server.script = script
    server.latency_s = 0.02
    run = RunSettings(max_retries=0, request_timeout_s=60)
    client = make_client(run, api_key=DEFAULT_API_KEY, base_url=server.base_url)
    seen: dict[int, list[str]] = {}

    def episode(k: int) -> None:
        agent = AnthropicAgent(MODEL, AgentSettings(), run, PRICE, client=client)
        agent.begin("s", f"task{k}", TOOLS)
        seen[k] = [agent.next_turn([]).text for _ in range(3)]

    threads = [threading.Thread(target=episode, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "conversations still running"
    assert seen == {k: [f"task{k}:0", f"task{k}:1", f"task{k}:2"] for k in range(8)}


# ---------------------------------------------------------------------------------------------
# Client and key check


def test_make_client_reads_env_and_settings(
    server: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
    client = make_client(RunSettings(max_retries=3, request_timeout_s=7.5))
    assert client.max_retries == 3
    assert client.timeout == 7.5
    check_api_key(client, f"anthropic/{MODEL}")
    [request] = server.requests
    assert (request.method, request.path) == ("GET", f"/v1/models/{MODEL}")


def test_make_client_reads_a_dotenv_file(server: FakeAnthropic, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={DEFAULT_API_KEY}\n")
    client = make_client(RunSettings(), base_url=server.base_url)
    check_api_key(client, MODEL)


def test_missing_key_is_a_clear_error() -> None:
    client = make_client(RunSettings(), base_url="http://127.0.0.1:9")
    with pytest.raises(LeakbenchError) as info:
        check_api_key(client, MODEL)
    assert info.value.exit_code == 1
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert ".env" in str(info.value)
    assert "\n" not in str(info.value)


def test_rejected_key_is_a_clear_error_without_the_key(server: FakeAnthropic) -> None:
    secret = "sk-ant-api03-not-the-right-one"
    client = make_client(RunSettings(), api_key=secret, base_url=server.base_url)
    with pytest.raises(LeakbenchError) as info:
        check_api_key(client, MODEL)
    assert info.value.exit_code == 1
    assert "rejected" in str(info.value)
    assert "401" in str(info.value)
    assert secret not in str(info.value)
    assert secret[-8:] not in str(info.value)


def test_unknown_model_is_a_usage_error() -> None:
    with FakeAnthropic(known_models=[MODEL]) as fake:
        fake.script = lambda body: context_overflow()  # never reached: no such model
        client = make_client(RunSettings(), api_key=DEFAULT_API_KEY, base_url=fake.base_url)
        check_api_key(client, MODEL)
        with pytest.raises(LeakbenchError, match="unknown model 'claude-nope'") as info:
            check_api_key(client, "claude-nope")
        assert info.value.exit_code == 2


def test_unreachable_api_is_a_clear_error() -> None:
    # A port bound but not listening refuses connections, and no other process on the machine
    # can start listening on it meanwhile (as it could on a closed server's port).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{held.getsockname()[1]}"
        client = make_client(
            RunSettings(max_retries=0, request_timeout_s=30), api_key="k", base_url=base_url
        )
        with pytest.raises(LeakbenchError, match="cannot reach") as info:
            check_api_key(client, MODEL)
    assert info.value.exit_code == 1


# ---------------------------------------------------------------------------------------------
# Prompts


FIELDS = {
    "n_train": 800,
    "n_test": 200,
    "columns": "num_0..num_4 (numeric), cat0, cat1 (categorical)",
    "leak_columns": "leak_future_signal, leak_global_target_mean, leak_cat0_rate_full",
}


def test_default_prompts_are_filled() -> None:
    system, task = load_prompts(AgentSettings(max_steps=17, stdout_max_chars=1234), **FIELDS)
    assert "python_expression" in system
    assert "1234" in system
    assert "800" in task
    assert "200" in task
    assert FIELDS["leak_columns"] in task
    assert "17 steps" in task
    assert 'submit_answer({"y_pred_proba": proba, "pipeline": pipe})' in task
    for key in ("y_pred_proba", "proba", "probas", "pred_proba", "y_pred"):
        assert f"`{key}`" in task
    assert "{" not in task.replace('{"y_pred_proba"', "")


def test_custom_prompt_files(tmp_path: Path) -> None:
    (tmp_path / "sys.md").write_text("You have {max_steps} steps.")
    (tmp_path / "task.md").write_text("Drop {leak_columns}; a dict: {{'a': 1}} or {'b': 2}.")
    settings = AgentSettings(
        system_prompt_file=str(tmp_path / "sys.md"), task_prompt_file=str(tmp_path / "task.md")
    )
    system, task = load_prompts(settings, **FIELDS)
    assert system == "You have 20 steps."
    assert task == f"Drop {FIELDS['leak_columns']}; a dict: {{'a': 1}} or {{'b': 2}}."


def test_missing_prompt_file_is_config_error(tmp_path: Path) -> None:
    settings = AgentSettings(task_prompt_file=str(tmp_path / "nope.md"))
    with pytest.raises(ConfigError, match=r"agent\.task_prompt_file") as info:
        load_prompts(settings, **FIELDS)
    assert info.value.exit_code == 2


def test_unknown_placeholder_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "task.md").write_text("Rows: {n_rows}")
    with pytest.raises(ConfigError, match=r"\{n_rows\}"):
        load_prompts(AgentSettings(task_prompt_file=str(tmp_path / "task.md")), **FIELDS)


def test_non_default_temperature_uses_the_legacy_api_version(server: FakeAnthropic) -> None:
    run = RunSettings(max_retries=0)
    client = make_client(run, api_key=DEFAULT_API_KEY, base_url=server.base_url)
    agent = AnthropicAgent(MODEL, AgentSettings(temperature=0.2), run, PRICE, client=client)
    agent.begin("s", "t", TOOLS)
    turn = agent.next_turn([])
    assert turn.text == "ok"
    [request] = server.message_requests()
    assert request.body["temperature"] == 0.2
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert turn.records[0]["request"]["temperature"] == 0.2
