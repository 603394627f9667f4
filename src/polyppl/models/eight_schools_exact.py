"""The exact posterior of eight schools, by one-dimensional quadrature over tau.

The model (``polyppl.models.eight_schools``, any number J of schools):

    mu ~ Normal(0, 5)    tau ~ HalfCauchy(5)    theta_j ~ Normal(mu, tau)    y_j ~ Normal(theta_j, sigma_j)

Integrating theta out gives y_j | mu, tau ~ Normal(mu, sigma_j^2 + tau^2), and then mu,
whose prior is Normal(0, 5^2): with w_j = 1 / (sigma_j^2 + tau^2),

    mu | tau, y ~ Normal(m, 1 / P),    P = 1/25 + sum_j w_j,    m = sum_j w_j y_j / P
    p(tau | y)  proportional to  p(tau) prod_j w_j^(1/2) P^(-1/2) exp((P m^2 - sum_j w_j y_j^2) / 2)

so the posterior of tau is one-dimensional and is tabulated on a grid of u = log tau (the
trapezoid rule, which converges fast for a smooth density that decays at both ends). Given
(mu, tau), each theta_j is Normal with precision 1/sigma_j^2 + 1/tau^2; its conditional
mean is linear in mu, so every posterior mean and variance of mu, theta and
theta_z = (theta - mu) / tau is a weighted sum over the grid of closed forms.

Tails left off the grid: in u the density falls like exp(u) as tau -> 0 (the HalfCauchy
density is finite at 0 and the likelihood flat there) and like exp(-(J + 1) u) as
tau -> infinity (prior tau^-2, likelihood tau^-J), so the mass beyond the two ends is the
density there times 1 and 1 / (J + 1): ``Grid.tail_mass``, 2.5e-11 for the classic data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from polyppl.spec import Dataset

MU_PRIOR_SD = 5.0
TAU_PRIOR_SCALE = 5.0
#: Grid ends relative to the data's scales: below the smallest sigma the density in u falls
#: like exp(u), so 25 units lower leave about e^-25 ~ 1e-11 of the mass; above the largest
#: scale it falls like exp(-(J + 1) u), at least exp(-3 u) with J >= 2 schools, so 12 units
#: leave e^-36 ~ 2e-16 or less.
U_BELOW = 25.0
U_ABOVE = 12.0
N_GRID = 8001


@dataclass(frozen=True)
class Grid:
    """p(tau | y) tabulated on u = log tau, with the conditional moments at each node."""

    u: np.ndarray  # (n,) equally spaced nodes
    density: np.ndarray  # (n,) p(u | y) at the nodes, normalised by the trapezoid rule
    weights: np.ndarray  # (n,) trapezoid weights times density: the quadrature rule for E[f(u) | y]
    tau: np.ndarray  # (n,)
    mu_mean: np.ndarray  # (n,) E[mu | tau, y]
    mu_var: np.ndarray  # (n,) Var[mu | tau, y]
    w: np.ndarray  # (n, J) 1 / (sigma_j^2 + tau^2)
    tail_mass: float  # posterior mass beyond the grid's two ends (asymptotic estimate)


def _data(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(dataset.values["y"], dtype=float)
    sigma = np.asarray(dataset.values["sigma"], dtype=float)
    if y.shape != sigma.shape or y.ndim != 1 or y.size != len(dataset.coords["school"]):
        raise ValueError("eight schools needs y and sigma of one value per school")
    return y, sigma


def log_density(u: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log p(u = log tau | y) up to a constant, with mu and theta integrated out."""
    tau2 = np.exp(2 * np.asarray(u, dtype=float))[..., None]
    w = 1.0 / (sigma**2 + tau2)
    precision = 1.0 / MU_PRIOR_SD**2 + w.sum(-1)
    m = (w * y).sum(-1) / precision
    log_prior = -np.log1p(tau2[..., 0] / TAU_PRIOR_SCALE**2) + u  # HalfCauchy, times the Jacobian tau
    return log_prior + 0.5 * (np.log(w).sum(-1) - np.log(precision) + precision * m**2 - (w * y**2).sum(-1))


def grid(dataset: Dataset, n: int = N_GRID) -> Grid:
    """p(u = log tau | y) on ``n`` equally spaced nodes spanning the data's scales with the
    margins above, normalised by the trapezoid rule, and mu's conditional moments there."""
    y, sigma = _data(dataset)
    scale = max(float(sigma.max()), float(np.abs(y).max()), MU_PRIOR_SD, TAU_PRIOR_SCALE)
    u = np.linspace(np.log(sigma.min()) - U_BELOW, np.log(scale) + U_ABOVE, n)
    log_p = log_density(u, y, sigma)
    density = np.exp(log_p - log_p.max())
    trapezoid = np.full(n, u[1] - u[0])
    trapezoid[[0, -1]] /= 2
    density /= np.sum(density * trapezoid)
    tau = np.exp(u)
    tau2 = tau[:, None] ** 2
    w = 1.0 / (sigma**2 + tau2)
    precision = 1.0 / MU_PRIOR_SD**2 + w.sum(-1)
    return Grid(
        u=u,
        density=density,
        weights=density * trapezoid,
        tau=tau,
        mu_mean=(w * y).sum(-1) / precision,
        mu_var=1.0 / precision,
        w=w,
        tail_mass=float(density[0] * 1.0 + density[-1] / (y.size + 1)),
    )


