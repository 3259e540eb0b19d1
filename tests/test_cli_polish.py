"""What a user types and sees: global options after the command, clean help, --no-color,
labelled and neutralised -v blocks, the missing-key hint, a NaN in a model's tool input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import pytest
import typer.rich_utils

from leakbench.agents.anthropic import AnthropicAgent, check_api_key, make_client
from leakbench.agents.base import ToolResult
from leakbench.cli import display
from leakbench.cli.progress import RunProgress
from leakbench.errors import LeakbenchError
from leakbench.settings import AgentSettings, RunSettings
from tests.fake_anthropic import FakeAnthropic, ScriptedConversation, text_reply, tool_use_reply

COMMANDS = ["generate", "run", "grade", "settings", "calibrate", "report", "selfcheck"]
GLOBAL_FLAGS = ["--config", "--results-dir", "--verbose", "--quiet", "--no-color"]
ESC = "\x1b"


@pytest.fixture(autouse=True)
def _no_sdk_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no SDK profile in ~/.config/anthropic
    monkeypatch.setattr(anthropic._base_client, "INITIAL_RETRY_DELAY", 0.01, raising=False)


@pytest.fixture
def display_reset():
    yield
    display.configure(no_color=False, verbosity=0)


# ---------------------------------------------------------------------------------------------
# 1. Global options after the command


def _concurrency(settings_toml: str) -> int:
    return int(re.search(r"^concurrency = (\d+)$", settings_toml, re.M).group(1))


def test_config_and_results_dir_after_the_command(cli, tmp_path):
    (tmp_path / "a.toml").write_text("[run]\nconcurrency = 7\n")
    (tmp_path / "b.toml").write_text("[run]\nconcurrency = 9\n")
    before = cli("-c", "a.toml", "settings")
    after = cli("settings", "-c", "a.toml")
    assert before.exit_code == after.exit_code == 0, after.output
    assert before.stdout == after.stdout and _concurrency(after.stdout) == 7
    # both forms: the file after the command is read last, so it wins
    assert _concurrency(cli("-c", "a.toml", "settings", "--config", "b.toml").stdout) == 9
    assert _concurrency(cli("-c", "b.toml", "settings", "--config", "a.toml").stdout) == 7
    both = cli("--results-dir", "before", "settings", "--results-dir", "after").stdout
    assert 'results_dir = "after"' in both


def test_verbose_and_quiet_after_the_command(cli, tmp_path):
    results = tmp_path / "results"
    # -q before the command, -v and --results-dir after it: the ones after win
    args = ["--model", "local/baseline", "--runs", "1", "--preset", "seed"]
    result = cli("-q", "run", *args, "-v", "--results-dir", results)
    assert result.exit_code == 0, result.output
    assert "[ep 0] code:" in result.stderr  # -v streams the turns, labelled
    (run,) = results.iterdir()
    assert result.stdout.strip().splitlines()[-1] == run.name
    # -v before, -q after: quiet; -q before, -v after: not
    report = ["report", "--format", "csv", "--out", tmp_path / "r.csv"]
    quiet = cli("-v", "--results-dir", results, *report, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    loud = cli("-q", "--results-dir", results, *report, "-v")
    assert loud.exit_code == 0 and loud.stderr != ""


def test_every_command_lists_the_global_options_in_its_help(cli):
    for command in COMMANDS:
        result = cli(command, "--help", env={"COLUMNS": "250"})
        assert result.exit_code == 0, command
        panel = result.stdout.split("Global options", 1)[1]
        for flag in GLOBAL_FLAGS:
            assert flag in panel, (command, flag)


# ---------------------------------------------------------------------------------------------
# 2. Help without type placeholders


def test_help_has_no_type_placeholders_and_clean_usage_lines(cli):
    placeholder = re.compile(r"<[a-z][a-z_ |,\[\]]*>")
    for command in ["", *COMMANDS]:
        result = cli(*([command] if command else []), "--help", env={"COLUMNS": "250"})
        assert result.exit_code == 0, command
        assert not placeholder.search(result.stdout), (command, placeholder.search(result.stdout))
        usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
        assert "[[" not in usage and "]]" not in usage, usage
    grade = cli("grade", "--help", env={"COLUMNS": "250"}).stdout
    assert "Usage: leakbench grade [OPTIONS] [RUN]..." in grade
    run = cli("run", "--help", env={"COLUMNS": "250"}).stdout
    assert re.search(r"--runs\s+-n\s+RUNS\s", run) and re.search(r"--json\s+Print", run)


# ---------------------------------------------------------------------------------------------
# 3. --no-color


@pytest.fixture
def terminal(monkeypatch):
    """Output as on a colour terminal: rich and typer would both emit ANSI codes."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", True)
    yield
    display.configure(no_color=False, verbosity=0)


