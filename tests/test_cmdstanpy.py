"""The cmdstanpy engine, wherever a CmdStan install exists (CI here has none: PyStan runs Stan)."""

import numpy as np
import pytest

from polyppl import SamplerSettings
from polyppl.backends import load
from polyppl.backends.stan_backend import cmdstan_path
from polyppl.models import MODELS
from polyppl.runner import sample

pytestmark = [
    pytest.mark.cmdstan,
    pytest.mark.skipif(cmdstan_path() is None, reason="no CmdStan install found (cmdstanpy.cmdstan_path())"),
]


def test_cmdstanpy_log_density_matches_pystan():
    builtin = MODELS["eight-schools"]
    dataset = builtin.dataset()
    model = builtin.spec(None, dataset)
    stan = load("stan")
    cmd, py = stan.log_density(model, dataset, "cmdstanpy"), stan.log_density(model, dataset, "pystan")
    rng = np.random.default_rng(0)
    values = []
    for _ in range(3):
        point = {k: rng.uniform(-2, 2, size=shape) for k, shape in py.shapes.items()}
        (lc, gc), (lp, gp) = cmd(point), py(point)
        values.append(lc - lp)
        for k in gc:
            np.testing.assert_allclose(gc[k], gp[k], rtol=1e-8, atol=1e-10)
    assert np.ptp(values) < 1e-8


def test_cmdstanpy_samples_and_says_so():
    builtin = MODELS["eight-schools"]
    dataset = builtin.dataset()
    idata = sample(builtin.spec(None, dataset), dataset, "stan",
                   SamplerSettings(chains=2, draws=200, tune=200, stan_engine="cmdstanpy"))
    assert idata.posterior.attrs["engine"] == "cmdstanpy"
    assert idata.posterior["theta"].dims == ("chain", "draw", "school")
