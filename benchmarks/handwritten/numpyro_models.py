"""The built-in models written by hand in NumPyro (plates, data passed as arguments)."""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from polyppl.spec import Dataset


def multilevel_logistic_model(group, treated, n_groups, noncentered, trials=None, successes=None, success=None) -> None:
    mu_a = numpyro.sample("mu_a", dist.StudentT(3.0, 0.0, 1.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
    mu_b = numpyro.sample("mu_b", dist.StudentT(3.0, 0.0, 1.0))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(1.0))
    with numpyro.plate("group", n_groups):
        if noncentered:
            a = numpyro.deterministic("a", mu_a + sigma_a * numpyro.sample("a_z", dist.Normal(0.0, 1.0)))
            b = numpyro.deterministic("b", mu_b + sigma_b * numpyro.sample("b_z", dist.Normal(0.0, 1.0)))
        else:
            a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
            b = numpyro.sample("b", dist.Normal(mu_b, sigma_b))
    numpyro.deterministic("a_inv", jax.nn.sigmoid(a))
    numpyro.deterministic("fin", jax.nn.sigmoid(a + b))
    logits = a[group] + b[group] * treated
    with numpyro.plate("data", group.shape[0]):
        if success is not None:
            numpyro.sample("success", dist.BernoulliLogits(logits), obs=success)
        else:
            numpyro.sample("successes", dist.BinomialLogits(logits, total_count=trials), obs=successes)


def beta_binomial_marginal_model(trials, successes=None) -> None:
    """The rates integrated out, (a, b) sampled as logit_mean = log(a / b) and
    log_concentration = log(a + b), the hyperprior's Jacobian a * b included."""
    logit_mean = numpyro.sample("logit_mean", dist.ImproperUniform(constraints.real, (), ()))
    log_concentration = numpyro.sample("log_concentration", dist.ImproperUniform(constraints.real, (), ()))
    a = numpyro.deterministic("a", jnp.exp(log_concentration) * jax.nn.sigmoid(logit_mean))
    b = numpyro.deterministic("b", jnp.exp(log_concentration) * jax.nn.sigmoid(-logit_mean))
    numpyro.factor("hyperprior", -0.5 * log_concentration - jax.nn.softplus(-logit_mean) - jax.nn.softplus(logit_mean))
    with numpyro.plate("variant", trials.shape[0]):
        numpyro.sample("successes", dist.BetaBinomial(a, b, trials), obs=successes)


def beta_binomial_positive_model(trials, successes=None) -> None:
    a = numpyro.sample("a", dist.ImproperUniform(constraints.positive, (), ()))
    b = numpyro.sample("b", dist.ImproperUniform(constraints.positive, (), ()))
    numpyro.factor("hyperprior", -2.5 * jnp.log(a + b))
    with numpyro.plate("variant", trials.shape[0]):
        rates = numpyro.sample("rates", dist.Beta(a, b))
        numpyro.sample("successes", dist.Binomial(trials, rates), obs=successes)


def eight_schools_model(sigma, y=None) -> None:
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta_z = numpyro.sample("theta_z", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_z)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _array(values: dict, name: str) -> jnp.ndarray:
    return jnp.asarray(np.asarray(values[name]))


def multilevel_logistic(dataset: Dataset, parametrization: str) -> Callable[[], None]:
    v = dataset.values
    observed = {"success": _array(v, "success")} if "success" in v else {
        "trials": _array(v, "trials"), "successes": _array(v, "successes")}
    return partial(multilevel_logistic_model, _array(v, "group_idx"), _array(v, "treated").astype(jnp.float64),
                   len(dataset.coords["group"]), parametrization == "noncentered", **observed)


def beta_binomial_marginal(dataset: Dataset) -> Callable[[], None]:
    return partial(beta_binomial_marginal_model, _array(dataset.values, "trials"), _array(dataset.values, "successes"))


def beta_binomial_positive(dataset: Dataset) -> Callable[[], None]:
    return partial(beta_binomial_positive_model, _array(dataset.values, "trials"), _array(dataset.values, "successes"))


def eight_schools(dataset: Dataset) -> Callable[[], None]:
    return partial(eight_schools_model, _array(dataset.values, "sigma"), _array(dataset.values, "y"))


#: (model, parametrization) -> function of the dataset.
MODELS = {
    ("multilevel-logistic", "noncentered"): partial(multilevel_logistic, parametrization="noncentered"),
    ("multilevel-logistic", "centered"): partial(multilevel_logistic, parametrization="centered"),
    ("beta-binomial", "marginal"): beta_binomial_marginal,
    ("beta-binomial", "positive"): beta_binomial_positive,
    ("eight-schools", "noncentered"): eight_schools,
}
