"""logit-gradient: logistic likelihoods by their log-odds, with a wrong gradient where the
log density is right.

PyMC 6.3's ``Bernoulli(logit_p=eta)`` goes through the probability: past a log-odds of about
36 the probability of a 0 rounds to 0 and the gradient of ``log(1 - p)`` to 0 (the true value
is -1), so a logistic regression with well-separated rows samples on a gradient that says
those rows do not matter. NumPyro 0.22's ``BernoulliLogits``/``BinomialLogits`` take ``clip``
and ``abs`` of the log-odds, whose gradients JAX takes one-sided at 0: at a log-odds of
exactly 0 the gradient is off by n/2. Found by the Stan front end's translation check on
posteriordb's ``wells_data-wells_dist`` (log-odds up to 67). Each backend is measured the
same way: the gradient in ``eta`` of ``y ~ bernoulli_logit(eta)`` (y = 0) and
``k ~ binomial_logit(5, eta)`` (k = 2) against the closed form ``(y - p) + (k - 5 p)``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy.special import expit

from polyppl import spec as s
from polyppl.backends import get_backend
from polyppl.studies.repro.base import NOT_REPRODUCED, REPRODUCED, BackendResult, RunOptions, Scenario, versions

#: Log-odds where the faults show: exactly 0 (NumPyro), and past 36 (PyMC), wells' 67 included.
LOG_ODDS = (-40.0, -1.0, 0.0, 1.0, 20.0, 36.0, 37.0, 40.0, 67.0)
Y, TRIALS, SUCCESSES = 0, 5, 2
#: A gradient this far from the closed form is a fault (the backends agree to 1e-12 elsewhere).
TOLERANCE = 1e-8

FIX = ("write the log-pmf out from the log-odds, k * eta - n * softplus(eta) plus the binomial coefficient, whose "
       "gradient k - n * inv_logit(eta) is exact at every log-odds (what polyppl's compilers do)")


def closed_form(eta: float) -> float:
    p = float(expit(eta))
    return (Y - p) + (SUCCESSES - TRIALS * p)


def logit_model() -> tuple[s.Model, s.Dataset]:
    eta = s.Var("eta")
    model = s.Model("logit-gradient", (
        s.Param("eta", s.Flat()),
        s.Data("trials", "int", ("row",), lower=0),
        s.Observed("y", s.BernoulliLogit(eta), ("row",)),
        s.Observed("k", s.BinomialLogit(s.Var("trials"), eta), ("row",)),
    ))
    dataset = s.Dataset({"trials": np.array([TRIALS]), "y": np.array([Y]), "k": np.array([SUCCESSES])}, {"row": ("0",)})
    return model, dataset


def _errors(gradient: Callable[[float], float]) -> dict[float, float]:
    return {eta: gradient(eta) - closed_form(eta) for eta in LOG_ODDS}


def _line(label: str, gradients: dict[float, float]) -> str:
    worst = max(gradients, key=lambda e: abs(gradients[e] - closed_form(e)))
    shown = ", ".join(f"{e:g}: {gradients[e]:.10g} (exact {closed_form(e):.10g})" for e in LOG_ODDS
                      if abs(gradients[e] - closed_form(e)) > TOLERANCE) or "every one exact to 1e-8"
    return f"{label}: d/d eta at log-odds {shown}; worst at {worst:g}, off by {abs(gradients[worst] - closed_form(worst)):.3g}"


def polyppl_gradients(backend: str, engine: str | None) -> dict[float, float]:
    """The gradient of polyppl's compiled model for ``backend`` at every :data:`LOG_ODDS`."""
    model, dataset = logit_model()
    density = get_backend(backend).compile(model, dataset, engine=engine).log_density()
    return {eta: float(np.ravel(density({"eta": np.asarray(eta)})[1]["eta"])[0]) for eta in LOG_ODDS}


