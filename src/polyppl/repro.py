"""``polyppl repro``: reproduce failures that users of PyMC, NumPyro and Stan report,
explain them, and run the fix.

Each scenario is declared once, through the specification wherever the failure is about
the model, and run on every backend it concerns. For each backend the report gives the
outcome (``reproduced``, ``not reproduced``, ``not applicable`` with the reason), the
evidence (the error as the backend printed it, or the diagnostics that show the failure),
the cause, the fix, and the evidence that the fix works, measured by running it.

Failures specific to one library (JAX's float32 default, PyTensor without a C compiler)
change process-wide settings, so they run in a child process.

This module is imported by the CLI to register its subcommand: keep backend, PyMC, JAX and
ArviZ imports inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from polyppl import spec as s
from polyppl.backends import BACKENDS
from polyppl.errors import UserError, unknown
from polyppl.jobs import check_backends

if TYPE_CHECKING:
    from polyppl.runner import RunResult
    from polyppl.settings import SamplerSettings

REPRODUCED, NOT_REPRODUCED, NOT_APPLICABLE = "reproduced", "not reproduced", "not applicable"
DEFAULT_SEEDS = 20

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- report


@dataclass
class BackendResult:
    """What one backend does with one scenario, and whether the fix works there."""

    backend: str
    outcome: str  # REPRODUCED, NOT_REPRODUCED or NOT_APPLICABLE
    evidence: list[str]
    cause: str
    fix: str = ""
    fix_evidence: list[str] = field(default_factory=list)
    #: Whether the fix, run, removed the failure; None where no fix was run.
    fix_works: bool | None = None
    #: The numbers behind the evidence (failure counts, divergences, ESS), for tests and JSON.
    measurements: dict[str, Any] = field(default_factory=dict)
    #: Why the scenario does not apply to this backend (only with NOT_APPLICABLE).
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class ReproReport:
    scenario: str
    title: str
    description: str
    sources: list[str]
    settings: dict[str, Any]
    results: list[BackendResult]

    def result(self, backend: str) -> BackendResult:
        return next(r for r in self.results if r.backend == backend)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=_json_default)

    def text(self) -> str:
        width = 100
        lines = [f"{self.scenario}: {self.title}", ""]
        lines += textwrap.wrap(self.description, width)
        lines += ["", "Reported in:"] + [f"  {source}" for source in self.sources]
        lines.append(f"Settings: {', '.join(f'{k}={v}' for k, v in self.settings.items())}")
        for r in self.results:
            versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
            lines += ["", f"== {r.backend}{f' ({versions})' if versions else ''}: {r.outcome.upper()}"]
            if r.outcome == NOT_APPLICABLE:
                lines += _indented(f"reason: {r.reason}", width)
            if r.evidence:
                lines.append("  evidence:")
                lines += [line for item in r.evidence for line in _indented(item, width, "    ")]
            if r.cause:
                lines += _indented(f"cause: {r.cause}", width)
            if r.fix:
                lines += _indented(f"fix: {r.fix}", width)
                verdict = {True: "the fix works", False: "THE FIX DID NOT WORK", None: "not run"}[r.fix_works]
                lines.append(f"  fix, run ({verdict}):")
                lines += [line for item in r.fix_evidence for line in _indented(item, width, "    ")]
        return "\n".join(lines)


def _indented(text: str, width: int, prefix: str = "  ") -> list[str]:
    out = []
    for paragraph in text.splitlines() or [""]:
        out += textwrap.wrap(paragraph, width, initial_indent=prefix, subsequent_indent=prefix + "  ") or [prefix]
    return out


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@dataclass(frozen=True)
class RunOptions:
    """How big the runs are. ``seeds`` only matters where the failure depends on the seed."""

    seeds: int = DEFAULT_SEEDS
    chains: int = 2
    draws: int = 200
    tune: int = 200

    def settings(self, **overrides: Any) -> SamplerSettings:
        from polyppl.settings import SamplerSettings

        return SamplerSettings(**{"chains": self.chains, "draws": self.draws, "tune": self.tune, "seed": 1, **overrides})


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    sources: tuple[str, ...]
    #: backend -> function running the scenario there (backends it does not concern are
    #: answered by ``not_applicable``).
    runners: dict[str, Callable[[RunOptions], BackendResult]]
    not_applicable: dict[str, str] = field(default_factory=dict)


def _versions(backend: str) -> dict[str, str]:
    from polyppl.backends import load

    return load(backend).versions()


def _first_line(message: str, limit: int = 240) -> str:
    line = " ".join(message.strip().split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _share(count: int, total: int) -> str:
    return f"{count} of {total} ({100 * count / total:.0f}%)"


# --------------------------------------------------------------------------- shared runs


def _run(model: s.Model, dataset: s.Dataset, backend: str, settings: SamplerSettings) -> RunResult:
    """Sample through the normal runner and summarise (same diagnostics on every backend)."""
    from polyppl.runner import sample, summarize

    return summarize(sample(model, dataset, backend, settings))


def _diagnostics_line(label: str, result: RunResult, keys: Sequence[str] = ()) -> str:
    d = result.diagnostics
    parts = [
        f"{d.divergences} divergences ({100 * d.divergence_rate:.1f}% of draws)",
        f"tree depth at max in {100 * d.tree_depth_saturation:.0f}% of draws",
        f"max R-hat {d.rhat_max:.3f}",
        f"min bulk ESS {d.ess_bulk_min:.0f}",
    ]
    for key in keys:
        q = result.summaries[key]
        parts.append(f"{key} mean {q['mean']:.3g} [5% {q['q05']:.3g}, 95% {q['q95']:.3g}] (bulk ESS {q['ess_bulk']:.0f})")
    return f"{label}: " + "; ".join(parts)


def _measure(result: RunResult, keys: Sequence[str] = ()) -> dict[str, Any]:
    d = result.diagnostics
    out: dict[str, Any] = {
        "divergences": d.divergences,
        "divergence_rate": d.divergence_rate,
        "tree_depth_saturation": d.tree_depth_saturation,
        "max_tree_depth_reached": int(result.idata.sample_stats["tree_depth"].values.max()),
        "rhat_max": d.rhat_max,
        "ess_bulk_min": d.ess_bulk_min,
    }
    for key in keys:
        q = result.summaries[key]
        out[key] = {m: q[m] for m in ("mean", "q05", "q50", "q95", "ess_bulk", "rhat")}
    return out


# =========================================================================== advi-init-inf-energy

SEED_TESTVAL = {"a": 1.0, "b": 1.0}  # the seed's DensityDist testval=[1.0, 1.0]


def _beta_binomial(parametrization: str, scenario: str) -> tuple[s.Model, s.Dataset]:
    from polyppl.models import get_model

    builtin = get_model("beta-binomial")
    dataset = builtin.dataset(scenario)
    return builtin.spec(parametrization, dataset), dataset


def _pymc_model_with_seed_testval(model: s.Model, dataset: s.Dataset):
    """The PyMC model with a = b = 1 as starting values. PyMC's ADVI starts from the model's
    initial point and ignores ``pm.sample(initvals=...)``; the seed set them as testval."""
    from polyppl.backends import pymc_backend

    pymc_model = pymc_backend.build(model, dataset)
    for name, value in SEED_TESTVAL.items():
        pymc_model.set_initval(pymc_model[name], value)
    return pymc_model


def _pymc_advi_runs(model: s.Model, dataset: s.Dataset, opts: RunOptions) -> list[dict[str, Any]]:
    """PyMC's own NUTS initialised by ADVI, once per seed: the error, or the divergences."""
    import logging

    import pymc as pm
    from pymc.exceptions import SamplingError

    logging.getLogger("pymc").setLevel(logging.ERROR)
    pymc_model = _pymc_model_with_seed_testval(model, dataset)
    runs = []
    for seed in range(opts.seeds):
        try:
            with pymc_model:
                idata = pm.sample(
                    draws=opts.draws, tune=opts.tune, chains=opts.chains, cores=1, random_seed=seed,
                    # Pinned: newer PyMC may choose another NUTS implementation by default.
                    nuts_sampler="pymc", init="advi",
                    progressbar=False, compute_convergence_checks=False,
                )
        except (SamplingError, FloatingPointError) as exc:
            runs.append({"seed": seed, "error": f"{type(exc).__name__}: {exc}"})
        else:
            runs.append({"seed": seed, "error": None, "divergences": int(idata.sample_stats["diverging"].sum())})
    return runs


