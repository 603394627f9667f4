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


@biject_to.register(_StanPositiveOrdered)
def _positive_ordered(constraint):
    return StanPositiveOrderedTransform()


@biject_to.register(AffineConstraint)
def _affine(constraint):
    return AffineTransform(constraint.offset, constraint.multiplier)