def _result(backend: str, opts: RunOptions, own: dict[float, float] | None, own_label: str, cause: str,
            fixed: dict[float, float] | None = None) -> BackendResult:
    fixed = fixed if fixed is not None else polyppl_gradients(backend, opts.engine(backend))
    fixed_worst = max(abs(g - closed_form(e)) for e, g in fixed.items())
    measurements: dict[str, Any] = {"log_odds": list(LOG_ODDS), "exact": [closed_form(e) for e in LOG_ODDS],
                                    "polyppl": [fixed[e] for e in LOG_ODDS]}
    if own is None:  # the backend's own density is what polyppl compiles to (Stan)
        return BackendResult(backend, REPRODUCED if fixed_worst > TOLERANCE else NOT_REPRODUCED,
                             [_line(own_label, fixed)], cause, measurements=measurements,
                             versions=versions(backend, opts))
    own_worst = max(abs(g - closed_form(e)) for e, g in own.items())
    measurements["library"] = [own[e] for e in LOG_ODDS]
    return BackendResult(
        backend, REPRODUCED if own_worst > TOLERANCE else NOT_REPRODUCED, [_line(own_label, own)], cause, FIX,
        [_line("polyppl's compiled model", fixed)], fixed_worst <= TOLERANCE, measurements, versions=versions(backend, opts))


def _pymc(opts: RunOptions) -> BackendResult:
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    eta = pt.dscalar("eta")
    logp = (pm.logp(pm.Bernoulli.dist(logit_p=eta), Y)
            + pm.logp(pm.Binomial.dist(n=TRIALS, logit_p=eta), SUCCESSES))
    gradient = pytensor.function([eta], pytensor.grad(logp, eta))
    own = {e: float(gradient(e)) for e in LOG_ODDS}
    return _result("pymc", opts, own, "PyMC's Bernoulli(logit_p=eta) + Binomial(5, logit_p=eta)",
                   "PyMC computes these densities from p = inv_logit(eta): past a log-odds of about 36, 1 - p "
                   "rounds to 0 in float64, log(1 - p) is clipped and its gradient is 0 (exact: -1 per row); the "
                   "log density stays right, so nothing fails: NUTS just sees rows that no longer pull")


def _numpyro(opts: RunOptions) -> BackendResult:
    fixed = polyppl_gradients("numpyro", opts.engine("numpyro"))  # first: it sets JAX's 64-bit mode, as a fit does
    import jax
    import numpyro.distributions as dist

    def logp(eta):
        return (dist.BernoulliLogits(eta).log_prob(Y)
                + dist.BinomialLogits(eta, total_count=TRIALS).log_prob(SUCCESSES))

    gradient = jax.grad(logp)
    own = {e: float(gradient(e)) for e in LOG_ODDS}
    return _result("numpyro", opts, own, "NumPyro's BernoulliLogits(eta) + BinomialLogits(eta, 5)",
                   "NumPyro writes these log-pmfs with clip(eta, ...) and abs(eta) (a stable softplus); JAX's "
                   "gradients of both are one-sided at 0, so at a log-odds of exactly 0 the gradient is off by "
                   "n/2 per row (a start at 0, an intercept-only model at its initial point)", fixed)


def _stan(opts: RunOptions) -> BackendResult:
    return _result("stan", opts, None, "Stan's bernoulli_logit + binomial_logit (as polyppl compiles them)",
                   "Stan math computes these from the log-odds (log1p_exp and its gradient inv_logit): exact at "
                   "every log-odds here (stan-dev/math#3397 fixed a sign of bernoulli_logit's upper-tail "
                   "gradient in 2026-09, an error under 4e-9)")


SCENARIO = Scenario(
    "logit-gradient",
    "Logistic likelihoods by their log-odds: PyMC's gradient vanishes past log-odds 36, NumPyro's is off by n/2 at 0",
    "The gradient in eta of y ~ bernoulli_logit(eta) (y = 0) plus k ~ binomial_logit(5, eta) (k = 2) at log-odds "
    f"{', '.join(f'{e:g}' for e in LOG_ODDS)}, from each library's own distribution and from polyppl's compiled "
    "model, against the closed form (y - p) + (k - 5p).",
    (
        "posteriordb wells_data-wells_dist (log-odds up to 67): polyppl's translation check, 2026-12-07",
        "https://github.com/stan-dev/math/pull/3397 (Stan's own bernoulli_logit upper-tail gradient)",
    ),
    {"pymc": _pymc, "numpyro": _numpyro, "stan": _stan},
)