def _advi_mass_outside_support(model: s.Model, dataset: s.Dataset, seed: int = 0) -> dict[str, float]:
    """The ADVI fit that ``pm.sample(init="advi")`` makes (same optimiser and stopping rule),
    and the share of its Gaussian that lies where a <= 0 or b <= 0. NUTS starts each chain
    at a draw from it."""
    import pymc as pm

    pymc_model = _pymc_model_with_seed_testval(model, dataset)
    with pymc_model:
        approx = pm.fit(
            n=200_000, method="advi", random_seed=seed, progressbar=False, obj_optimizer=pm.adagrad_window,
            callbacks=[
                pm.callbacks.CheckParametersConvergence(tolerance=1e-2, diff="absolute"),
                pm.callbacks.CheckParametersConvergence(tolerance=1e-2, diff="relative"),
            ],
        )
    draws = approx.sample(draws=4000, random_seed=seed, return_inferencedata=False)
    a, b = np.asarray(draws["a"]), np.asarray(draws["b"])
    return {
        "a_mean": float(a.mean()), "a_sd": float(a.std()), "b_mean": float(b.mean()), "b_sd": float(b.std()),
        "share_outside_support": float(np.mean((a <= 0) | (b <= 0))),
    }


def _failures(runs: list[dict[str, Any]], text: str = "") -> int:
    return sum(1 for r in runs if r["error"] is not None and text in r["error"])


def _advi_pymc(opts: RunOptions) -> BackendResult:
    counts, runs_by_case, mass = {}, {}, {}
    for case, parametrization, scenario in (
        ("two variants, seed declaration", "seed", "two-variants"),
        ("four variants, seed declaration", "seed", "four-variants"),
        ("two variants, a and b positive", "positive", "two-variants"),
    ):
        model, dataset = _beta_binomial(parametrization, scenario)
        runs = _pymc_advi_runs(model, dataset, opts)
        runs_by_case[case] = runs
        counts[case] = {"failures": _failures(runs), "bad_initial_energy": _failures(runs, "Bad initial energy")}
        if parametrization == "seed":
            mass[scenario] = _advi_mass_outside_support(model, dataset)

    def case_line(case: str) -> str:
        runs = runs_by_case[case]
        ok = [r for r in runs if r["error"] is None]
        divergences = f"; the runs that started had {np.mean([r['divergences'] for r in ok]):.0f} divergences on average" if ok else ""
        return f"{case}: {_share(counts[case]['failures'], len(runs))} seeds fail{divergences}"

    two, four, fixed = "two variants, seed declaration", "four variants, seed declaration", "two variants, a and b positive"
    first_error = next((r for r in runs_by_case[two] if r["error"]), None)
    evidence = [case_line(two)]
    if first_error:
        evidence.append(f"seed {first_error['seed']}: {_first_line(first_error['error'], 300)}")
    evidence.append(case_line(four))
    evidence += [
        f"ADVI's Gaussian, {name.replace('-', ' ')}: a {m['a_mean']:.2f} ± {m['a_sd']:.2f}, b {m['b_mean']:.2f} ± {m['b_sd']:.2f}; "
        f"{100 * m['share_outside_support']:.0f}% of it lies where a <= 0 or b <= 0"
        for name, m in mass.items()
    ]
    reproduced = counts[two]["bad_initial_energy"] > 0
    return BackendResult(
        backend="pymc",
        outcome=REPRODUCED if reproduced else NOT_REPRODUCED,
        evidence=evidence,
        cause=(
            "a and b have no support transform, so ADVI fits a Gaussian to them on the whole real line; the fit stays "
            "near the start a = b = 1 with a standard deviation about as large as its mean (the posterior of a lies "
            "around 3 to 8), where draws with a <= 0 or b <= 0 have log density minus infinity. NUTS starts "
            "each chain at a draw from that Gaussian; a draw outside the support has infinite energy and PyMC stops "
            "with 'Bad initial energy'. With two variants the fit is wider and closer to zero, so more of it lies "
            "outside the support than with four."
        ),
        fix="declare a and b positive (HalfFlat, sampled on the log scale: parametrization 'positive'); the "
        "hyperprior becomes the factor -2.5 log(a + b) and every unconstrained point is inside the support",
        fix_evidence=[case_line(fixed)],
        fix_works=counts[fixed]["failures"] == 0,
        measurements={"seeds": opts.seeds, "chains": opts.chains, "runs": counts, "advi_fit": mass},
        versions=_versions("pymc"),
    )


