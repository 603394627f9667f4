"""A model of your own: event counts at eight sites with different exposures, and site rates
that share a log-normal distribution. Run it on every backend with

    uv run polyppl compare examples/hierarchical_poisson.py:hierarchical_poisson
"""

import numpy as np

from polyppl import spec as s

SITES = ("north", "south", "east", "west", "centre", "harbour", "airport", "hills")
EXPOSURE = (10.0, 20.0, 5.0, 30.0, 15.0, 25.0, 8.0, 12.0)
COUNTS = (31, 112, 9, 88, 35, 81, 30, 22)


def hierarchical_poisson() -> tuple[s.Model, s.Dataset]:
    mu, sigma = s.Var("mu"), s.Var("sigma")
    model = s.Model("hierarchical-poisson", (
        s.Data("exposure", "real", ("site",), lower=0),
        s.Param("mu", s.Normal(0.0, 2.0)),
        s.Param("sigma", s.HalfNormal(1.0)),
        # Centered: each site's count pins its rate well, so there is no funnel to avoid.
        s.Param("log_rates", s.Normal(mu, sigma), ("site",)),
        s.Deterministic("rates", s.exp(s.Var("log_rates")), ("site",)),
        s.Observed("y", s.Poisson(s.Var("exposure") * s.Var("rates")), ("site",)),
        # What the user came for: how likely each site's rate is above 3 per unit of exposure.
        s.prob("prob_rate_above_3", s.Var("rates") > 3.0, ("site",), "P(rate > 3)"),
    ))
    data = s.Dataset(values={"exposure": np.array(EXPOSURE), "y": np.array(COUNTS)}, coords={"site": SITES})
    return model, data


#: The same model without data: its data come from a CSV with columns exposure,y and one
#: row per site (`polyppl compare examples/hierarchical_poisson.py:MODEL --data sites.csv`).
MODEL = hierarchical_poisson()[0]
