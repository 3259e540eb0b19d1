from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from leakbench.errors import ConfigError
from leakbench.settings import Settings, SettingsSources, preset_names, resolve


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_presets_ship_with_the_package():
    assert {"seed", "default"} <= set(preset_names())


def test_seed_preset_is_the_original_task():
    s = resolve(SettingsSources(preset="seed", environ={}))
    assert (s.task.n_train, s.task.n_test) == (800, 200)
    assert s.grading.threshold == 0.9471 and s.grading.metric == "auroc"
    assert s.task.leaks == ["future_signal", "global_target_mean", "cat0_rate_full"]
    assert (s.agent.max_steps, s.agent.max_tokens, s.agent.stdout_max_chars) == (20, 1000, 8000)
    assert s.agent.print_values_factor == 2 and s.agent.model == "claude-haiku-4-5"
    # the pipeline is required, as the original submit_answer expected; keys are secret
    assert s.grading.require_pipeline is True and s.task.public_seeds is False


def test_precedence_preset_file_env_flag(tmp_path):
    a = _write(tmp_path / "a.toml", "[grading]\nthreshold = 0.5\n[run]\nruns = 3\n")
    b = _write(tmp_path / "b.toml", "[grading]\nthreshold = 0.6\n")
    s = resolve(SettingsSources(preset="seed", config_files=[a, b], environ={}))
    assert s.grading.threshold == 0.6 and s.run.runs == 3  # later file wins, others kept
    env = {"LEAKBENCH_GRADING__THRESHOLD": "0.7", "LEAKBENCH_AGENT__MODEL": "local/leaky"}
    s = resolve(SettingsSources(preset="seed", config_files=[a, b], environ=env))
    assert s.grading.threshold == 0.7 and s.agent.model == "local/leaky"
    s = resolve(
        SettingsSources(
            preset="seed",
            config_files=[a, b],
            environ=env,
            flags={"grading.threshold": 0.8, "run.runs": None},
        )
    )
    assert s.grading.threshold == 0.8
    assert s.run.runs == 3  # a flag that was not given never overrides a file


def test_unknown_key_names_file_and_dotted_key_with_suggestion(tmp_path):
    bad = _write(tmp_path / "x.toml", "[grading]\nthreshhold = 0.9\n")
    with pytest.raises(ConfigError) as err:
        resolve(SettingsSources(config_files=[bad], environ={}))
    assert str(err.value) == (f"{bad}: grading.threshhold: unknown key (did you mean 'threshold'?)")
    assert err.value.exit_code == 2


def test_unknown_section_and_wrong_type(tmp_path):
    bad = _write(tmp_path / "x.toml", "[grading]\nthreshold = 'high'\n")
    with pytest.raises(ConfigError, match=r"x.toml: grading.threshold: .*valid number"):
        resolve(SettingsSources(config_files=[bad], environ={}))
    bad = _write(tmp_path / "y.toml", "[gradng]\nthreshold = 0.9\n")
    with pytest.raises(ConfigError, match=r"y.toml: gradng: unknown key \(did you mean 'grading'"):
        resolve(SettingsSources(config_files=[bad], environ={}))


def test_out_of_range_value_from_environment():
    with pytest.raises(ConfigError, match=r"^environment: run.runs: .*greater than or equal to 1"):
        resolve(SettingsSources(environ={"LEAKBENCH_RUN__RUNS": "0"}))


