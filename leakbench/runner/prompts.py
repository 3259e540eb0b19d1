"""The prompts of a run, filled in once from its task settings (every instance has the same
columns; only the values differ)."""

from __future__ import annotations

from leakbench.settings import Settings
from leakbench.task.leaks import LEAK_KINDS


def build_prompts(settings: Settings) -> tuple[str, str]:
    """(system prompt, task prompt) for every episode of a run."""
    from leakbench.agents.anthropic import load_prompts

    task = settings.task
    family = task.family
    numeric, categorical = family.numeric_columns(), family.categorical_columns()
    leak_columns = [LEAK_KINDS[k].column for k in task.leaks]
    columns = "\n" + "\n".join(
        [
            f"- numeric features: {', '.join(numeric)}",
            f"- categorical features (pandas category): {', '.join(categorical) or 'none'}",
            "- target: binary 0/1, in train_df only",
            f"- leaky columns: {', '.join(leak_columns) or 'none'}",
        ]
    )
    return load_prompts(
        settings.agent,
        n_train=task.n_train,
        n_test=task.n_test,
        columns=columns,
        leak_columns=", ".join(leak_columns) or "none",
    )
