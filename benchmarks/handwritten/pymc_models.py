"""The built-in models written by hand in PyMC."""

from __future__ import annotations

from functools import partial

import numpy as np
import pymc as pm

from polyppl.spec import Dataset


def multilevel_logistic(dataset: Dataset, parametrization: str) -> pm.Model:
    v = dataset.values
    coords = {"group": list(dataset.coords["group"])}
    with pm.Model(coords=coords) as model:
        mu_a = pm.StudentT("mu_a", nu=3, mu=0, sigma=1)
        sigma_a = pm.HalfNormal("sigma_a", 1)
        mu_b = pm.StudentT("mu_b", nu=3, mu=0, sigma=1)
        sigma_b = pm.HalfNormal("sigma_b", 1)
        if parametrization == "noncentered":
            a_z = pm.Normal("a_z", 0, 1, dims="group")
            a = pm.Deterministic("a", mu_a + sigma_a * a_z, dims="group")
            b_z = pm.Normal("b_z", 0, 1, dims="group")
            b = pm.Deterministic("b", mu_b + sigma_b * b_z, dims="group")
        else:
            a = pm.Normal("a", mu_a, sigma_a, dims="group")
            b = pm.Normal("b", mu_b, sigma_b, dims="group")
        pm.Deterministic("a_inv", pm.math.invlogit(a), dims="group")
        pm.Deterministic("fin", pm.math.invlogit(a + b), dims="group")
        group, treated = np.asarray(v["group_idx"]), np.asarray(v["treated"])
        logit_p = a[group] + b[group] * treated
        if "success" in v:
            pm.Bernoulli("success", logit_p=logit_p, observed=np.asarray(v["success"]))
        else:
            pm.Binomial("successes", n=np.asarray(v["trials"]), logit_p=logit_p, observed=np.asarray(v["successes"]))
    return model


def beta_binomial_marginal(dataset: Dataset) -> pm.Model:
    """The rates integrated out: successes ~ BetaBinomial(trials, a, b), with (a, b) sampled
    as logit_mean = log(a / b) and log_concentration = log(a + b); the hyperprior
    (a + b)^-2.5 times the Jacobian a * b of that change of variables as a Potential."""
    v = dataset.values
    with pm.Model(coords={"variant": list(dataset.coords["variant"])}) as model:
        logit_mean = pm.Flat("logit_mean")
        log_concentration = pm.Flat("log_concentration")
        a = pm.Deterministic("a", pm.math.exp(log_concentration) * pm.math.invlogit(logit_mean))
        b = pm.Deterministic("b", pm.math.exp(log_concentration) * pm.math.invlogit(-logit_mean))
        # log((a + b)^-2.5 * a * b) = -log_concentration / 2 + log inv_logit(u) + log inv_logit(-u)
        pm.Potential("hyperprior", -0.5 * log_concentration - pm.math.log1pexp(-logit_mean) - pm.math.log1pexp(logit_mean))
        pm.BetaBinomial("successes", n=v["trials"], alpha=a, beta=b, observed=v["successes"], dims="variant")
    return model


def beta_binomial_positive(dataset: Dataset) -> pm.Model:
    v = dataset.values
    with pm.Model(coords={"variant": list(dataset.coords["variant"])}) as model:
        a = pm.HalfFlat("a")
        b = pm.HalfFlat("b")
        pm.Potential("hyperprior", -2.5 * pm.math.log(a + b))
        rates = pm.Beta("rates", a, b, dims="variant")
        pm.Binomial("successes", n=v["trials"], p=rates, observed=v["successes"], dims="variant")
    return model


def eight_schools(dataset: Dataset) -> pm.Model:
    v = dataset.values
    with pm.Model(coords={"school": list(dataset.coords["school"])}) as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta_z = pm.Normal("theta_z", 0, 1, dims="school")
        theta = pm.Deterministic("theta", mu + tau * theta_z, dims="school")
        pm.Normal("y", theta, v["sigma"], observed=v["y"], dims="school")
    return model


#: (model, parametrization) -> function of the dataset.
MODELS = {
    ("multilevel-logistic", "noncentered"): partial(multilevel_logistic, parametrization="noncentered"),
    ("multilevel-logistic", "centered"): partial(multilevel_logistic, parametrization="centered"),
    ("beta-binomial", "marginal"): beta_binomial_marginal,
    ("beta-binomial", "positive"): beta_binomial_positive,
    ("eight-schools", "noncentered"): eight_schools,
}
