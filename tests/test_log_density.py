"""The three compilers build the same model.

At random points of the unconstrained space, the compiled log densities (Jacobians
included) differ only by a constant, and their gradients agree to 1e-8 relative, on PyMC,
NumPyro and Stan through both of its engines. This is exact arithmetic on the same
expression, so the tolerance is float64 round-off, not Monte Carlo error.
"""

import numpy as np
import pytest

from conftest import stan_engines_of_a_repeat
from polyppl.backends import get_backend
from polyppl.models import MODELS

CASES = [(m.name, p) for m in MODELS.values() for p in m.parametrizations]
CASES.append(("multilevel-logistic", "rows"))  # the row-level Bernoulli form
N_POINTS = 5
GRAD_RTOL = 1e-8


def _model_and_data(name, parametrization):
    builtin = MODELS[name]
    if parametrization == "rows":
        dataset = builtin.scenarios["seed-rows"].dataset()
        return builtin.spec("centered", dataset), dataset
    dataset = builtin.dataset()
    return builtin.spec(parametrization, dataset), dataset


def densities(model, dataset, stan_engine):
    return {
        "pymc": get_backend("pymc").compile(model, dataset).log_density(),
        "numpyro": get_backend("numpyro").compile(model, dataset).log_density(),
        "stan": get_backend("stan").compile(model, dataset, engine=stan_engine).log_density(),
    }


def assert_same_density(densities, points, grad_atol=1e-10):
    """Gradients equal to 1e-8 relative (or within ``grad_atol``) at every point; log
    densities equal up to one constant (round-off of values of magnitude up to ~1e3)."""
    values = {b: [] for b in densities}
    for point in points:
        grads = {}
        for backend, density in densities.items():
            logp, grad = density(point)
            values[backend].append(logp)
            grads[backend] = np.concatenate([np.ravel(grad[k]) for k in densities["pymc"].shapes])
        for backend in densities:
            np.testing.assert_allclose(grads[backend], grads["pymc"], rtol=GRAD_RTOL, atol=grad_atol,
                                       err_msg=f"gradient of {backend} vs pymc at {point}")
    for backend in densities:
        offsets = np.asarray(values[backend]) - np.asarray(values["pymc"])
        assert np.all(np.isfinite(offsets)), (backend, values)
        assert np.ptp(offsets) < 1e-8 * max(1.0, np.abs(values["pymc"]).max()), (backend, offsets)


#: The case PyStan also runs by default (the seed's declaration: flat priors, a factor, lbeta).
PYSTAN_CASE = ("beta-binomial", "seed")


@pytest.mark.parametrize("name,parametrization,stan_engine", [
    pytest.param(name, parametrization, engine.values[0], id=f"{name}-{parametrization}-{engine.id}", marks=engine.marks)
    for name, parametrization in CASES
    for engine in stan_engines_of_a_repeat((name, parametrization) == PYSTAN_CASE)])
def test_log_densities_and_gradients_agree(name, parametrization, stan_engine):
    model, dataset = _model_and_data(name, parametrization)
    found = densities(model, dataset, stan_engine)
    shapes = found["pymc"].shapes
    rng = np.random.default_rng(20261124)
    points = []
    for _ in range(N_POINTS):
        # Points in the region a sampler visits: unconstrained values in (-2, 2), and for the
        # seed's flat (a, b) declaration, positive values where the density is finite.
        point = {k: rng.uniform(-2, 2, size=s) for k, s in shapes.items()}
        if parametrization == "seed":
            point["a"], point["b"] = rng.uniform(0.5, 5.0), rng.uniform(0.5, 5.0)
        points.append(point)
    assert_same_density(found, points)
