"""Drawing an instance's data-generating process from the family's prior (SPEC §4.5).

Only signs and placement are random; magnitudes are the prior's. With features iid N(0, 1),
every term of the logit is uncorrelated with every other (linear terms are odd, interactions sit
on distinct pairs, square and abs are even and centred, each nonlinear term has a feature of its
own, categoricals are independent of the numerics), so

    Var(f) = sum(w^2) + sum(v^2) + sum(u^2 Var g) + sum_j Var(cat effects j)

whatever the draw: the instances differ in which features matter how, not in how hard they are.
Only E[f] (the intercept and the sign of each categorical's effects) moves the class balance.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from leakbench.settings import FamilySettings


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, size=n) * 2.0 - 1.0


def draw_family(family: FamilySettings, rng: np.random.Generator) -> FamilySettings:
    """The process of one instance: ``family`` itself when it has no prior, else a plain family
    (no prior) with coefficients drawn from it, used exactly like a fixed one."""
    prior = family.prior
    if prior is None:
        return family
    k = len(prior.num_weights)
    weights = np.empty(k)
    weights[rng.permutation(k)] = np.asarray(prior.num_weights) * _signs(rng, k)

    pairs = list(combinations(range(k), 2))
    chosen = rng.choice(len(pairs), size=len(prior.interactions), replace=False)
    signs = _signs(rng, len(prior.interactions))
    interactions = [
        (pairs[p][0], pairs[p][1], float(s * w))
        for p, s, w in zip(chosen, signs, prior.interactions, strict=True)
    ]

    features = rng.choice(k, size=len(prior.nonlinear), replace=False)
    signs = _signs(rng, len(prior.nonlinear))
    nonlinear = [
        (form, int(i), float(s * w))
        for (form, w), i, s in zip(prior.nonlinear, features, signs, strict=True)
    ]

    cat_effects = []
    for values in prior.cat_effects:
        effects = np.empty(len(values))
        # One sign for the whole list: a sign per level would change the effects' variance.
        effects[rng.permutation(len(values))] = np.asarray(values) * _signs(rng, 1)[0]
        cat_effects.append([float(e) for e in effects])

    low, high = prior.intercept
    return FamilySettings(
        num_weights=[float(w) for w in weights],
        cat_levels=list(family.cat_levels),
        cat_effects=cat_effects,
        noise_sd=family.noise_sd,
        interactions=interactions,
        nonlinear=nonlinear,
        intercept=float(rng.uniform(low, high)),
    )


def logit_variance(family: FamilySettings) -> float:
    """Var(f) of a family without a prior, for uniform levels and independent N(0, 1) features
    (exact when the terms are uncorrelated, as every draw from a prior of square/abs terms is)."""
    g_var = {"square": 2.0, "abs": 1.0 - 2.0 / np.pi, "sin": (1.0 - np.exp(-2.0)) / 2.0}
    total = float(np.sum(np.square(family.num_weights)))
    total += sum(w * w for _, _, w in family.interactions)
    total += sum(w * w * g_var[form] for form, _, w in family.nonlinear)
    total += sum(float(np.var(effects)) for effects in family.cat_effects)
    return total
