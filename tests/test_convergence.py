"""The compiled convergence numbers (``inference.convergence``) against ArviZ, quantity by
quantity: bulk ESS, tail ESS and rank R-hat, and ArviZ's answers at the edges (NaN draws,
short chains, one chain, a constant quantity)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from arviz_stats.base import array_stats
from scipy.signal import lfilter

from polyppl.inference.convergence import convergence


def arviz_numbers(one: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns where it answers NaN
        return np.asarray([array_stats.ess(one, method="bulk"), array_stats.ess(one, method="tail", prob=0.05),
                           array_stats.rhat(one, method="rank")], dtype=float)


@pytest.mark.parametrize("chains, draws_per_chain", [(4, 250), (4, 251), (2, 1000), (1, 100), (3, 3)])
def test_equals_arviz_quantity_by_quantity(chains, draws_per_chain):
    """ArviZ's numbers to 1e-9 (relative), for AR(1) chains from anti-correlated to sticky,
    heavy-tailed, discrete (ties), a stuck chain, a constant and one with a NaN; chains of
    even and odd length (an odd one's middle draw is left out of the split chains), a single
    chain (no R-hat) and chains too short for any number."""
    rng = np.random.default_rng(0)
    shape = (chains, draws_per_chain)
    columns = [lfilter([1.0], [1.0, -phi], rng.normal(size=shape), axis=1) for phi in (0.0, 0.6, 0.95, 0.995, -0.3)]
    columns += [rng.standard_cauchy(size=shape), np.round(rng.normal(size=shape)), rng.integers(0, 2, size=shape)]
    stuck = rng.normal(size=shape)
    stuck[0] += 3.0
    columns += [stuck, np.full(shape, 2.5)]
    with_nan = rng.normal(size=shape)
    with_nan[-1, -1] = np.nan
    columns.append(with_nan)
    draws = np.stack(columns, axis=-1)
    ours = np.stack(convergence(draws), axis=-1)
    for k in range(draws.shape[-1]):
        np.testing.assert_allclose(ours[k], arviz_numbers(draws[..., k]), rtol=1e-9, err_msg=f"quantity {k}")


def test_prepare_compiles_once_per_process():
    from polyppl.inference.convergence import prepare

    prepare()
    assert prepare() == 0.0  # a grid's task charges the compile (or cache load) to its first fit only