def _conditional_moments(dataset: Dataset, g: Grid) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and variance of each quantity given tau (and y), at every node: (n,) or (n, J)."""
    y, sigma = _data(dataset)
    tau, w = g.tau[:, None], g.w
    m, v = g.mu_mean[:, None], g.mu_var[:, None]
    # Given (mu, tau): theta_j ~ Normal(B mu + (1 - B) y_j, sigma_j^2 tau^2 w_j) with
    # B = sigma_j^2 w_j, 1 - B = tau^2 w_j; mu's part is linear, so given tau alone the mean
    # takes m for mu and the variance adds B^2 v. theta_z = (theta - mu) / tau has mean
    # tau w_j (y_j - mu) and variance sigma_j^2 w_j given (mu, tau); written with tau^2 w_j
    # rather than 1 - B, which would cancel catastrophically at small tau.
    b = sigma**2 * w
    return {
        "mu": (g.mu_mean, g.mu_var),
        "tau": (g.tau, np.zeros_like(g.tau)),
        "theta": (b * m + tau**2 * w * y, sigma**2 * tau**2 * w + b**2 * v),
        "theta_z": (tau * w * (y - m), sigma**2 * w + tau**2 * w**2 * v),
    }


def _cdf(g: Grid) -> np.ndarray:
    """The CDF of u at the nodes for the density interpolated linearly between them: cell
    masses (d_i + d_i+1) h / 2, the trapezoid rule's, so it ends at 1."""
    cells = (g.density[1:] + g.density[:-1]) / 2 * (g.u[1] - g.u[0])
    return np.concatenate([[0.0], np.cumsum(cells)])


def posterior_means(dataset: Dataset, g: Grid | None = None) -> dict[str, np.ndarray | float]:
    """Exact posterior means and standard deviations: keys ``mu``, ``tau``, ``theta`` (J,),
    ``theta_z`` (J,) for the means and the same with ``_sd`` for the standard deviations."""
    g = g or grid(dataset)
    out: dict[str, np.ndarray | float] = {}
    for name, (mean, var) in _conditional_moments(dataset, g).items():
        w = g.weights if mean.ndim == 1 else g.weights[:, None]
        first = np.sum(w * mean, axis=0)
        second = np.sum(w * (var + mean**2), axis=0)  # law of total variance
        sd = np.sqrt(second - first**2)
        out[name], out[f"{name}_sd"] = (float(first), float(sd)) if mean.ndim == 1 else (first, sd)
    return out


def posterior_quantiles(dataset: Dataset, probs: tuple[float, ...] = (0.05, 0.5, 0.95), g: Grid | None = None) -> dict[str, np.ndarray]:
    """Exact posterior quantiles: ``{"mu": (len(probs),), "tau": ..., "theta": (len(probs), J),
    "theta_z": (len(probs), J)}``. Given tau, mu, theta_j and theta_z_j are normal, so each
    CDF is a weighted sum of normal CDFs over the grid, inverted by root finding; tau's CDF
    is the trapezoid rule's, exact between nodes to the grid's accuracy."""
    g = g or grid(dataset)
    out: dict[str, np.ndarray] = {}
    out["tau"] = np.exp(np.interp(probs, _cdf(g), g.u))
    for name, (mean, var) in _conditional_moments(dataset, g).items():
        if name == "tau":
            continue
        mean2, sd2 = np.atleast_2d(mean.T).T, np.sqrt(np.atleast_2d(var.T).T)  # (n, k)
        q = np.empty((len(probs), mean2.shape[1]))
        for j in range(mean2.shape[1]):
            mj, sj = mean2[:, j], sd2[:, j]
            lo, hi = float(np.min(mj - 40 * sj)), float(np.max(mj + 40 * sj))
            for i, p in enumerate(probs):
                q[i, j] = optimize.brentq(lambda x: np.sum(g.weights * special.ndtr((x - mj) / sj)) - p, lo, hi, xtol=1e-12, rtol=1e-13)
        out[name] = q[:, 0] if mean.ndim == 1 else q
    return out


def draws(dataset: Dataset, n: int, seed: int = 0, g: Grid | None = None) -> dict[str, np.ndarray]:
    """Independent draws of the exact posterior: ``mu`` (n,), ``tau`` (n,), ``theta`` (n, J)
    and ``theta_z`` (n, J) = (theta - mu) / tau, the non-centered parametrization's variable.

    u = log tau by inverting the grid's piecewise-linear CDF (uniform within each cell in
    proportion to its trapezoid mass), then mu | tau, y and theta_z | mu, tau, y from their
    normals, and theta = mu + tau * theta_z.
    """
    g = g or grid(dataset)
    y, sigma = _data(dataset)
    rng = np.random.default_rng(seed)
    tau = np.exp(np.interp(rng.uniform(size=n), _cdf(g), g.u))
    tau2 = tau[:, None] ** 2
    w = 1.0 / (sigma**2 + tau2)
    precision = 1.0 / MU_PRIOR_SD**2 + w.sum(-1)
    mu = (w * y).sum(-1) / precision + rng.standard_normal(n) / np.sqrt(precision)
    # theta_z drawn directly rather than as (theta - mu) / tau, which would cancel
    # catastrophically at small tau: its mean is tau (y - mu) w and its sd sigma sqrt(w).
    theta_z = tau[:, None] * (y - mu[:, None]) * w + sigma * np.sqrt(w) * rng.standard_normal((n, y.size))
    return {"mu": mu, "tau": tau, "theta": mu[:, None] + tau[:, None] * theta_z, "theta_z": theta_z}