def _numpyro_init_runs(
    model: s.Model, dataset: s.Dataset, opts: RunOptions, sample_from: str
) -> dict[str, dict[str, Any]]:
    """NumPyro's initialisation of one chain from each of its init strategies (the default
    one over ``opts.seeds`` seeds), done as NUTS does it; then NUTS from the strategy named
    ``sample_from``, for its divergences."""
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_feasible, init_to_median, init_to_uniform, init_to_value
    from numpyro.infer.util import initialize_model

    from polyppl.backends import numpyro_backend

    model_fn = numpyro_backend.build(model, dataset)
    strategies = {
        DEFAULT_NUMPYRO_INIT: (init_to_uniform(radius=2.0), opts.seeds),
        "init_to_median": (init_to_median(), 1),
        "init_to_feasible": (init_to_feasible(), 1),
        SEED_START: (init_to_value(values=SEED_TESTVAL), 1),
    }
    out = {}
    for label, (strategy, seeds) in strategies.items():
        errors, started = [], []
        for seed in range(seeds):
            try:
                initialize_model(jax.random.PRNGKey(seed), model_fn, init_strategy=strategy)
            except (ValueError, RuntimeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                started.append(seed)
        out[label] = {"seeds": seeds, "failures": len(errors), "first_error": errors[0] if errors else None}
        if label == sample_from and started:
            mcmc = MCMC(NUTS(model_fn, init_strategy=strategy), num_warmup=opts.tune, num_samples=opts.draws,
                        num_chains=opts.chains, chain_method="vectorized", progress_bar=False)
            for seed in started:
                try:  # every chain must start; one seed's first chain starting is not enough
                    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",))
                except (ValueError, RuntimeError):
                    continue
                out[label]["divergences"] = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
                out[label]["chains"] = opts.chains
                break
    return out


DEFAULT_NUMPYRO_INIT = "init_to_uniform(radius=2) (NumPyro's and polyppl's default)"
SEED_START = "init_to_value(a=1, b=1)"


def _init_line(label: str, run: dict[str, Any]) -> str:
    if run["seeds"] > 1:
        head = f"{label}: {_share(run['failures'], run['seeds'])} seeds fail to start"
    else:
        head = f"{label}: {'fails' if run['failures'] else 'starts'}"
    error = f": {_first_line(run['first_error'])}" if run["first_error"] else ""
    divergences = (f"; NUTS from the first seed whose chains all start: {run['divergences']} divergences in "
                   f"{run['chains']} chains" if "divergences" in run else "")
    return head + error + divergences


def _advi_numpyro(opts: RunOptions) -> BackendResult:
    # The seed model samples only from the seed's own start; the fix from the default one.
    seed_runs = _numpyro_init_runs(*_beta_binomial("seed", "two-variants"), opts, SEED_START)
    fixed_runs = _numpyro_init_runs(*_beta_binomial("positive", "two-variants"), opts, DEFAULT_NUMPYRO_INIT)
    return BackendResult(
        backend="numpyro",
        outcome=REPRODUCED if seed_runs[DEFAULT_NUMPYRO_INIT]["failures"] else NOT_REPRODUCED,
        evidence=["NumPyro has no ADVI initialisation for NUTS; the seed model (two variants) fails to start from "
                  "its own init strategies instead, with another message:"]
        + [_init_line(k, v) for k, v in seed_runs.items()],
        cause=(
            "NumPyro validates distribution arguments by default. Without a transform its init strategies put a "
            "and b on their own scale (uniform in (-2, 2); exactly 0 for init_to_feasible), and building "
            "Beta(a, b) at a start with a <= 0 or b <= 0 raises before sampling. From the seed's a = b = 1 it "
            "starts, but trajectories that cross a = 0 meet minus infinity and are counted as divergent."
        ),
        fix="declare a and b positive (parametrization 'positive')",
        fix_evidence=["positive parametrization (two variants) from each init strategy:"]
        + [_init_line(k, v) for k, v in fixed_runs.items()],
        fix_works=all(r["failures"] == 0 for r in fixed_runs.values()),
        measurements={"seed": seed_runs, "positive": fixed_runs},
        versions=_versions("numpyro"),
    )


def _pystan_runs(model: s.Model, dataset: s.Dataset, chains: int, opts: RunOptions) -> dict[str, Any]:
    """PyStan's NUTS from its random inits, with the messages Stan printed while initialising."""
    import stan

    from polyppl.backends.stan_backend import captured_output
    from polyppl.backends.stan_program import stan_data, stan_program

    with captured_output():
        posterior = stan.build(stan_program(model), data=stan_data(model, dataset), random_seed=1)
        fit = posterior.sample(num_chains=chains, num_samples=opts.draws, num_warmup=opts.tune)
    messages = []
    for output in fit.stan_outputs:
        for line in output.decode("utf-8", "replace").splitlines():
            record = json.loads(line)
            if record.get("topic") == "logger":
                messages += [str(v).split(":", 1)[-1] for v in record.get("values", [])]
    rejections = [m for m in messages if "Rejecting initial value" in m]
    reasons = [m.strip() for m in messages if m.strip().startswith("Exception")]
    frame = fit.to_frame()
    return {
        "chains": chains,
        "rejected_initial_values": len(rejections),
        "first_rejection_reason": reasons[0] if reasons else None,
        "divergences": int(frame["divergent__"].sum()),
    }


def _stan_line(label: str, run: dict[str, Any]) -> str:
    reason = f" ({_first_line(run['first_rejection_reason'], 200)})" if run["first_rejection_reason"] else ""
    return (f"{label}: {run['chains']} chains start from random inits; Stan rejected {run['rejected_initial_values']} "
            f"initial values{reason} and retried; sampling ran, {run['divergences']} divergences")


def _stan_advi_lines(model: s.Model, dataset: s.Dataset, opts: RunOptions) -> tuple[list[str], int | None]:
    """ADVI initialisation through cmdstanpy where CmdStan is installed (PyStan 3 has none)."""
    from polyppl.backends import stan_backend

    if not stan_backend.cmdstan_path():
        return ["ADVI initialisation: not applicable here: PyStan 3 has no ADVI and no CmdStan install was found"], None
    failures = 0
    for seed in range(opts.seeds):
        try:
            _run(model, dataset, "stan", opts.settings(seed=seed, init="advi", stan_engine="cmdstanpy"))
        except RuntimeError:
            failures += 1
    return [f"ADVI initialisation (cmdstanpy): {_share(failures, opts.seeds)} seeds fail"], failures


def _advi_stan(opts: RunOptions) -> BackendResult:
    seed_model = _beta_binomial("seed", "two-variants")
    fixed_model = _beta_binomial("positive", "two-variants")
    seed_run = _pystan_runs(*seed_model, opts.chains, opts)
    fixed_run = _pystan_runs(*fixed_model, opts.chains, opts)
    advi_lines, advi_failures = _stan_advi_lines(*seed_model, opts)
    return BackendResult(
        backend="stan",
        outcome=REPRODUCED if advi_failures else NOT_REPRODUCED,
        evidence=[_stan_line("seed declaration, two variants", seed_run), *advi_lines],
        cause=(
            "Stan draws inits uniformly in (-2, 2) on the unconstrained scale, which for a and b without bounds is "
            "their own scale, so many land at a <= 0 or b <= 0; Stan rejects each such init with the message above "
            "and draws again (up to 100 times) instead of failing. During sampling, proposals that cross a = 0 are "
            "rejected and reported as divergences."
        ),
        fix="declare a and b with <lower=0> (parametrization 'positive')",
        fix_evidence=[_stan_line("positive parametrization, two variants", fixed_run)],
        fix_works=fixed_run["rejected_initial_values"] == 0,
        measurements={"seed": seed_run, "positive": fixed_run, "advi_failures": advi_failures},
        versions=_versions("stan"),
    )


# =========================================================================== centered-funnel

FUNNEL_CASES = (
    # (model, scenario, group-scale quantities)
    ("multilevel-logistic", "seed", ("sigma_a", "sigma_b")),
    ("eight-schools", "classic", ("tau",)),
)


def _funnel(backend: str, opts: RunOptions) -> BackendResult:
    from polyppl.models import get_model

    settings = opts.settings(draws=max(opts.draws, 500), tune=max(opts.tune, 500))
    evidence, fix_evidence, measurements = [], [], {}
    reproduced, fixed = True, True
    for model_name, scenario, scales in FUNNEL_CASES:
        builtin = get_model(model_name)
        dataset = builtin.dataset(scenario)
        centered = _run(builtin.spec("centered", dataset), dataset, backend, settings)
        noncentered = _run(builtin.spec("noncentered", dataset), dataset, backend, settings)
        evidence.append(_diagnostics_line(f"{model_name}, centered", centered, scales))
        fix_evidence.append(_diagnostics_line(f"{model_name}, non-centered", noncentered, scales))
        for scale in scales:
            c, n = centered.summaries[scale], noncentered.summaries[scale]
            evidence.append(
                f"{model_name}: {scale} 5% quantile {c['q05']:.3g} centered against {n['q05']:.3g} non-centered"
            )
        measurements[model_name] = {"centered": _measure(centered, scales), "noncentered": _measure(noncentered, scales)}
        reproduced &= centered.diagnostics.divergences > noncentered.diagnostics.divergences
        fixed &= noncentered.diagnostics.divergence_rate < 0.01
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if reproduced else NOT_REPRODUCED,
        evidence=evidence,
        cause=(
            "In the centered form the group effects are drawn around mu with scale sigma; with few groups the data "
            "barely pin sigma down, and as sigma shrinks the group effects are squeezed together: a funnel whose "
            "neck needs a far smaller step size than its mouth. NUTS adapts to the mouth, diverges in the neck and "
            "never samples it, so small values of the group scale are under-represented and its posterior is biased "
            "upward."
        ),
        fix="non-center: effect = mu + sigma * z with z ~ Normal(0, 1) (parametrization 'noncentered'), which "
        "removes the dependence between the scale and the sampled variables",
        fix_evidence=fix_evidence,
        fix_works=fixed,
        measurements={**measurements, "draws": settings.draws, "tune": settings.tune, "chains": settings.chains},
        versions=_versions(backend),
    )


