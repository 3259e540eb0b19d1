"""The keys table in docs/settings.md: generated from the settings model, complete and current."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from leakbench import settings_reference as ref
from leakbench.errors import LeakbenchError
from leakbench.settings import Settings, SettingsSources, preset_names, resolve

PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
_KEY_CELL = re.compile(r"^\| (?:\*\*)?`\[?([^`\]]+)\]?`(?:\*\*)? \|", re.M)


def _sections(model: type[BaseModel] = Settings) -> list[type[BaseModel]]:
    """Every section model reachable from ``Settings``, found apart from the generator's walk."""
    found = [model]
    for info in model.model_fields.values():
        for sub in _models_in(info.annotation):
            found += [s for s in _sections(sub) if s not in found]
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _documented(markdown: str) -> list[re.Pattern[str]]:
    """The key column of the table, placeholders such as ``<model>`` matching any one name."""
    keys = _KEY_CELL.findall(markdown)
    return [re.compile(re.sub(r"<[a-z]+>", "[^.]+", re.escape(k))) for k in keys]


def _leaves(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_committed_page_is_current():
    text = PAGE.read_text(encoding="utf-8")
    assert ref.render_page(text) == text, (
        f"docs/settings.md is stale: run `{ref.COMMAND}` and commit the result"
    )


def test_every_field_and_section_is_described():
    sections = _sections()
    assert {"PriorSettings", "ModelPrice", "CalibrationRecord"} <= {s.__name__ for s in sections}
    missing = [
        f"{section.__name__}.{name}"
        for section in sections
        for name, info in section.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert not missing, f"fields without Field(description=...): {', '.join(missing)}"
    assert all((s.__doc__ or "").strip() for s in sections)


def test_every_printed_key_is_in_the_table(cli, tmp_path):
    # Optional keys are printed only when set: one file sets them all.
    extra = tmp_path / "extra.toml"
    extra.write_text(
        '[agent]\nsystem_prompt_file = "s.md"\ntask_prompt_file = "t.md"\n'
        "[grading]\nmax_ece = 0.1\n"
        "[pricing.my-model]\ninput = 1.0\noutput = 2.0\ncache_write = 1.0\ncache_read = 0.1\n"
        '[calibration]\nmetric = "auroc"\nthreshold = 0.9\nquantile = 0.85\nepisodes = 20\n'
        'scored = 20\nimplied_pass_rate = 0.15\nruns_needed = 40\ndate = "2025-01-01T00:00:00Z"\n'
        'leakbench_version = "0.1.0"\n',
        encoding="utf-8",
    )
    documented = _documented(ref.reference_markdown())
    printed: set[str] = set()
    for preset in preset_names():
        result = cli("settings", "--preset", preset, "--config", extra)
        assert result.exit_code == 0, result.stderr
        printed |= set(_leaves(tomllib.loads(result.stdout)))
    assert {"task.family.prior.num_weights", "pricing.my-model.input"} <= printed
    assert "calibration.runs_needed" in printed and "grading.max_ece" in printed
    undocumented = [k for k in printed if not any(p.fullmatch(k) for p in documented)]
    assert not undocumented, f"printed by `leakbench settings` but not documented: {undocumented}"


def test_cli_prints_the_table(cli):
    result = cli("settings", "--reference")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ref.reference_markdown()
    result = cli("settings", "--reference", "--preset", "seed")
    assert result.exit_code == 2 and "--reference" in result.stderr and not result.stdout


def test_table_reads_for_people():
    table = ref.reference_markdown()
    for python_only in ("PosixPath", "<factory>", "None", "PydanticUndefined", "Literal["):
        assert python_only not in table
    rows = {r.key: r for r in ref.reference_rows()}
    assert rows["task.n_train"].default == "`800`"
    assert (
        rows["task.family.nonlinear"].type == 'array of ["square" / "abs" / "sin", integer, float]'
    )
    assert rows["grading.max_ece"].default == "unset"
    assert rows["calibration.metric"].default == "required"
    assert rows["task.family.prior"].header and rows["pricing.<model>"].header
    assert "`0.1` for `claude-haiku-4-5`" in rows["pricing.<model>.cache_read"].default
    # a | inside a cell would split it
    assert all(line.count(" | ") == 4 for line in table.splitlines()[2:]), "stray | in a cell"


def test_preset_values_come_from_the_presets():
    rows = {r.key: r for r in ref.reference_rows()}
    default = resolve(SettingsSources(preset="default", environ={}))
    seed = resolve(SettingsSources(preset="seed", environ={}))
    assert f"`{default.task.n_holdout}`" in rows["task.n_holdout"].presets
    assert f"`{default.grading.threshold}`" in rows["grading.threshold"].presets
    assert rows["agent.model"].presets == f'`seed`: `"{seed.agent.model}"`'
    assert rows["grading.require_pipeline"].presets == "every preset: `true`"
    assert rows["task.family.prior"].presets == "`default`, `disguised`: set"
    assert rows["task.n_train"].presets == ""  # every preset keeps the built-in 800


PROSE_BEFORE = "# Title\n\nHand-written prose | with a pipe.\n\n<!-- other comment -->\n"
PROSE_AFTER = "\n## After\n\nMore prose, no trailing newline"


def test_generator_leaves_the_prose_alone(tmp_path):
    page = tmp_path / "settings.md"
    page.write_text(f"{PROSE_BEFORE}{ref.BEGIN}\nold table\n{ref.END}{PROSE_AFTER}")
    assert not ref.is_current(page)
    assert ref.write_reference(page) is True
    text = page.read_text()
    assert text.startswith(PROSE_BEFORE + ref.BEGIN + "\n")
    assert text.endswith(ref.END + PROSE_AFTER)
    assert "old table" not in text and ref.reference_markdown() in text
    assert ref.is_current(page) and ref.write_reference(page) is False


def test_check_exit_codes_and_message(tmp_path, capsys):
    page = tmp_path / "settings.md"
    page.write_text(f"prose\n{ref.BEGIN}\n{ref.END}\n")
    assert ref.main(["--check", str(page)]) == 1
    out, err = capsys.readouterr()
    assert (
        not out
        and err.strip().endswith(f"run: {ref.COMMAND} {page}")
        and len(err.splitlines()) == 1
    )
    assert ref.main([str(page)]) == 0
    assert ref.main(["--check", str(page)]) == 0
    capsys.readouterr()
    page.write_text("prose without markers\n")
    assert ref.main(["--check", str(page)]) == 2
    assert "settings-reference:begin" in capsys.readouterr().err
    with pytest.raises(LeakbenchError):
        ref.render_page(f"{ref.END}\n{ref.BEGIN}\n")
