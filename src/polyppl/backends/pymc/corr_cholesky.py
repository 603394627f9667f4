"""The Cholesky factor of an LKJ correlation matrix in PyMC, sampled as Stan and NumPyro sample
it.

PyMC's own LKJ distributions do not fit the spec: ``LKJCholeskyCov`` is a distribution over
the Cholesky factor of a covariance matrix with the standard deviations inside it, and
``LKJCorr`` samples the correlations through an elementwise interval transform, which does
not keep the matrix positive definite. Here the factor ``L`` (K x K) is a distribution of
its own, with Stan's transform (``cholesky_corr_constrain``): K (K - 1) / 2 unconstrained
values, the tanh of each a canonical partial correlation, placed row by row below the
diagonal and turned into rows of unit length by signed stick-breaking. NumPyro's
``CorrCholeskyTransform`` is the same map, so the three backends share one unconstrained
space and their log densities can be compared point by point.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform


def _stick_left(w: pt.TensorVariable) -> pt.TensorVariable:
    """Row i, column j: prod_{l<j} (1 - w_il^2), the squared length left for column j."""
    left = pt.cumprod(1.0 - w**2, axis=-1)
    return pt.concatenate([pt.ones_like(left[..., :1]), left[..., :-1]], axis=-1)


def _from_partial(partial: pt.TensorVariable, k: int) -> pt.TensorVariable:
    """Signed stick-breaking: K (K - 1) / 2 partial correlations in (-1, 1), row by row below
    the diagonal, to the Cholesky factor of a correlation matrix."""
    rows, cols = np.tril_indices(k, -1)
    w = pt.set_subtensor(pt.zeros((k, k))[rows, cols], partial)
    return (w + pt.eye(k)) * pt.sqrt(_stick_left(w))


class CholeskyCorrTransform(Transform):
    """Stan's transform of the Cholesky factor of a K x K correlation matrix."""

    name = "cholesky_corr"

    def __init__(self, k: int) -> None:
        self.k = k
        self.rows, self.cols = np.tril_indices(k, -1)

    def backward(self, value, *inputs):
        return _from_partial(pt.tanh(value), self.k)

    def forward(self, value, *inputs):
        # Undo the stick-breaking: w_ij = L_ij / sqrt(1 - sum_{l<j} L_il^2).
        used = pt.cumsum(value**2, axis=-1)
        left = pt.concatenate([pt.ones_like(used[..., :1]), 1.0 - used[..., :-1]], axis=-1)
        return pt.arctanh(value[self.rows, self.cols] / pt.sqrt(left[self.rows, self.cols]))

    def log_jac_det(self, value, *inputs):
        # Stan's: log(1 - tanh(y)^2) for each value, and 0.5 log of the stick left for every
        # entry below the diagonal but the first column.
        z = pt.tanh(value)
        w = pt.set_subtensor(pt.zeros((self.k, self.k))[self.rows, self.cols], z)
        left = _stick_left(w)[self.rows, self.cols]
        return pt.sum(pt.log1p(-(z**2))) + 0.5 * pt.sum(pt.log(left[self.cols > 0]))


class CholeskyFactorCovTransform(Transform):
    """Stan's transform of a K x K Cholesky factor of a covariance matrix
    (``cholesky_factor_constrain``): K (K + 1) / 2 unconstrained values, the lower triangle
    row by row, each diagonal element the exp of its value; log Jacobian the sum of the
    diagonal's values. With ``covariance``, the matrix L L^T (``cov_matrix_constrain``), log
    Jacobian K log 2 + sum_k (K - k + 2) log L_kk (k from 1)."""

    name = "cholesky_factor_cov"

    def __init__(self, k: int, covariance: bool) -> None:
        self.k, self.covariance = k, covariance
        self.rows, self.cols = np.tril_indices(k)
        self.diagonal = np.flatnonzero(self.rows == self.cols)

    def backward(self, value, *inputs):
        entries = pt.set_subtensor(value[self.diagonal], pt.exp(value[self.diagonal]))
        lower = pt.set_subtensor(pt.zeros((self.k, self.k))[self.rows, self.cols], entries)
        return lower @ lower.T if self.covariance else lower

    def forward(self, value, *inputs):
        lower = pt.linalg.cholesky(value, lower=True) if self.covariance else value
        entries = lower[self.rows, self.cols]
        return pt.set_subtensor(entries[self.diagonal], pt.log(entries[self.diagonal]))

    def log_jac_det(self, value, *inputs):
        log_diagonal = value[self.diagonal]
        if not self.covariance:
            return pt.sum(log_diagonal)
        weights = self.k - np.arange(self.k) + 1.0
        return self.k * np.log(2.0) + pt.sum(weights * log_diagonal)


