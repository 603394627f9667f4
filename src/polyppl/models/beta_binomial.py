"""Hierarchical Beta-Binomial model for a multi-variant A/B test (the seed's first model).

    p(a, b) proportional to (a + b)^-2.5      (Gelman et al., BDA3 section 5.3)
    rates[k] ~ Beta(a, b)
    successes[k] ~ Binomial(trials[k], rates[k])

Parametrizations:
  marginal  (default) the rates integrated out: successes[k] ~ BetaBinomial(trials[k], a, b),
            with (a, b) sampled as logit_mean = log(a / b) and log_concentration =
            log(a + b), the hyperprior's Jacobian a * b included; the rates are drawn after
            sampling from their exact conditional Beta(a + y_k, b + n_k - y_k). No funnel
            (the rates are not sampled) and a likelihood that stays exact at any a + b: no
            divergences on any backend (`polyppl repro beta-binomial-funnel`).
  positive  a and b declared positive (sampled on the log scale), rates sampled jointly:
            what people write by hand; a funnel at large a + b gives a few divergences.
  seed      the seed's declaration: a and b flat on the whole real line, the hyperprior a
            density that is minus infinity where a <= 0 or b <= 0. Same posterior, but no
            transform keeps the sampler inside the support (`polyppl repro advi-init-inf-energy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError
from polyppl.models import beta_binomial_exact, csvdata
from polyppl.models.base import BuiltinModel, Problem, Scenario, ShrinkagePanel, SweepLine, Sweeps, rates_panel, stack_draws

if TYPE_CHECKING:
    import xarray as xr

COLUMNS = ("variant", "trials", "successes")


def _decisions() -> tuple[s.Decision, ...]:
    rates = s.Var("rates")
    return (
        s.prob_beats("prob_beats", rates, "variant", "P(X beats Y), as X>Y"),
        s.prob_best("prob_best", rates, "variant", "P(variant is best)"),
    )


def build(parametrization: str, dataset: s.Dataset) -> s.Model:
    a, b, trials, successes = s.Var("a"), s.Var("b"), s.Var("trials"), s.Var("successes")
    if parametrization == "marginal":
        u, v = s.Var("logit_mean"), s.Var("log_concentration")
        nodes = (
            s.Data("trials", "int", ("variant",), lower=1),
            s.Param("logit_mean", s.Flat()),
            s.Param("log_concentration", s.Flat()),
            s.Deterministic("a", s.exp(v) * s.inv_logit(u)),
            s.Deterministic("b", s.exp(v) * s.inv_logit(-u)),
            # (a + b)^-2.5 times the Jacobian a * b of (u, v) -> (a, b), on the log scale:
            # -2.5 v + log a + log b = -v / 2 - log1p(exp(-u)) - log1p(exp(u)).
            s.Factor("hyperprior", -0.5 * v - s.log1p(s.exp(-u)) - s.log1p(s.exp(u))),
            s.Observed("successes", s.BetaBinomial(trials, a, b), ("variant",)),
            s.Conditional("rates", s.Beta(a + successes, b + trials - successes), ("variant",)),
        )
    elif parametrization == "positive":
        nodes = (
            s.Data("trials", "int", ("variant",), lower=1),
            s.Param("a", s.HalfFlat()),
            s.Param("b", s.HalfFlat()),
            s.Factor("hyperprior", -2.5 * s.log(a + b)),
            s.Param("rates", s.Beta(a, b), ("variant",)),
            s.Observed("successes", s.Binomial(trials, s.Var("rates")), ("variant",)),
        )
    else:  # "seed"
        nodes = (
            s.Data("trials", "int", ("variant",), lower=1),
            s.Param("a", s.Flat()),
            s.Param("b", s.Flat()),
            s.Factor("hyperprior", s.where((a <= 0) | (b <= 0), s.NEG_INF, -2.5 * s.log(a + b))),
            s.Param("rates", s.Beta(a, b), ("variant",)),
            s.Observed("successes", s.Binomial(trials, s.Var("rates")), ("variant",)),
        )
    return s.Model(
        "beta-binomial",
        (*nodes, *_decisions()),
        description="Hierarchical Beta-Binomial: p(a, b) ~ (a+b)^-2.5, rates ~ Beta(a, b).",
        # The marginal form keeps a mild funnel: as log(a + b) grows, the pooled data pin
        # logit_mean ever more tightly, and the tail in log(a + b) is long. At 0.9, PyMC's
        # NUTS diverged once in 4000 draws in 2 of 6 seeds on four-variants (at log(a + b)
        # near 5, with its step sizes up to 0.99); at 0.95 in none of 6 per scenario.
        target_accept=0.95 if parametrization == "marginal" else None,
    )


def dataset_from_counts(variants, trials, successes, source: str) -> s.Dataset:
    return s.Dataset(
        values={"trials": np.asarray(trials, dtype=np.int64), "successes": np.asarray(successes, dtype=np.int64)},
        coords={"variant": tuple(variants)},
        source=source,
    )


def read_csv(path: Path) -> s.Dataset:
    table = csvdata.read_table(path, [COLUMNS])
    rows = table.rows
    variants = csvdata.unique_labels([r["variant"] for r in rows], "variant")
    trials, successes = [], []
    for row in rows:
        n = csvdata.integer(row["trials"], minimum=0, what="a non-negative whole number of trials")
        if n == 0:
            raise row["trials"].error("is zero; every variant needs at least one trial")
        k = csvdata.integer(row["successes"], minimum=0, what="a non-negative whole number of successes")
        if k > n:
            raise row["successes"].error(f"is above the {n} trials of line {row['trials'].line}")
        trials.append(n)
        successes.append(k)
    if len(variants) < 2:
        raise UserError(f"{path}: {len(variants)} variant; a comparison needs at least two")
    return dataset_from_counts(variants, trials, successes, f"file {path}")


def shrinkage(problem: Problem, posteriors: Mapping[str, xr.Dataset]) -> ShrinkagePanel:
    values = problem.dataset.values
    return rates_panel([str(v) for v in problem.dataset.coords["variant"]], values["trials"], values["successes"],
                       {name: stack_draws(p["rates"]) for name, p in posteriors.items()}, "variants")


def synthetic(sizes: dict[str, int], form: str = "counts", trials: int = 1000, seed: int = 0) -> s.Dataset:
    """Rates ~ Beta(30, 70) (around 0.3), ``trials`` per variant."""
    if form != "counts":
        raise UserError("beta-binomial has no row-level form")
    variants = sizes["variants"]
    rng = np.random.default_rng(seed)
    successes = rng.binomial(trials, rng.beta(30, 70, variants))
    return dataset_from_counts([f"v{i}" for i in range(variants)], [trials] * variants, successes,
                               f"synthetic, {variants} variants x {trials} trials")


def _seed(variants: str, trials: list[int], successes: list[int], name: str) -> Scenario:
    return Scenario(
        f"{', '.join(variants)} with {'/'.join(map(str, trials))} trials and {'/'.join(map(str, successes))} successes",
        lambda: dataset_from_counts(list(variants), trials, successes, f"scenario {name}"),
    )


MODEL = BuiltinModel(
    name="beta-binomial",
    description="Hierarchical Beta-Binomial for multi-variant A/B tests, hyperprior (a+b)^-2.5",
    parametrizations=("marginal", "positive", "seed"),
    scenarios={
        "four-variants": _seed("ABCD", [100] * 4, [30, 50, 55, 60], "four-variants"),
        "small-a": _seed("ABCD", [10, 100, 100, 100], [3, 50, 55, 60], "small-a"),
        "two-variants": _seed("AB", [100, 100], [30, 50], "two-variants"),
    },
    build=build,
    read_csv=read_csv,
    csv_layouts=(",".join(COLUMNS),),
    exact_draws=beta_binomial_exact.exact_draws,
    shrinkage=shrinkage,
    scenario_contrast=("four-variants", "small-a"),
    contrast_variable="rates",
    sweeps=Sweeps(
        size_names=("variants",),
        synthetic=synthetic,
        quick=tuple(SweepLine({"variants": k}) for k in (4, 32, 256)),
        full=tuple(SweepLine({"variants": k}) for k in (4, 16, 64, 256, 1024)),
    ),
)