# =========================================================================== improper-flat-scale

TWO_SCHOOLS = {"school": ("A", "B"), "y": (28.0, 8.0), "sigma": (15.0, 10.0)}


def two_groups_model(scale_prior: str) -> s.Model:
    """Two groups, flat prior on the mean; the group scale flat (``flat``: improper
    posterior) or half-Cauchy (``half-cauchy``: proper). Non-centered, so that no funnel
    hides the problem."""
    tau_prior = s.HalfFlat() if scale_prior == "flat" else s.HalfCauchy(5.0)
    model = s.Model(
        f"two-groups-{scale_prior}-scale",
        (
            s.Data("sigma", "real", ("school",), lower=0.0),
            s.Param("mu", s.Flat()),
            s.Param("tau", tau_prior),
            s.Param("theta", s.Normal(s.Var("mu"), s.Var("tau")), ("school",)),
            s.Observed("y", s.Normal(s.Var("theta"), s.Var("sigma")), ("school",)),
        ),
        description=f"Two groups, mu flat, tau {scale_prior}.",
    )
    return s.noncentered(model, ["theta"])


def two_groups_dataset() -> s.Dataset:
    return s.Dataset(
        {"y": np.asarray(TWO_SCHOOLS["y"]), "sigma": np.asarray(TWO_SCHOOLS["sigma"])},
        {"school": TWO_SCHOOLS["school"]},
        source="the first two of the eight schools",
    )