def _flat_square(name: str, k: int, transform: Transform, dims: tuple[str, ...]) -> pt.TensorVariable:
    """A K x K value, flat on its constraint, sampled through ``transform``; initially the
    identity, which is also its one input: it sizes the value (a signature alone cannot)."""
    return pm.CustomDist(
        name, np.eye(k),
        logp=lambda value, identity: pt.zeros(()),
        support_point=lambda rv, size, identity: identity,
        signature="(k,k)->(k,k)",
        transform=transform,
        dims=dims,
    )


def flat_cholesky_factor_cov(name: str, k: int, covariance: bool, dims: tuple[str, ...]) -> pt.TensorVariable:
    """A K x K Cholesky factor of a covariance matrix (or, with ``covariance``, a covariance
    matrix), flat, through Stan's transform; its initial value is the identity."""
    return _flat_square(name, k, CholeskyFactorCovTransform(k, covariance), dims)


class CorrMatrixTransform(Transform):
    """Stan's transform of a K x K correlation matrix (``corr_matrix_constrain``): the tanh of
    K (K - 1) / 2 values, placed column by column below the diagonal (``read_corr_L``), L by
    the signed stick-breaking of each row, L L^T; log Jacobian sum(log(1 - r^2)) plus
    0.5 (K - c - 2) log(1 - r^2) for each value of column c (from 0)."""

    name = "corr_matrix"

    def __init__(self, k: int) -> None:
        self.k = k
        columns, rows = np.triu_indices(k, 1)
        self.rows, self.cols = rows, columns

    def backward(self, value, *inputs):
        w = pt.set_subtensor(pt.zeros((self.k, self.k))[self.rows, self.cols], pt.tanh(value))
        lower = (w + pt.eye(self.k)) * pt.sqrt(_stick_left(w))
        return lower @ lower.T

    def forward(self, value, *inputs):
        lower = pt.linalg.cholesky(value, lower=True)
        used = pt.cumsum(lower**2, axis=-1)
        left = pt.concatenate([pt.ones_like(used[..., :1]), 1.0 - used[..., :-1]], axis=-1)
        return pt.arctanh(lower[self.rows, self.cols] / pt.sqrt(left[self.rows, self.cols]))

    def log_jac_det(self, value, *inputs):
        weights = 1.0 + 0.5 * (self.k - self.cols - 2)
        return pt.sum(weights * pt.log1p(-pt.tanh(value) ** 2))


def flat_corr_matrix(name: str, k: int, dims: tuple[str, ...]) -> pt.TensorVariable:
    """A K x K correlation matrix, flat, through Stan's transform; initially the identity."""
    return _flat_square(name, k, CorrMatrixTransform(k), dims)


def _logp(value, eta):
    """Stan's ``lkj_corr_cholesky_lpdf``: sum over rows k = 2..K of (K - k + 2 eta - 2) log L_kk,
    plus the part of its normalising constant that depends on eta (Stan's ``do_lkj_constant``:
    (K - 1) lgamma(eta + (K - 1) / 2) - sum_{k=1}^{K-1} lgamma(eta + (K - 1 - k) / 2)), which
    ``~`` keeps where eta is a parameter and which is a constant where it is data."""
    k = value.shape[-1]
    log_diagonal = pt.log(pt.diagonal(value)[1:])
    order = pt.arange(2, k + 1)
    normaliser = (k - 1) * pt.gammaln(eta + 0.5 * (k - 1)) - pt.sum(pt.gammaln(eta + 0.5 * (k - 1 - pt.arange(1, k))))
    return pt.sum((k - order + 2.0 * eta - 2.0) * log_diagonal) + normaliser


def flat_corr_cholesky(name: str, k: int, dims: tuple[str, ...]) -> pt.TensorVariable:
    """A K x K Cholesky factor of a correlation matrix, flat (Stan's ``cholesky_factor_corr``
    without a prior on it), through the same transform; its initial value is the identity."""
    return _flat_square(name, k, CholeskyCorrTransform(k), dims)


def lkj_corr_cholesky(name: str, eta, k: int, dims: tuple[str, ...]) -> pt.TensorVariable:
    """A K x K Cholesky factor with an LKJ(eta) prior, in the current PyMC model; its initial
    value is the identity (zero on the unconstrained scale)."""

    def draw(eta, size):
        # The C-vine: partial correlation (i, j) is 2 Beta(c, c) - 1, c = eta + (K - 2 - j) / 2
        # (Lewandowski et al. 2009; NumPyro's LKJCholesky).
        _, cols = np.tril_indices(k, -1)
        concentration = eta + (k - 2 - cols) / 2
        return _from_partial(2.0 * pm.Beta.dist(concentration, concentration) - 1.0, k)

    return pm.CustomDist(
        name, eta,
        dist=draw,
        logp=_logp,
        support_point=lambda rv, size, eta: pt.eye(k),
        signature="()->(k,k)",
        transform=CholeskyCorrTransform(k),
        dims=dims,
    )
