"""The exact posterior of the Beta-Binomial model, by grid quadrature (BDA3 section 5.3).

With the rates integrated out, the hyperparameters have the marginal posterior

    p(a, b | y)  proportional to  (a + b)^-2.5  prod_k  B(a + y_k, b + n_k - y_k) / B(a, b)

which is two-dimensional, so it can be tabulated. On u = log(a / b), v = log(a + b) the
Jacobian is a * b and the density is smooth and compact in u; in v it has a tail like
exp(-v / 2) (so E[a] and E[b] are infinite, while every rate has finite moments). Given
(a, b), each rate is Beta(a + y_k, b + n_k - y_k), so posterior means are exact weighted sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, expit

from polyppl.spec import Dataset

U_RANGE = (-8.0, 8.0)
V_RANGE = (-6.0, 30.0)  # beyond v = 30 the tail holds exp(-15) ~ 3e-7 of the mass


@dataclass(frozen=True)
class Grid:
    u: np.ndarray  # (n_u,)
    v: np.ndarray  # (n_v,)
    weights: np.ndarray  # (n_u, n_v), normalised posterior mass of each cell
    a: np.ndarray
    b: np.ndarray


def grid(dataset: Dataset, n_u: int = 801, n_v: int = 1801) -> Grid:
    trials = np.asarray(dataset.values["trials"], dtype=float)
    successes = np.asarray(dataset.values["successes"], dtype=float)
    u = np.linspace(*U_RANGE, n_u)
    v = np.linspace(*V_RANGE, n_v)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    total = np.exp(vv)
    a = total * expit(uu)
    b = total * expit(-uu)
    log_post = -2.5 * vv + np.log(a) + np.log(b)
    for n, y in zip(trials, successes):
        log_post += betaln(a + y, b + n - y) - betaln(a, b)
    weights = np.exp(log_post - log_post.max())
    return Grid(u, v, weights / weights.sum(), a, b)


def rate_means(dataset: Dataset, g: Grid | None = None) -> np.ndarray:
    """E[rates[k] | y], one per variant."""
    g = g or grid(dataset)
    trials = np.asarray(dataset.values["trials"], dtype=float)
    successes = np.asarray(dataset.values["successes"], dtype=float)
    return np.array([np.sum(g.weights * (g.a + y) / (g.a + g.b + n)) for n, y in zip(trials, successes)])


def draws(dataset: Dataset, n: int, seed: int = 0, g: Grid | None = None) -> dict[str, np.ndarray]:
    """Independent draws of the exact posterior: (a, b) from the grid cells, jittered
    uniformly within each cell, then rates from their conditional Betas."""
    g = g or grid(dataset)
    rng = np.random.default_rng(seed)
    cells = rng.choice(g.weights.size, size=n, p=g.weights.ravel())
    iu, iv = np.unravel_index(cells, g.weights.shape)
    du, dv = g.u[1] - g.u[0], g.v[1] - g.v[0]
    u = g.u[iu] + rng.uniform(-du / 2, du / 2, n)
    v = g.v[iv] + rng.uniform(-dv / 2, dv / 2, n)
    a, b = np.exp(v) * expit(u), np.exp(v) * expit(-u)
    trials = np.asarray(dataset.values["trials"], dtype=float)
    successes = np.asarray(dataset.values["successes"], dtype=float)
    rates = rng.beta(a[:, None] + successes, b[:, None] + trials - successes)
    return {"a": a, "b": b, "rates": rates}


def exact_draws(dataset: Dataset, n: int, seed: int) -> dict[str, np.ndarray]:
    """Independent draws of the exact posterior under every parametrization's names:
    ``a``, ``b``, ``rates``, ``logit_mean`` = log(a / b), ``log_concentration`` = log(a + b)."""
    d = draws(dataset, n, seed=seed)
    return {**d, "logit_mean": np.log(d["a"] / d["b"]), "log_concentration": np.log(d["a"] + d["b"])}