def _improper(backend: str, opts: RunOptions) -> BackendResult:
    dataset = two_groups_dataset()
    settings = opts.settings(draws=max(opts.draws, 500), tune=max(opts.tune, 500))
    flat = _run(two_groups_model("flat"), dataset, backend, settings)
    proper = _run(two_groups_model("half-cauchy"), dataset, backend, settings)
    tau_flat, tau_proper = flat.summaries["tau"], proper.summaries["tau"]
    # The posterior of tau has a tail like 1/tau: the draws wander to ever larger values,
    # the chains disagree, and the 95% quantile is nowhere near the data's scale (tens).
    reproduced = tau_flat["q95"] > 1000 or tau_flat["rhat"] > 1.05
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if reproduced else NOT_REPRODUCED,
        evidence=[_diagnostics_line("tau ~ HalfFlat", flat, ("tau",))],
        cause=(
            "With a flat prior on mu, integrating mu out leaves a likelihood for tau that falls like tau^-(J-1); with "
            "J = 2 groups that is 1/tau, so a flat prior on tau gives a posterior whose integral diverges. There is "
            "no posterior to sample: the chains drift to ever larger tau and disagree, and no warning says why."
        ),
        fix="a proper prior on the group scale, tau ~ HalfCauchy(5) (or more groups: a flat prior on tau needs at "
        "least 3 groups with mu flat)",
        fix_evidence=[_diagnostics_line("tau ~ HalfCauchy(5)", proper, ("tau",))],
        fix_works=tau_proper["rhat"] < 1.05 and tau_proper["q95"] < 1000,
        measurements={"flat": _measure(flat, ("tau",)), "half_cauchy": _measure(proper, ("tau",))},
        versions=_versions(backend),
    )


# =========================================================================== tree-depth-unscaled

PREDICTOR_OFFSET = 5000.0


def regression_model() -> s.Model:
    """y ~ Normal(alpha + beta * x, sigma), with priors wide enough not to matter."""
    return s.Model(
        "linear-regression",
        (
            s.Data("x", "real", ("obs",)),
            s.Param("alpha", s.Normal(0.0, 10000.0)),
            s.Param("beta", s.Normal(0.0, 10.0)),
            s.Param("sigma", s.HalfNormal(5.0)),
            s.Observed("y", s.Normal(s.Var("alpha") + s.Var("beta") * s.Var("x"), s.Var("sigma")), ("obs",)),
        ),
        description="Linear regression with one predictor.",
    )


def regression_dataset(centered: bool) -> s.Dataset:
    """50 points with x in 5000..5010 (a year, a price): the intercept, at x = 0, lies far
    outside the data. ``centered`` subtracts the mean of x, which changes only the data."""
    rng = np.random.default_rng(20240)
    x = PREDICTOR_OFFSET + rng.uniform(0.0, 10.0, size=50)
    y = 1.0 + 0.5 * (x - PREDICTOR_OFFSET) + rng.normal(0.0, 1.0, size=50)
    return s.Dataset(
        {"x": x - x.mean() if centered else x, "y": y},
        {"obs": tuple(range(50))},
        source="simulated, x centered" if centered else "simulated, x in 5000..5010",
    )


TREE_DEPTH_LIMIT = 8


def _stuck_on_ridge(result: RunResult) -> bool:
    """Chains that disagree (R-hat far above 1) and trajectories that stop short: at the
    maximum tree depth, or diverging. Stan and NumPyro saturate on most draws; PyMC's
    adaptation lands on a larger step on some seeds and CPUs (measured here, seeds 1-5:
    saturation 0-57%, divergences 0-18% of draws, R-hat 1.7-2.7 on every seed), so either
    symptom counts."""
    d = result.diagnostics
    return d.rhat_max > 1.1 and (d.tree_depth_saturation > 0.25 or d.divergence_rate > 0.05)


