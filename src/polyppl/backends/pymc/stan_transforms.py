"""Flat densities on Stan's constrained types in PyMC, sampled through Stan's transforms.

A model lowered from a Stan program must share the program's unconstrained space point by
point (its translation is checked there). PyMC's ``Ordered`` transform is Stan's
``ordered`` (and, with ``positive=True``, ``positive_ordered``) and its ``Interval`` is
Stan's lower, upper and two-sided bounds; its simplex transform is not Stan's
stick-breaking, and it has no affine one: both are here. Bounds and affine arguments may be
expressions of other parameters, so they enter as the distribution's inputs (PyMC then
replaces them by their values in the log density), never as closed-over variables.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.shape_utils import rv_size_is_none
from pymc.distributions.transforms import Interval, Ordered
from pymc.logprob.transforms import Transform


class StickBreaking(Transform):
    """Stan's ``simplex_constrain`` (2.35): K - 1 unconstrained values y to a simplex x of K,
    z_k = inv_logit(y_k - log(K - 1 - k)), x_k = z_k (1 - sum_{j<k} x_j)."""

    name = "stick_breaking"
    ndim_supp = 1

    def backward(self, value, *inputs):
        km1 = value.shape[-1]
        z = pt.sigmoid(value - pt.log(km1 - pt.arange(km1)))
        left = pt.concatenate([pt.ones_like(z[..., :1]), pt.cumprod(1.0 - z, axis=-1)], axis=-1)
        return pt.concatenate([left[..., :-1] * z, left[..., -1:]], axis=-1)

    def forward(self, value, *inputs):
        km1 = value.shape[-1] - 1
        left = 1.0 - pt.concatenate([pt.zeros_like(value[..., :1]), pt.cumsum(value[..., :-2], axis=-1)], axis=-1)
        z = value[..., :-1] / left
        return pt.log(z) - pt.log1p(-z) + pt.log(km1 - pt.arange(km1))

    def log_jac_det(self, value, *inputs):
        km1 = value.shape[-1]
        adjusted = value - pt.log(km1 - pt.arange(km1))
        z = pt.sigmoid(adjusted)
        left = pt.concatenate([pt.ones_like(z[..., :1]), pt.cumprod(1.0 - z, axis=-1)[..., :-1]], axis=-1)
        return pt.sum(pt.log(left) - pt.softplus(-adjusted) - pt.softplus(adjusted), axis=-1)


class Affine(Transform):
    """``offset + multiplier * u`` with the offset and multiplier the distribution's last two
    inputs; log Jacobian ``log(multiplier)`` per value."""

    name = "affine"
    ndim_supp = 0

    def backward(self, value, *inputs):
        offset, multiplier = inputs[-2:]
        return offset + multiplier * value

    def forward(self, value, *inputs):
        offset, multiplier = inputs[-2:]
        return (value - offset) / multiplier

    def log_jac_det(self, value, *inputs):
        return pt.log(inputs[-1]) + pt.zeros_like(value)


#: Vector types: PyMC's Flat under the transform, started at a point inside the support.
_VECTOR = {
    "flat_ordered": (lambda: Ordered(), lambda k: np.arange(k, dtype=float)),
    "flat_positive_ordered": (lambda: Ordered(positive=True), lambda k: np.arange(1.0, k + 1.0)),
    "flat_simplex": (lambda: StickBreaking(), lambda k: np.full(k, 1.0 / k)),
}
#: Elementwise types: the transform and the start (a function of the arguments).
_ELEMENTWISE = {
    "flat_lower": (lambda: Interval(bounds_fn=lambda *inputs: (inputs[-1], None)), lambda lower: lower + 1.0),
    "flat_upper": (lambda: Interval(bounds_fn=lambda *inputs: (None, inputs[-1])), lambda upper: upper - 1.0),
    "flat_interval": (lambda: Interval(bounds_fn=lambda *inputs: (inputs[-2], inputs[-1])),
                      lambda lower, upper: (lower + upper) / 2.0),
    "flat_affine": (lambda: Affine(), lambda offset, multiplier: offset + 0.0 * multiplier),
}
FAMILIES = frozenset(_VECTOR) | frozenset(_ELEMENTWISE)


def _start(value, size):
    # Of the size, not of the variable itself (a graph of the variable would draw from it).
    return value if rv_size_is_none(size) else pt.broadcast_to(value, size)


def constrained_flat(name: str, family: str, args: list, dims: tuple[str, ...], k: int | None):
    """A parameter flat on a Stan type, in the current PyMC model (``args``: the family's
    evaluated arguments in order; ``k``: the size of a vector type's last dim, each vector of
    an array through the transform)."""
    if family in _VECTOR:
        transform, start = _VECTOR[family]
        shape = tuple(len(pm.modelcontext(None).coords[d]) for d in dims)
        return pm.Flat(name, dims=dims, transform=transform(), initval=np.broadcast_to(start(k), shape).copy())
    transform, start = _ELEMENTWISE[family]
    return pm.CustomDist(
        name, *args,
        logp=lambda value, *inputs: pt.zeros_like(value),
        support_point=lambda rv, size, *inputs: _start(start(*inputs), size),
        transform=transform(),
        dims=dims or None,
    )
