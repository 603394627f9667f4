"""A model of your own: counts per site with exposures, and site rates that share a
log-normal distribution. Run it on every backend with

    uv run polyppl compare examples/hierarchical_poisson.py:hierarchical_poisson
"""

import numpy as np

from polyppl import spec as s


def hierarchical_poisson() -> tuple[s.Model, s.Dataset]:
    mu, sigma = s.Var("mu"), s.Var("sigma")
    model = s.Model("hierarchical-poisson", (
        s.Data("exposure", "real", ("site",), lower=0),
        s.Param("mu", s.Normal(0.0, 2.0)),
        s.Param("sigma", s.HalfStudentT(3.0, 1.0)),
        s.Param("z", s.Normal(0.0, 1.0), ("site",)),
        s.Deterministic("rates", s.exp(mu + sigma * s.Var("z")), ("site",)),
        s.Observed("y", s.Poisson(s.Var("exposure") * s.Var("rates")), ("site",)),
        # What the user came for: for each site, how likely its rate is above 2 per unit exposure.
        s.prob("prob_rate_above_2", s.Var("rates") > 2.0, ("site",), "P(rate > 2)"),
    ))
    data = s.Dataset(values={"exposure": np.array([1.0, 2.0, 0.5]), "y": np.array([3, 11, 0])},
                     coords={"site": ("north", "south", "east")})
    return model, data


#: The same model without data: its data come from a CSV with columns exposure,y and one
#: row per site (`polyppl compare examples/hierarchical_poisson.py:MODEL --data sites.csv`).
MODEL = hierarchical_poisson()[0]
