"""A model of your own with few rows per group: log radon in 20 houses of 6 counties, a
varying intercept per county and one slope for the floor measured (0 basement, 1 ground
floor). Declared non-centered, the usual advice for hierarchical models; with this little
data a county's intercept is still pinned well enough by its rows that the non-centered form
has a funnel of its own, and at the default target acceptance (0.9) a sampler can diverge.
`polyppl compare` then climbs its remedies ladder (every backend again at 0.95, then 0.99, ...)
and says what it did:

    uv run polyppl compare examples/varying_intercepts.py:varying_intercepts
"""

import numpy as np

from polyppl import spec as s

COUNTIES = ("Aitkin", "Anoka", "Becker", "Beltrami", "Benton", "Blue Earth")
#: One row per house: its county (an index into COUNTIES), the floor measured, log radon.
COUNTY = (0, 1, 2, 3, 4, 5, 5, 3, 3, 1, 1, 0, 0, 0, 1, 4, 3, 5, 3, 3)
FLOOR = (1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1)
LOG_RADON = (0.68, 1.14, 1.15, 0.43, 0.97, 0.3, 1.1, 0.35, 0.59, 1.42, 1.63, 0.64, 0.68, 0.98, 0.83, 1.48, 1.1, 0.66,
             1.7, 1.05)


def varying_intercepts() -> tuple[s.Model, s.Dataset]:
    county, floor = s.Var("county"), s.Var("floor")
    model = s.Model("varying-intercepts", (
        s.Data("county", "int", ("house",), index_of="county_name"),
        s.Data("floor", "real", ("house",)),
        s.Param("mu_a", s.Normal(0.0, 5.0)),
        s.Param("sigma_a", s.HalfNormal(1.0)),
        s.Param("b", s.Normal(0.0, 2.0)),
        s.Param("sigma_y", s.HalfNormal(1.0)),
        s.Param("a", s.Normal(s.Var("mu_a"), s.Var("sigma_a")), ("county_name",)),
        s.Observed("log_radon", s.Normal(s.Var("a")[county] + s.Var("b") * floor, s.Var("sigma_y")), ("house",)),
        # What the user came for: is radon lower on the ground floor?
        s.prob("prob_ground_floor_lower", s.Var("b") < 0.0, (), "P(ground floor lower)"),
    ))
    data = s.Dataset(values={"county": np.array(COUNTY), "floor": np.array(FLOOR, dtype=float),
                             "log_radon": np.array(LOG_RADON)},
                     coords={"county_name": COUNTIES, "house": tuple(range(len(COUNTY)))})
    return s.noncentered(model, ["a"]), data