def _tree_depth(backend: str, opts: RunOptions) -> BackendResult:
    model = regression_model()
    # A lower cap than the usual 10 keeps PyMC's saturated run short; the unscaled model
    # needs more than 2^10 steps per draw, so it saturates either cap.
    settings = opts.settings(max_tree_depth=TREE_DEPTH_LIMIT)
    raw = _run(model, regression_dataset(centered=False), backend, settings)
    centered = _run(model, regression_dataset(centered=True), backend, settings)
    return BackendResult(
        backend=backend,
        outcome=REPRODUCED if _stuck_on_ridge(raw) else NOT_REPRODUCED,
        evidence=[_diagnostics_line(f"x around {PREDICTOR_OFFSET:.0f}, max tree depth {TREE_DEPTH_LIMIT}", raw, ("beta",))],
        cause=(
            "With x around 5000 the intercept and slope are almost perfectly correlated (|r| > 0.99999): the "
            "posterior is a long thin ridge. A diagonal mass matrix cannot rotate it, so the step size is set by the "
            "ridge's width and a trajectory needs thousands of steps to cross its length: draws hit the maximum "
            "tree depth, the chains crawl along the ridge, disagree (R-hat far above 1) and miss the slope. A step "
            "size adapted where the chain happened to be can also exceed what the ridge's narrow direction "
            "tolerates: those trajectories diverge instead (PyMC, on some seeds)."
        ),
        fix="center the predictor (x - mean(x)); the model is the same, the intercept becomes the mean of y at the "
        "mean of x, and the two parameters are nearly independent",
        fix_evidence=[_diagnostics_line("x centered", centered, ("beta",))],
        fix_works=centered.diagnostics.tree_depth_saturation == 0 and centered.diagnostics.rhat_max < 1.05,
        measurements={"raw": _measure(raw, ("beta",)), "centered": _measure(centered, ("beta",)),
                      "max_tree_depth": TREE_DEPTH_LIMIT},
        versions=_versions(backend),
    )


# =========================================================================== child processes


def _child(call: str, env: dict[str, str] | None = None, timeout: float = 600) -> tuple[dict[str, Any], str]:
    """Evaluate ``polyppl.repro.<call>`` (e.g. ``f(x=1)``) in a fresh interpreter; its JSON
    result and what it printed to stderr."""
    code = f"import json, polyppl.repro as r; print('RESULT ' + json.dumps(r.{call}))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        raise RuntimeError(f"child process {call} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(results[-1]), done.stderr


# =========================================================================== float32-jax


def big_counts_model() -> s.Model:
    return s.Model(
        "big-counts",
        (s.Param("log_rate", s.Normal(0.0, 20.0)), s.Observed("y", s.Poisson(s.exp(s.Var("log_rate"))), ("obs",))),
        description="Poisson counts of about two million.",
    )


def big_counts_dataset() -> s.Dataset:
    rng = np.random.default_rng(0)
    return s.Dataset({"y": rng.poisson(2e6, size=20)}, {"obs": tuple(range(20))}, source="simulated, 20 counts near 2e6")


def numpyro_precision_run(x64: bool | None = None) -> dict[str, Any]:
    """NumPyro's NUTS on the big-counts model in JAX's current precision (float64 once the
    numpyro backend is imported, unless ``x64`` is False), and the log density's rounding.
    Called in a child process for float32."""
    import arviz as az
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import potential_energy

    from polyppl.backends import numpyro_backend  # enables float64 on import

    if x64 is not None:
        jax.config.update("jax_enable_x64", x64)
    dataset = big_counts_dataset()
    model_fn = numpyro_backend.build(big_counts_model(), dataset)
    mcmc = MCMC(NUTS(model_fn), num_warmup=200, num_samples=200, num_chains=2, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), extra_fields=("diverging", "adapt_state.step_size"))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["log_rate"], dtype=float)
    fields = mcmc.get_extra_fields()
    # The log density near the mode, at points 1e-4 apart: float64 gives a smooth parabola,
    # float32 rounds it to steps of a few units.
    mode = float(np.log(np.mean(dataset.values["y"])))
    grid = mode + 1e-4 * np.arange(-3, 4)
    logp = [-float(potential_energy(model_fn, (), {}, {"log_rate": jnp.asarray(v)})) for v in grid]
    return {
        "dtype": str(jnp.asarray(1.0).dtype),
        "log_rate_mean": float(draws.mean()),
        "log_rate_sd": float(draws.std()),
        "rhat": float(az.rhat(draws)),
        "ess_bulk": float(az.ess(draws)),
        "divergences": int(np.asarray(fields["diverging"]).sum()),
        "step_size": float(np.mean(np.asarray(fields["adapt_state.step_size"]))),
        "exact_log_rate": mode,
        "logp_near_mode": logp,
    }


def _precision_line(label: str, run: dict[str, Any]) -> str:
    steps = np.diff(run["logp_near_mode"])
    return (f"{label} ({run['dtype']}): log_rate {run['log_rate_mean']:.4f} ± {run['log_rate_sd']:.2g} "
            f"(exact mode {run['exact_log_rate']:.4f}), R-hat {run['rhat']:.2f}, bulk ESS {run['ess_bulk']:.0f}, "
            f"adapted step size {run['step_size']:.2g}, {run['divergences']} divergences; log density changes "
            f"over steps of 1e-4 near the mode: {', '.join(f'{d:+.3g}' for d in steps)}")