@pytest.mark.usefixtures("terminal")
def test_no_color_leaves_no_ansi_codes_anywhere(cli, tmp_path, monkeypatch):
    missing = ["--config", tmp_path / "missing.toml", "settings"]
    # on a colour terminal there are codes (so the checks below can fail) ...
    assert ESC in cli("settings", "--bogus").stderr
    assert ESC in cli("settings", "--help").stdout
    assert ESC in cli(*missing).stderr
    # ... and with --no-color, before or after the command, none at all
    for args in (
        ["settings", "--bogus", "--no-color"],  # typer's usage error panel
        ["--no-color", "settings", "--bogus"],
        ["--no-color", *missing],  # our own one-line error
        [*missing, "--no-color"],
    ):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert "--bogus" in result.stderr or "config file not found" in result.stderr
        assert ESC not in result.output, args
    for args in (["settings", "--help", "--no-color"], ["--no-color", "run", "--help"]):
        result = cli(*args)
        assert result.exit_code == 0 and "Usage:" in result.stdout
        assert ESC not in result.output, args
    # colour comes back for the next command without the flag
    assert ESC in cli("settings", "--bogus").stderr
    monkeypatch.setenv("NO_COLOR", "1")
    for args in (["settings", "--bogus"], missing, ["settings", "--help"]):
        assert ESC not in cli(*args).output, args


# ---------------------------------------------------------------------------------------------
# 4. -v blocks: labelled with their episode, agent output neutralised


@pytest.mark.usefixtures("display_reset")
def test_streamed_blocks_are_labelled_and_neutralised(capsys):
    display.configure(no_color=True, verbosity=1)
    hostile = (
        "\x1b[2J\x1b[31mred\x1b[0m \x1b]0;owned\x07 x\bY\rover \x9b1m \u202eevil "
        "[bold red]markup[/bold red] :smile: \\[x]"
    )
    progress = RunProgress(stream_turns=True)
    progress.event(3, "text", hostile)
    progress.event(12, "code", "print('hi')\nprint('there')")
    progress.event(3, "result", "hi\n\x1b[1mthere")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "[ep 3] agent:" and lines[2] == "[ep 12] code:"
    assert all(re.match(r"\[ep (3|12)\] ", line) for line in lines), lines
    # the body is indented under its header, so no agent line can pass for one
    assert "[ep 12]   print('there')" in lines
    for char in (ESC, "\x07", "\b", "\r", "\x9b", "\u202e"):
        assert char not in err, repr(char)
    assert "\\x1b[2J\\x1b[31mred\\x1b[0m \\x1b]0;owned\\a x\\bY\\rover \\x9b1m \\u202eevil" in err
    assert "[bold red]markup[/bold red] :smile: \\[x]" in err  # shown as written


# ---------------------------------------------------------------------------------------------
# 5. The missing key suggests the scripted agent


