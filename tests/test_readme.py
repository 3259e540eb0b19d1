"""Every ``leakbench`` command shown in the README and docs/ parses against the real CLI.

Shown means in a shell block or as inline code; placeholders in capitals (``RUN``) stand for a
value and parse as one.

The shown commands are parsed, not run (some call Claude or take minutes): each one's command
must exist and every option, value and argument must be accepted as written, so an example cannot
drift from the CLI again. The README's five-minute tour (local policies only) is also run, command
by command, as written. Commands in a block are split at ``&&``, ``;`` and ``|``; leading
``VAR=value`` assignments and trailing comments are dropped.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest
import typer

from leakbench.agents import parse_model
from leakbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PRESETS = {path.stem for path in (ROOT / "leakbench" / "configs").glob("*.toml")}
# Inline code that is a whole command; optional parts in brackets (``[EPISODE]``) are left out.
_INLINE = re.compile(r"`(leakbench [^`]*)`")
_BLOCK = re.compile(r"^```(?:bash|sh|console)\n(.*?)^```", re.M | re.S)


def shown_commands(text: str) -> list[tuple[str, bool]]:
    """The ``leakbench …`` commands in a page, each with whether it is whole: a line of a shell
    block is; inline code may name a command or an option without its values."""
    found = []
    inline = [span for span in _INLINE.findall(_BLOCK.sub("", text)) if "…" not in span]
    blocks = [(block, True) for block in _BLOCK.findall(text)] + [("\n".join(inline), False)]
    for block, whole in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token not in ("&&", "||", ";", "|", "&", ">", ">>", "2>", "<"):
                    if not (token.startswith("[") and token.endswith("]")):
                        words.append(token)
                    continue
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                    words = words[1:]
                if words[:1] == ["leakbench"]:
                    found.append((shlex.join(words), whole))
                words = []
    return found


def parse(words: list[str]) -> str | None:
    """Parse ``leakbench WORDS`` as the CLI would, with every command's body left out: None
    when it parses, else the CLI's usage message."""
    group = typer.main.get_command(app)  # a fresh copy: its commands can be emptied
    for command in group.commands.values():
        command.callback = lambda **_: None
    try:
        group.main(list(words), prog_name="leakbench", standalone_mode=False)
    except Exception as exc:
        if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):
            return exc.format_message()  # Typer's own click.UsageError
        raise
    return None


EXAMPLES = [(page.name, *shown) for page in PAGES for shown in shown_commands(page.read_text())]
# What inline code may leave out: a reference such as `leakbench run --resume` names an option.
_LEFT_OUT = re.compile(r"Missing (option|argument)|requires an argument")


def test_the_pages_show_commands():
    readme = [cmd for page, cmd, whole in EXAMPLES if page == "README.md" and whole]
    assert "leakbench run --runs 5" in readme  # the quick start
    assert len(readme) >= 5


@pytest.mark.parametrize(
    ("page", "command", "whole"), EXAMPLES, ids=[f"{p}: {c}" for p, c, _ in EXAMPLES]
)
def test_shown_command_parses(page, command, whole, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    words = shlex.split(command)[1:]
    problem = parse(words)
    if problem and not whole and _LEFT_OUT.search(problem):
        problem = None
    assert problem is None, f"{page}: `{command}` does not parse: {problem}"
    # Values the parser takes as plain strings must name real things too.
    for flag, value in itertools.pairwise(words):
        if flag in ("--model", "-m"):
            parse_model(value)  # UsageError for an unknown provider or local policy
        elif flag in ("--preset", "-p"):
            assert value in PRESETS, f"{page}: `{command}`: no preset {value!r}"


def test_a_wrong_option_is_caught():
    assert "--runz" in parse(["run", "--runz", "5"])
    assert "reprot" in parse(["reprot"])
    assert "--runs" in parse(["run", "--runs", "five"])


def test_the_readme_tour_runs_as_written(cli, tmp_path):
    # The tour's commands, in order, run for real (the example run id replaced by this run's):
    # each exits 0 and shows what the README says it shows.
    tour = (ROOT / "README.md").read_text().split("## A five-minute tour", 1)[1]
    tour = tour.split("\n## ", 1)[0]
    commands = [
        words
        for block in _BLOCK.findall(tour)
        for words in (_words(line) for line in block.splitlines())
        if words[:1] == ["leakbench"]
    ]
    assert [w[1] for w in commands] == ["run", "runs", "view", "view", "report", "calibrate"]
    shown_id = next(w[2] for w in commands if w[1] == "view")
    run_id = None
    for words in commands:
        if run_id is not None:
            words = [run_id[: len(shown_id)] if w == shown_id else w for w in words]
        result = cli(*words[1:])
        assert result.exit_code == 0, (words, result.output)
        if words[1] == "run":
            run_id = result.stdout.split()[-1]
            assert (tmp_path / "results" / run_id / "manifest.json").is_file()
        elif words[1] == "runs":
            assert run_id in result.stdout and "10/10" in result.stdout
        elif words[1:3] == ["view", run_id[: len(shown_id)]] and len(words) == 3:
            assert f"run {run_id}" in result.stdout and "first failing reason" in result.stdout
        elif words[1] == "view":
            assert f"episode 0001 of run {run_id}" in result.stdout
            assert "python_expression" in result.stdout
        elif words[1] == "report":
            assert (tmp_path / "report.html").stat().st_size > 0
        else:
            assert "threshold" in result.stdout and "implied pass rate" in result.stdout


def _words(line: str) -> list[str]:
    """A shell line's words, without a prompt, a trailing comment or a line continuation."""
    return shlex.split(line.strip().removeprefix("$ "), comments=True)
