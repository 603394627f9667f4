"""Stan's transforms where NumPyro's own differ, registered with ``biject_to``.

NumPyro samples a site on the unconstrained scale through ``biject_to(support)``. Its
transforms of ordered vectors, simplexes and bounds are Stan's, but two are not: its
``positive_ordered_vector`` is ``exp`` of an ordered vector (Stan's is the cumulative sum of
``exp`` of each value), and it has no affine constraint (Stan's ``<offset, multiplier>``).
Here both are Stan's, so a model lowered from a Stan program shares the program's
unconstrained space point by point.
"""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import AffineTransform, ParameterFreeTransform, biject_to


class _StanPositiveOrdered(constraints._SingletonConstraint):
    """Increasing positive vectors, sampled as Stan samples them."""

    event_dim = 1

    def __call__(self, x):
        return jnp.logical_and((x[..., 1:] > x[..., :-1]).all(axis=-1), (x > 0).all(axis=-1))

    def feasible_like(self, prototype):
        return jnp.broadcast_to(jnp.arange(1.0, prototype.shape[-1] + 1.0), prototype.shape)


stan_positive_ordered = _StanPositiveOrdered()


class StanPositiveOrderedTransform(ParameterFreeTransform):
    """Stan's ``positive_ordered_constrain``: y = cumsum(exp(x)); log Jacobian sum(x)."""

    domain = constraints.real_vector
    codomain = stan_positive_ordered

    def __call__(self, x):
        return jnp.cumsum(jnp.exp(x), axis=-1)

    def _inverse(self, y):
        return jnp.log(jnp.concatenate([y[..., :1], y[..., 1:] - y[..., :-1]], axis=-1))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return jnp.sum(x, axis=-1)


class AffineConstraint(constraints.Constraint):
    """The real line, sampled as ``offset + multiplier * u`` (Stan's ``<offset, multiplier>``)."""

    def __init__(self, offset, multiplier) -> None:
        self.offset, self.multiplier = offset, multiplier

    def __call__(self, x):
        return jnp.isfinite(x)

    def feasible_like(self, prototype):
        return jnp.broadcast_to(self.offset, jnp.shape(prototype))

    def tree_flatten(self):
        return (self.offset, self.multiplier), (("offset", "multiplier"), dict())


class _StanCholeskyFactorCov(constraints._SingletonConstraint):
    """Lower triangular square matrices with a positive diagonal (Stan's
    ``cholesky_factor_cov[K]``), sampled as Stan samples them."""

    event_dim = 2

    def __call__(self, x):
        lower = jnp.all(jnp.triu(x, 1) == 0, axis=(-2, -1))
        return jnp.logical_and(lower, jnp.all(jnp.diagonal(x, axis1=-2, axis2=-1) > 0, axis=-1))

    def feasible_like(self, prototype):
        return jnp.broadcast_to(jnp.eye(prototype.shape[-1]), prototype.shape)


class _StanCovMatrix(constraints._SingletonConstraint):
    """Covariance matrices (Stan's ``cov_matrix[K]``), sampled as Stan samples them."""

    event_dim = 2

    def __call__(self, x):
        return constraints.positive_definite(x)

    def feasible_like(self, prototype):
        return jnp.broadcast_to(jnp.eye(prototype.shape[-1]), prototype.shape)


class _StanCorrMatrix(constraints._SingletonConstraint):
    """Correlation matrices (Stan's ``corr_matrix[K]``), sampled as Stan samples them."""

    event_dim = 2

    def __call__(self, x):
        return constraints.corr_matrix(x)

    def feasible_like(self, prototype):
        return jnp.broadcast_to(jnp.eye(prototype.shape[-1]), prototype.shape)


stan_corr_matrix = _StanCorrMatrix()
stan_cholesky_factor_cov = _StanCholeskyFactorCov()
stan_cov_matrix = _StanCovMatrix()


def _size(m: int) -> int:
    """K from K (K + 1) / 2."""
    return int(round(((1 + 8 * m) ** 0.5 - 1) / 2))