def _float32(opts: RunOptions) -> BackendResult:
    float32, _ = _child("numpyro_precision_run(x64=False)")
    float64 = numpyro_precision_run()
    return BackendResult(
        backend="numpyro",
        outcome=REPRODUCED if float32["rhat"] > 1.1 and float64["rhat"] < 1.05 else NOT_REPRODUCED,
        evidence=[_precision_line("JAX's default precision", float32)],
        cause=(
            "JAX computes in float32 unless told otherwise, which keeps about 7 significant digits. Each term of the "
            "Poisson log density (y log rate, rate, log y!) is about 3e7, so the sum is rounded to steps of several "
            "units: the energy NUTS compares is noise, step size adaptation collapses, and the chains stay where "
            "they started."
        ),
        fix="enable 64-bit floats before any JAX array is made: jax.config.update('jax_enable_x64', True) or "
        "JAX_ENABLE_X64=1 (polyppl's NumPyro backend does this), or reparametrize so the log density is small",
        fix_evidence=[_precision_line("jax_enable_x64", float64)],
        fix_works=float64["rhat"] < 1.05,
        measurements={"float32": float32, "float64": float64},
        versions=_versions("numpyro"),
    )


# =========================================================================== pytensor-no-compiler


def pymc_gradient_speed() -> dict[str, Any]:
    """Seconds per log-density gradient of eight schools in PyMC, and a short sampling run,
    with whatever C compiler PyTensor finds in this process. Called in child processes."""
    import logging
    import time

    import pymc as pm
    import pytensor
    from pymc.blocking import DictToArrayBijection

    from polyppl.backends import pymc_backend
    from polyppl.models import get_model

    logging.getLogger("pymc").setLevel(logging.ERROR)
    builtin = get_model("eight-schools")
    dataset = builtin.dataset()
    pymc_model = pymc_backend.build(builtin.spec("noncentered", dataset), dataset)
    logp_dlogp = pymc_model.logp_dlogp_function(ravel_inputs=True)
    point = DictToArrayBijection.map(pymc_model.initial_point()).data
    calls = 1000
    start = time.perf_counter()
    for _ in range(calls):
        logp_dlogp._pytensor_function(point)
    per_gradient = (time.perf_counter() - start) / calls
    with pymc_model:
        idata = pm.sample(draws=100, tune=100, chains=2, cores=1, random_seed=1, nuts_sampler="pymc",
                          progressbar=False, compute_convergence_checks=False)
    return {
        "cxx": pytensor.config.cxx,
        "seconds_per_gradient": per_gradient,
        "sampling_seconds": float(idata.sample_stats.attrs["sampling_time"]),
    }


def _speed_line(label: str, run: dict[str, Any]) -> str:
    return (f"{label} (cxx={run['cxx']!r}): {1e6 * run['seconds_per_gradient']:.0f} µs per gradient; "
            f"2 chains x 200 iterations of eight schools in {run['sampling_seconds']:.2f} s")


def _no_compiler(opts: RunOptions) -> BackendResult:
    # PyTensor looks for g++ on PATH when it is imported; an empty PATH is a machine without one.
    with tempfile.TemporaryDirectory() as empty:
        without, stderr = _child("pymc_gradient_speed()", {"PATH": empty})
    with_compiler, _ = _child("pymc_gradient_speed()")
    warning = next((line for line in stderr.splitlines() if "g++ not detected" in line or "g++ not available" in line), "")
    slowdown = without["seconds_per_gradient"] / with_compiler["seconds_per_gradient"]
    return BackendResult(
        backend="pymc",
        outcome=REPRODUCED if warning and slowdown > 5 else NOT_REPRODUCED,
        evidence=[_first_line(warning or "(no warning printed)", 300), _speed_line("no C++ compiler on PATH", without)],
        cause=(
            "PyTensor compiles each model's log density to C with g++; when it finds none it warns once at import "
            "and runs every operation through its Python implementations, which still give the right numbers, so "
            "nothing fails: sampling is just tens of times slower."
        ),
        fix="install a C++ compiler (conda: gxx / m2w64-toolchain on Windows) or point PyTensor at one "
        "(PYTENSOR_FLAGS=cxx=/path/to/g++)",
        fix_evidence=[_speed_line("g++ found", with_compiler), f"{slowdown:.0f} times faster per gradient"],
        fix_works=slowdown > 5,
        measurements={"without_compiler": without, "with_compiler": with_compiler, "slowdown": slowdown,
                      "warning": warning},
        versions=_versions("pymc"),
    )


# =========================================================================== registry


def _per_backend(run: Callable[[str, RunOptions], BackendResult]) -> dict[str, Callable[[RunOptions], BackendResult]]:
    return {b: (lambda opts, b=b: run(b, opts)) for b in BACKENDS}


