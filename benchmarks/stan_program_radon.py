"""A Stan program's loop, lowered: per gradient, against idiomatic hand-written twins.

    uv run python benchmarks/stan_program_radon.py

posteriordb's ``radon_mn-radon_variable_intercept_noncentered`` loops over 919 rows
(``for (n in 1:N) { mu[n] = alpha[county_idx[n]] + floor_measure[n] * beta; target +=
normal_lpdf(log_radon[n] | mu[n], sigma_y); }``). The Stan front end lowers the loop to one
vector expression; this times the lowered model's log density and gradient on PyMC
(``logp_dlogp_function``) and NumPyro (value and gradient of the potential, 1000 points in
one compiled loop) against the same model written by hand, vectorized, in PyMC and NumPyro
directly, in alternating blocks (``harness.interleaved_seconds``, medians of 11 blocks).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from polyppl.models.stan_program import stan_program

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import interleaved_seconds  # noqa: E402  (the benchmarks' own timing loop)

PROGRAM = ROOT / "tests" / "data" / "posteriordb" / "radon_variable_intercept_noncentered.stan"
DATA = ROOT / "tests" / "data" / "posteriordb" / "radon_mn.json.zip"


def handwritten_pymc(values: dict):
    import pymc as pm

    county = np.asarray(values["county_idx"]) - 1
    with pm.Model() as model:
        alpha_raw = pm.Normal("alpha_raw", 0, 1, shape=values["J"])
        beta = pm.Normal("beta", 0, 10)
        mu_alpha = pm.Normal("mu_alpha", 0, 10)
        sigma_alpha = pm.HalfNormal("sigma_alpha", 1)
        sigma_y = pm.HalfNormal("sigma_y", 1)
        alpha = mu_alpha + sigma_alpha * alpha_raw
        pm.Normal("log_radon", alpha[county] + np.asarray(values["floor_measure"]) * beta, sigma_y,
                  observed=np.asarray(values["log_radon"]))
    return model


def handwritten_numpyro(values: dict):
    import numpyro
    import numpyro.distributions as dist

    county = np.asarray(values["county_idx"]) - 1
    floor, y = np.asarray(values["floor_measure"]), np.asarray(values["log_radon"])

    def model():
        alpha_raw = numpyro.sample("alpha_raw", dist.Normal(0, 1).expand([values["J"]]))
        beta = numpyro.sample("beta", dist.Normal(0, 10))
        mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0, 10))
        sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(1))
        sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1))
        alpha = mu_alpha + sigma_alpha * alpha_raw
        numpyro.sample("log_radon", dist.Normal(alpha[county] + floor * beta, sigma_y), obs=y)

    return model


def pymc_call(pymc_model):
    function = pymc_model.logp_dlogp_function(ravel_inputs=True)
    function.set_extra_values({})
    point = np.concatenate([np.ravel(v) for v in pymc_model.initial_point().values()])
    return (lambda f=function, p=point: f(p)), 1


def numpyro_call(model_function):
    import jax
    from numpyro.infer.util import initialize_model

    init = initialize_model(jax.random.PRNGKey(0), model_function)
    n = 1000
    shift = jax.numpy.linspace(-0.1, 0.1, n)
    points = jax.tree.map(lambda v: v + shift.reshape((n,) + (1,) * v.ndim), init.param_info.z)
    loop = jax.jit(lambda zs, f=init.potential_fn: jax.lax.map(jax.value_and_grad(f), zs))
    return (lambda lp=loop, zs=points: jax.block_until_ready(lp(zs))), n


def main() -> None:
    import json

    from polyppl.backends.numpyro.compiler import build as numpyro_build
    from polyppl.backends.numpyro.compiler import configure_jax
    from polyppl.backends.pymc.compiler import build as pymc_build

    problem = stan_program(PROGRAM, DATA)
    values = json.loads(problem.model.source.data_json)
    model, dataset = problem.model.density_model(), problem.dataset
    configure_jax("float64")
    pymc = interleaved_seconds({"lowered": pymc_call(pymc_build(model, dataset)),
                                "hand-written": pymc_call(handwritten_pymc(values))})
    numpyro = interleaved_seconds({"lowered": numpyro_call(numpyro_build(model, dataset)),
                                   "hand-written": numpyro_call(handwritten_numpyro(values))})
    print("per gradient (log density and gradient), radon_mn, 919 rows:")
    for backend, times in (("PyMC", pymc), ("NumPyro", numpyro)):
        ratio = times["lowered"] / times["hand-written"]
        print(f"  {backend:8s} lowered {times['lowered'] * 1e6:8.1f} us   hand-written "
              f"{times['hand-written'] * 1e6:8.1f} us   ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
