"""The prompts of a run, filled in once from its task settings (every instance of a run has the
same columns; only the values, the drawn process, and under disguised naming which column is
which, differ). Column names are listed in a fixed order, so the prompt tells nothing of one
instance: it is built from a probe instance under a throwaway key."""

from __future__ import annotations

import pandas as pd

from leakbench.settings import Settings
from leakbench.task.generate import TARGET, make_instance
from leakbench.task.keys import new_key
from leakbench.task.leaks import announced_leak_columns


def build_prompts(settings: Settings) -> tuple[str, str]:
    """(system prompt, task prompt) for every episode of a run."""
    from leakbench.agents.prompts import load_prompts

    task = settings.task
    # A throwaway key: the run's own key never reaches a prompt, not even through a column order.
    probe = make_instance(task, task.seed, key=None if task.public_seeds else new_key())
    announced = announced_leak_columns(task.leaks, task.leak_naming)
    features = [c for c in probe.test.columns if c not in announced and c not in probe.id_columns]
    categorical = [c for c in features if isinstance(probe.test[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in features if c not in categorical]
    lines = [
        f"- numeric columns: {', '.join(numeric)}",
        f"- categorical columns (pandas category): {', '.join(categorical) or 'none'}",
    ]
    if probe.id_columns:
        lines.append(f"- id columns: {', '.join(probe.id_columns)}")
    lines.append(f"- {TARGET}: binary 0/1, in train_df only")
    if announced:
        lines.append(f"- leaky columns: {', '.join(announced)}")
        leak_text = ", ".join(announced)
    elif task.leaks:
        leak_text = "not named here: find them from the data"
    else:
        leak_text = "none"
    return load_prompts(
        settings.agent,
        n_train=task.n_train,
        n_test=task.n_test,
        columns="\n" + "\n".join(lines),
        leak_columns=leak_text,
    )