SCENARIOS: dict[str, Scenario] = {
    sc.name: sc
    for sc in (
        Scenario(
            "advi-init-inf-energy",
            "NUTS initialised by ADVI fails with 'Bad initial energy' (seed Beta-Binomial, two variants)",
            "The seed's hierarchical Beta-Binomial with its hyperprior declared as the seed did: a and b on the whole "
            "real line, a density that is minus infinity where a <= 0 or b <= 0, no support transform, starting "
            "values a = b = 1. PyMC's own NUTS initialised with init='advi', run over many seeds with two and with "
            "four variants, then with a and b declared positive. NumPyro and Stan run the same model with their own "
            "initialisation.",
            (
                "seed blog post, comment of 2017-09-13: 'ValueError: Bad initial energy: inf. The model might be "
                "misspecified.' for 2 variants with ADVI initialisation",
                "https://github.com/pymc-devs/pymc/issues/3230 (many users get 'Bad initial energy')",
                "https://github.com/pymc-devs/pymc/issues/1764 (ADVI initialisation failing depending on the seed)",
            ),
            {"pymc": _advi_pymc, "numpyro": _advi_numpyro, "stan": _advi_stan},
        ),
        Scenario(
            "centered-funnel",
            "Centered hierarchical models: divergences and a biased group scale",
            "multilevel-logistic on the seed's two groups (Canada, China) and eight-schools, each centered and "
            "non-centered, on every backend: divergences, tree depth, ESS, and the posterior of the group scale.",
            (
                "https://github.com/pymc-devs/pymc/issues/1607 (hierarchical model does not converge; fixed by "
                "reparametrization)",
                "Betancourt and Girolami (2013), Hamiltonian Monte Carlo for hierarchical models, arXiv:1312.0906",
            ),
            _per_backend(_funnel),
        ),
        Scenario(
            "improper-flat-scale",
            "A flat prior on a group scale with two groups: an improper posterior that samples without error",
            "Two groups (the first two of the eight schools), mu flat, tau HalfFlat, non-centered: the posterior "
            "does not exist, yet every backend returns draws. The fix is a proper prior on tau.",
            (
                "https://github.com/maxisi/ringdown/pull/13 (a Flat prior makes the posterior improper: 'the sampler "
                "will diverge to infinity')",
                "https://github.com/pymc-devs/pymc/issues/3294 (HalfFlat prior on a rate)",
                "Gelman (2006), Prior distributions for variance parameters in hierarchical models",
            ),
            _per_backend(_improper),
        ),
        Scenario(
            "tree-depth-unscaled",
            "Maximum tree depth and stuck chains from an uncentered predictor",
            "Linear regression with x around 5000: intercept and slope nearly collinear. The chains crawl along "
            "the ridge and disagree on every backend; Stan and NumPyro saturate the maximum tree depth, PyMC "
            "saturates or diverges depending on the seed. Centering x (a change of data only) removes it.",
            (
                "https://github.com/bambinos/bambi/pull/697 (Bambi centers predictors because it mitigates posterior "
                "correlation and speeds up sampling)",
                "https://github.com/stan-dev/posterior/issues/77 (tree depth warnings and what they mean)",
            ),
            _per_backend(_tree_depth),
        ),
        Scenario(
            "float32-jax",
            "NumPyro in JAX's default float32: the log density is rounded and NUTS stalls",
            "Poisson counts of about two million, log rate with a Normal prior, run by NumPyro in float32 (JAX's "
            "default, in a child process) and in float64.",
            (
                "https://github.com/HajimeKawahara/exojax/issues/268 (divergences with FP32 in NumPyro, gone with "
                "jax_enable_x64)",
                "https://github.com/pyro-ppl/numpyro/issues/77 (float64 support)",
            ),
            {"numpyro": _float32},
            {
                "pymc": "PyTensor computes in float64 by default (floatX); the failure is JAX's float32 default",
                "stan": "Stan computes in double precision only",
            },
        ),
        Scenario(
            "pytensor-no-compiler",
            "PyTensor without a C++ compiler falls back to Python: no error, sampling tens of times slower",
            "Eight schools in PyMC, in a child process whose PATH has no g++, against one that finds it.",
            (
                "https://github.com/pymc-devs/pymc/issues/6562 (g++ not found on Windows: 'PyTensor will be unable "
                "to compile C-implementations and will default to Python')",
                "https://github.com/pymc-devs/pytensor/issues/234",
                "https://github.com/lnccbrown/HSSM/issues/204 (example takes forever to run)",
            ),
            {"pymc": _no_compiler},
            {
                "numpyro": "NumPyro compiles with XLA, which needs no system C++ compiler",
                "stan": "Stan cannot build a model at all without a C++ compiler; there is no slow fallback",
            },
        ),
    )
}


# =========================================================================== API


def run_repro(
    name: str,
    backends: Sequence[str] | None = None,
    seeds: int = DEFAULT_SEEDS,
    progress: Progress | None = None,
) -> ReproReport:
    """Run one scenario on the given backends (all by default) and report what happened.

    ``seeds``: how many seeds a seed-dependent failure is run over.
    """
    if name not in SCENARIOS:
        raise unknown("scenario", name, SCENARIOS)
    chosen = check_backends(backends)
    if not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"seeds must be a positive whole number, got {seeds!r}")
    scenario = SCENARIOS[name]
    opts = RunOptions(seeds=seeds)
    results = []
    for backend in chosen:
        if backend in scenario.runners:
            if progress:
                progress(f"{name}: running on {backend}")
            results.append(scenario.runners[backend](opts))
        else:
            results.append(BackendResult(backend, NOT_APPLICABLE, [], "", reason=scenario.not_applicable[backend]))
    return ReproReport(
        scenario=name,
        title=scenario.title,
        description=scenario.description,
        sources=list(scenario.sources),
        settings=asdict(opts),
        results=results,
    )


# =========================================================================== CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    from polyppl.cli import backend_list

    parser = subparsers.add_parser(
        "repro", help="reproduce failures users report, explain them, and run the fix",
        description="Without a name: list the scenarios. With one: run it on each backend.",
    )
    parser.add_argument("name", nargs="?", help="scenario to run (omit to list them)")
    parser.add_argument("--backends", type=backend_list, help=f"comma-separated subset of {','.join(BACKENDS)}")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"seeds for seed-dependent failures (default {DEFAULT_SEEDS})")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.set_defaults(func=cmd_repro)


def cmd_repro(args: argparse.Namespace) -> int:
    if args.name is None:
        for scenario in SCENARIOS.values():
            concerned = ", ".join(scenario.runners)
            print(f"{scenario.name}: {scenario.title} [{concerned}]")
        return 0
    if args.name not in SCENARIOS:
        raise unknown("scenario", args.name, SCENARIOS)
    check_backends(args.backends)

    def progress(line: str) -> None:
        print(f"polyppl: {line}", file=sys.stderr, flush=True)

    report = run_repro(args.name, args.backends, seeds=args.seeds, progress=progress)
    print(report.text())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json() + "\n")
        print(f"\nsaved: {args.json}")
    return 0


__all__ = ["BackendResult", "ReproReport", "SCENARIOS", "Scenario", "run_repro"]