def test_broken_toml_and_missing_file(tmp_path):
    broken = _write(tmp_path / "broken.toml", "[grading\nthreshold = \n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        resolve(SettingsSources(config_files=[broken], environ={}))
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        resolve(SettingsSources(config_files=[tmp_path / "nope.toml"], environ={}))


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'sed'.*did you mean 'seed'"):
        resolve(SettingsSources(preset="sed", environ={}))


def test_unknown_leak_kind_and_inconsistent_family(tmp_path):
    bad = _write(tmp_path / "l.toml", '[task]\nleaks = ["future_signall"]\n')
    with pytest.raises(
        ConfigError, match=r"task: unknown leak kind 'future_signall'.*'future_signal'"
    ):
        resolve(SettingsSources(config_files=[bad], environ={}))
    bad = _write(tmp_path / "f.toml", "[task.family]\ncat_levels = [4]\n")
    with pytest.raises(ConfigError, match=r"f.toml: task.family: cat_effects has 2 lists"):
        resolve(SettingsSources(preset="seed", config_files=[bad], environ={}))


def test_to_toml_round_trips(tmp_path):
    s = resolve(SettingsSources(preset="seed", environ={}))
    data = tomllib.loads(s.to_toml())
    assert Settings.model_validate(data) == s


def test_task_hash_ignores_seed_but_not_data_knobs():
    s = resolve(SettingsSources(preset="seed", environ={}))
    assert s.with_overrides({"task.seed": 5}).task_hash() == s.task_hash()
    assert s.with_overrides({"task.n_train": 900}).task_hash() != s.task_hash()


def test_default_preset_draws_its_process_from_a_prior(tmp_path):
    s = resolve(SettingsSources(preset="default", environ={}))
    family = s.task.family
    assert family.prior is not None and family.numeric_columns() == [f"num_{i}" for i in range(6)]
    assert s.task.public_seeds is False
    text = s.to_toml()
    # the unused fixed coefficients (the seed family's) are not written out as if they applied
    assert "[task.family.prior]" in text
    assert "num_weights" not in tomllib.loads(text)["task"]["family"]
    assert Settings.model_validate(tomllib.loads(text)) == s
    assert resolve(SettingsSources(preset="seed", environ={})).task.family.prior is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[task.family.prior]\ncat_effects = [[0.0, 0.6, -0.4, 0.2]]\n",
            r"p.toml: task.family: prior.cat_effects has 1 lists but cat_levels names 2",
        ),
        (
            "[task.family.prior]\ncat_effects = [[0.0, 0.6], [0.0, 0.0, -0.5]]\n",
            r"task.family: prior.cat_effects\[0\] has 2 values for 4 levels",
        ),
        (
            "[task.family]\nnum_weights = [1.0, 2.0]\n",
            r"task.family: num_weights: fixed coefficients cannot be combined with "
            r"task.family.prior.*--preset seed",
        ),
        (
            "[task.family.prior]\nnum_weights = [1.0, 0.5, 0.2]\n"
            "interactions = [0.5, 0.4, 0.3, 0.2]\nnonlinear = []\n",
            r"p.toml: task.family.prior: interactions: 4 interactions need as many distinct "
            r"pairs of numerics, but 3 numerics \(num_weights\) give 3",
        ),
        (
            "[task.family.prior]\nnonlinear = [['cube', 0.3]]\n",
            r"task.family.prior.nonlinear.0.0: Input should be 'square', 'abs' or 'sin'",
        ),
        (
            "[task.family.prior]\nintercept = [0.5, -0.5]\n",
            r"task.family.prior: intercept: \[low, high\] with low <= high",
        ),
        (
            "[task.family.prior]\nweights = [1.0]\n",
            r"task.family.prior.weights: unknown key",
        ),
    ],
)
def test_prior_is_validated_with_the_key_named(tmp_path, text, message):
    bad = _write(tmp_path / "p.toml", text)
    with pytest.raises(ConfigError, match=message):
        resolve(SettingsSources(preset="default", config_files=[bad], environ={}))


def test_public_seeds_is_a_setting():
    env = {"LEAKBENCH_TASK__PUBLIC_SEEDS": "true"}
    assert resolve(SettingsSources(preset="seed", environ=env)).task.public_seeds is True
    s = resolve(SettingsSources(preset="seed", environ={}))
    assert s.with_overrides({"task.public_seeds": True}).task_hash() != s.task_hash()