def test_missing_key_for_a_preset_model_suggests_local_baseline(cli, tmp_path):
    results = tmp_path / "results"
    result = cli("run", "--preset", "seed", "--results-dir", results)  # seed names a Claude model
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "ANTHROPIC_API_KEY" in result.stderr
    assert "--model local/baseline" in result.stderr
    assert not results.exists()
    client = make_client(RunSettings(), base_url="http://127.0.0.1:9")
    with pytest.raises(LeakbenchError, match="--model local/baseline"):
        check_api_key(client, "claude-haiku-4-5")


# ---------------------------------------------------------------------------------------------
# 6. A NaN or an infinity in a model's tool input

NAN, INF = float("nan"), float("inf")


def test_non_finite_tool_input_goes_to_the_episode_and_the_history_stays_json():
    calls = [
        ("submit_answer", {"answer": {"y_pred_proba": [0.5, NAN]}}, "toolu_nan"),
        ("python_expression", {"expression": "1", "limits": [INF, -INF]}, "toolu_inf"),
    ]
    script = ScriptedConversation([tool_use_reply(calls), text_reply("fixed it")])
    with FakeAnthropic(script) as server:
        run = RunSettings(max_retries=0)
        client = make_client(run, api_key=server.api_key, base_url=server.base_url)
        agent = AnthropicAgent("claude-haiku-4-5", AgentSettings(), run, None, client=client)
        agent.begin("SYSTEM", "TASK", [])
        turn = agent.next_turn([])
        # the episode gets the input as parsed, and answers the call at this step
        assert turn.stop == "tool_use"
        proba = turn.tool_calls[0].input["answer"]["y_pred_proba"]
        assert proba[0] == 0.5 and proba[1] != proba[1]
        assert turn.records[0]["response"]["content"][0]["input"] == {
            "answer": {"y_pred_proba": [0.5, "NaN"]}
        }
        json.dumps(turn.records, allow_nan=False)  # the transcript record is plain JSON
        results = [
            ToolResult("toolu_nan", "1 value(s) are NaN or infinite", is_error=True),
            ToolResult("toolu_inf", "1"),
        ]
        turn = agent.next_turn(results)  # used to fail here: "malformed response"
        assert turn.stop == "end_turn" and turn.text == "fixed it"
        sent = server.message_bodies()[-1]["messages"]
    blocks = sent[1]["content"]
    assert blocks[0]["input"] == {"answer": {"y_pred_proba": [0.5, "NaN"]}}
    assert blocks[1]["input"] == {"expression": "1", "limits": ["Infinity", "-Infinity"]}
    assert [b["tool_use_id"] for b in sent[2]["content"]] == ["toolu_nan", "toolu_inf"]


def test_nan_submission_is_a_tool_error_at_its_step_in_a_run(cli, tmp_path, monkeypatch):
    proba = [0.5] * 199 + [NAN]  # the seed preset has 200 test rows
    script = ScriptedConversation(
        [
            tool_use_reply(
                [("submit_answer", {"answer": {"y_pred_proba": proba}})],
                text="\x1b]0;pwned\x07Submitting [bold]now[/bold]",
            ),
            text_reply("done"),
        ]
    )
    results = tmp_path / "results"
    with FakeAnthropic(script) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", server.api_key)
        args = ["--model", "claude-haiku-4-5", "--preset", "seed", "--runs", "1"]
        result = cli("run", *args, "--results-dir", results, "-v")
        assert len(server.message_requests()) == 2
    assert result.exit_code == 0, result.output
    (run,) = results.iterdir()
    (record,) = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]
    assert record["outcome"] == "invalid" and record["steps"] == 2  # not "error"
    assert not any("malformed" in r for r in record["reasons"])
    events = [json.loads(x) for x in (run / "episodes/0000/transcript.jsonl").open()]
    first = next(e for e in events if e["type"] == "tool_result")
    assert "NaN or infinite" in first["content"]
    # the agent's text on the terminal: labelled, escapes shown, markup as written
    assert "[ep 0] agent:" in result.stderr
    assert ESC not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b]0;pwned\\aSubmitting [bold]now[/bold]" in result.stderr