class StanCholeskyFactorCovTransform(ParameterFreeTransform):
    """Stan's ``cholesky_factor_constrain`` (K x K): the lower triangle row by row from
    K (K + 1) / 2 values, each diagonal element the exp of its value; log Jacobian the sum of
    the diagonal's values. ``StanCovMatrixTransform``: L L^T (``cov_matrix_constrain``)."""

    domain = constraints.real_vector
    codomain = stan_cholesky_factor_cov

    def _lower(self, x):
        k = _size(x.shape[-1])
        rows, cols = jnp.tril_indices(k)
        diagonal = rows == cols
        entries = jnp.where(diagonal, jnp.exp(x), x)
        return jnp.zeros(x.shape[:-1] + (k, k)).at[..., rows, cols].set(entries)

    def __call__(self, x):
        return self._lower(x)

    def _inverse(self, y):
        k = y.shape[-1]
        rows, cols = jnp.tril_indices(k)
        entries = y[..., rows, cols]
        return jnp.where(rows == cols, jnp.log(entries), entries)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        k = _size(x.shape[-1])
        rows, cols = jnp.tril_indices(k)
        return jnp.sum(jnp.where(rows == cols, x, 0.0), axis=-1)

    def forward_shape(self, shape):
        return shape[:-1] + (_size(shape[-1]),) * 2

    def inverse_shape(self, shape):
        return shape[:-2] + (shape[-1] * (shape[-1] + 1) // 2,)


class StanCovMatrixTransform(StanCholeskyFactorCovTransform):
    codomain = stan_cov_matrix

    def __call__(self, x):
        lower = self._lower(x)
        return lower @ jnp.swapaxes(lower, -1, -2)

    def _inverse(self, y):
        return super()._inverse(jnp.linalg.cholesky(y))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        k = _size(x.shape[-1])
        rows, cols = jnp.tril_indices(k)
        weights = jnp.where(rows == cols, k - rows + 1.0, 0.0)
        return k * jnp.log(2.0) + jnp.sum(weights * x, axis=-1)


def _corr_size(m: int) -> int:
    """K from K (K - 1) / 2."""
    return int(round((1 + (1 + 8 * m) ** 0.5) / 2))


class StanCorrMatrixTransform(ParameterFreeTransform):
    """Stan's ``corr_matrix_constrain``: the tanh of K (K - 1) / 2 values, placed column by
    column below the diagonal (``read_corr_L``), L by the signed stick-breaking of each row,
    L L^T; log Jacobian sum(log(1 - r^2)) plus 0.5 (K - c - 2) log(1 - r^2) for each value of
    column c (from 0)."""

    domain = constraints.real_vector
    codomain = stan_corr_matrix

    @staticmethod
    def _positions(k: int):
        columns, rows = jnp.triu_indices(k, 1)
        return rows, columns

    def __call__(self, x):
        k = _corr_size(x.shape[-1])
        rows, columns = self._positions(k)
        w = jnp.zeros(x.shape[:-1] + (k, k)).at[..., rows, columns].set(jnp.tanh(x))
        left = jnp.cumprod(1.0 - w**2, axis=-1)
        left = jnp.concatenate([jnp.ones_like(left[..., :1]), left[..., :-1]], axis=-1)
        lower = (w + jnp.eye(k)) * jnp.sqrt(left)
        return lower @ jnp.swapaxes(lower, -1, -2)

    def _inverse(self, y):
        k = y.shape[-1]
        rows, columns = self._positions(k)
        lower = jnp.linalg.cholesky(y)
        used = jnp.cumsum(lower**2, axis=-1)
        left = jnp.concatenate([jnp.ones_like(used[..., :1]), 1.0 - used[..., :-1]], axis=-1)
        return jnp.arctanh(lower[..., rows, columns] / jnp.sqrt(left[..., rows, columns]))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        k = _corr_size(x.shape[-1])
        _, columns = self._positions(k)
        weights = 1.0 + 0.5 * (k - columns - 2)
        return jnp.sum(weights * jnp.log1p(-jnp.tanh(x) ** 2), axis=-1)

    def forward_shape(self, shape):
        return shape[:-1] + (_corr_size(shape[-1]),) * 2

    def inverse_shape(self, shape):
        return shape[:-2] + (shape[-1] * (shape[-1] - 1) // 2,)


@biject_to.register(_StanCorrMatrix)
def _corr_matrix(constraint):
    return StanCorrMatrixTransform()


@biject_to.register(_StanCholeskyFactorCov)
def _cholesky_factor_cov(constraint):
    return StanCholeskyFactorCovTransform()


@biject_to.register(_StanCovMatrix)
def _cov_matrix(constraint):
    return StanCovMatrixTransform()


@biject_to.register(_StanPositiveOrdered)
def _positive_ordered(constraint):
    return StanPositiveOrderedTransform()


@biject_to.register(AffineConstraint)
def _affine(constraint):
    return AffineTransform(constraint.offset, constraint.multiplier)
