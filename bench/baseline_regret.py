"""Holdout regret of the local policies, measured directly (no sandbox), to calibrate a threshold.

    python -m bench.baseline_regret --seeds 1000 --count 200 [--preset default]
        [--policies baseline tuned boosted numerics-only] [--quantile 0.3] [--jobs 2]
        [--out regrets.csv]

Each instance seed..seed+count-1 is drawn with a fresh secret key of its own (as every run draws
one), so under a prior every instance also has its own process. Each policy's exact code (the
strings ``local/<policy>`` sends to ``python_expression``) runs in a namespace holding what the
sandbox preloads; the pipeline it submits is scored as the grader scores it:
holdout_regret = oracle AUROC - pipeline AUROC on the same hidden holdout rows.

Prints, per policy: mean, sd and quantiles of the regret, and the share at or below the
threshold (the baseline's ``--quantile`` quantile, numpy method "lower", as ``leakbench
calibrate`` picks it for a lower-is-better metric; and the preset's current threshold). Also the
spread of the drawn processes: Var(f), the oracle's holdout AUROC and the class balance.
Only the score is measured here: the grader's other checks (leak audit, refit, ...) are not run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import scipy
import sklearn
from sklearn.metrics import roc_auc_score

from leakbench.agents.local import POLICIES
from leakbench.settings import Settings, SettingsSources, resolve
from leakbench.task.generate import make_instance
from leakbench.task.keys import new_key
from leakbench.task.prior import logit_variance

DEFAULT_POLICIES = ("numerics-only", "baseline", "boosted", "tuned")


def _pipeline_of(policy: str, train: pd.DataFrame, test: pd.DataFrame) -> object:
    """Run the policy's code as the sandbox would and return the pipeline it submits."""
    submitted: dict = {}
    namespace = {
        "train_df": train.copy(),
        "test_df": test.copy(),
        "pd": pd,
        "np": np,
        "sklearn": sklearn,
        "scipy": scipy,
        "submit_answer": lambda answer: submitted.setdefault("answer", answer),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        for codes in POLICIES[policy].turns:
            for code in codes:
                exec(code, namespace)
                if "answer" in submitted:
                    return submitted["answer"]["pipeline"]
    raise RuntimeError(f"local/{policy} submitted no pipeline")


def measure(args: tuple[Settings, int, tuple[str, ...]]) -> dict[str, float]:
    """One instance under a fresh key: each policy's holdout regret and the process' figures."""
    settings, seed, policies = args
    task = settings.task
    inst = make_instance(task, seed, key=None if task.public_seeds else new_key())
    out = {
        "var_f": logit_variance(inst.process) if inst.process is not None else float("nan"),
        "oracle": inst.holdout_oracle_auroc,
        "balance": float(inst.y_holdout.mean()),
    }
    for policy in policies:
        pipe = _pipeline_of(policy, inst.train, inst.test)
        proba = pipe.predict_proba(inst.holdout)[:, 1]  # type: ignore[attr-defined]
        out[policy] = inst.holdout_oracle_auroc - float(roc_auc_score(inst.y_holdout, proba))
    return out


def _single_thread() -> None:
    # As in the sandbox: BLAS/OpenMP single-threaded, so --jobs processes share the cores fairly.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, default=1000, help="first instance seed")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    parser.add_argument("--quantile", type=float, default=0.3, help="baseline pass share")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", help="also write the per-instance figures to this CSV file")
    args = parser.parse_args()
    settings = resolve(SettingsSources(preset=args.preset, environ={}))
    policies = tuple(args.policies)
    jobs = [(settings, seed, policies) for seed in range(args.seeds, args.seeds + args.count)]
    with ProcessPoolExecutor(args.jobs, initializer=_single_thread) as executor:
        rows = pd.DataFrame(list(executor.map(measure, jobs)))
    if args.out:
        rows.insert(0, "seed", [seed for _, seed, _ in jobs])
        rows.to_csv(args.out, index=False)

    last = args.seeds + args.count - 1
    print(
        f"preset {args.preset}: {args.count} instances (seeds {args.seeds}-{last}), "
        "a fresh key each"
    )
    for name, label in (
        ("var_f", "Var(f)"),
        ("oracle", "oracle holdout AUROC"),
        ("balance", "P(y=1)"),
    ):
        v = rows[name]
        print(
            f"  {label:22s} mean {v.mean():.4f}  sd {v.std():.4f}  [{v.min():.4f}, {v.max():.4f}]"
        )
    anchor = "baseline" if "baseline" in policies else policies[0]
    # For a lower-is-better metric `leakbench calibrate` takes numpy's "lower" quantile.
    cut = float(np.quantile(rows[anchor], args.quantile, method="lower"))
    current = settings.grading.threshold
    print(f"{anchor} {args.quantile:.0%} quantile (method 'lower'): {cut:.5f} (rounded {cut:.4f})")
    print(
        f"{'policy':15s} {'mean':>8s} {'sd':>8s} {'q10':>8s} {'q30':>8s} {'q50':>8s} {'q90':>8s}"
        f" {'pass@' + format(round(cut, 4), '.4f'):>12s} {'pass@' + format(current, '.4f'):>12s}"
    )
    for policy in policies:
        v = rows[policy].to_numpy()
        q = np.quantile(v, [0.1, 0.3, 0.5, 0.9])
        at_cut = np.mean(v <= round(cut, 4))
        at_current = np.mean(v <= current)
        print(
            f"{policy:15s} {v.mean():8.5f} {v.std(ddof=1):8.5f} "
            + " ".join(f"{x:8.5f}" for x in q)
            + f" {at_cut:12.1%} {at_current:12.1%}"
        )


if __name__ == "__main__":
    main()
