"""The spec's matrices, LKJ Cholesky and Poisson log-link family, and formula models, compile
to the same log density on PyMC, NumPyro and Stan (PyStan, and cmdstanpy where CmdStan is
installed).

At random points of the unconstrained space the compiled log densities (Jacobians included)
differ only by a constant and their gradients agree to 1e-8 relative: exact arithmetic on
the same expression, so the tolerance is float64 round-off, not Monte Carlo error. The
formulas are drawn by a seeded generator from pools of fixed parts and grouping structures,
one or two per family, and the draw is checked to cover every family, a single intercept
term, correlated and uncorrelated terms, several grouping factors, nesting, two blocks of
one factor and the centered form.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from polyppl import spec as s
from polyppl.backends import get_backend
from polyppl.backends.stan import cmdstan_path
from polyppl.models.formula import compile_formula
from polyppl.models.formula import predictor as formula_predictor

GRAD_RTOL = 1e-8
N_POINTS = 3
STAN_ENGINES = ["pystan"] + (["cmdstanpy"] if cmdstan_path() else [])

FIXED = ["x", "x + w", "per", "x * per", "0 + per + x", "x + x:w"]
#: Grouping structures: what each covers, and whether it has a correlated block.
GROUPS = {
    "(1 | g)": ("one intercept term", False),
    "(1 + x | g)": ("correlated", True),
    "(1 + x || g)": ("uncorrelated", False),
    "(1 | g) + (1 + w | h)": ("several factors", True),
    "(1 + x + w | g) + (1 | g:h)": ("correlated (3 terms), nesting", True),
    "(1 | g/h)": ("nesting", False),
    "(1 | g) + (0 + x | g)": ("two blocks of one factor", False),
}
RESPONSES = {
    "bernoulli": ["y01"],
    "binomial": ["cbind(k, n - k)", "k | trials(n)"],
    "poisson": ["c"],
    "gaussian": ["yr"],
}


def _data(rng: np.random.Generator, rows: int = 60) -> pd.DataFrame:
    n = rng.integers(1, 6, rows)
    return pd.DataFrame({
        "y01": rng.integers(0, 2, rows), "k": rng.binomial(n, 0.4), "n": n, "c": rng.poisson(3.0, rows),
        "yr": rng.normal(10.0, 3.0, rows), "x": rng.integers(0, 3, rows).astype(float), "w": rng.normal(0, 1, rows),
        "per": rng.choice(["p1", "p2", "p3"], rows), "g": rng.choice(["a", "b", "c", "d"], rows),
        "h": rng.choice(["u", "v"], rows), "e": rng.uniform(0.5, 2.0, rows),
    })


def drawn_formulas() -> list[tuple[str, str, str, str]]:
    """(formula, family, parametrization, structure): every grouping structure once, in an
    order drawn with a fixed seed, the families in turn, each with a drawn fixed part; the
    centered form for every other uncorrelated structure."""
    rng = np.random.default_rng(20261201)
    families = list(RESPONSES)
    cases, uncorrelated_seen = [], 0
    for i, structure in enumerate(rng.permutation(list(GROUPS))):
        family = families[i % len(families)]
        responses = RESPONSES[family]
        response = responses[(i // len(families)) % len(responses)]
        fixed = FIXED[rng.integers(len(FIXED))]
        offset = " + offset(log(e))" if family == "poisson" else ""
        parametrization = "noncentered"
        if not GROUPS[structure][1]:
            uncorrelated_seen += 1
            parametrization = "centered" if uncorrelated_seen % 2 == 0 else "noncentered"
        cases.append((f"{response} ~ {fixed}{offset} + {structure}", family, parametrization, str(structure)))
    return cases


CASES = drawn_formulas()


def test_the_drawn_formulas_cover_every_family_and_structure():
    assert {family for _, family, _, _ in CASES} == set(RESPONSES)
    assert {structure for *_, structure in CASES} == set(GROUPS)
    assert any(formula.startswith("cbind(") for formula, *_ in CASES)
    assert any("| trials(" in formula for formula, *_ in CASES)
    assert any(p == "centered" for _, _, p, _ in CASES)


def _densities(model: s.Model, dataset: s.Dataset, stan_engines: list[str] = STAN_ENGINES) -> dict:
    out = {b: get_backend(b).compile(model, dataset).log_density() for b in ("pymc", "numpyro")}
    for engine in stan_engines:
        out[f"stan:{engine}"] = get_backend("stan").compile(model, dataset, engine=engine).log_density()
    return out


def _assert_agree(model: s.Model, dataset: s.Dataset, seed: int, stan_engines: list[str] = STAN_ENGINES) -> None:
    densities = _densities(model.density_model(), dataset, stan_engines)
    shapes = densities["pymc"].shapes
    for name, density in densities.items():
        assert {k: tuple(v) for k, v in density.shapes.items()} == {k: tuple(v) for k, v in shapes.items()}, name
    rng = np.random.default_rng(seed)
    values = {name: [] for name in densities}
    for _ in range(N_POINTS):
        point = {k: rng.uniform(-2, 2, size=shape) for k, shape in shapes.items()}
        gradients = {}
        for name, density in densities.items():
            logp, gradient = density(point)
            values[name].append(logp)
            gradients[name] = np.concatenate([np.ravel(gradient[k]) for k in shapes])
        for name in densities:
            np.testing.assert_allclose(gradients[name], gradients["pymc"], rtol=GRAD_RTOL, atol=1e-10,
                                       err_msg=f"gradient of {name} vs pymc")
    for name in densities:
        offsets = np.asarray(values[name]) - np.asarray(values["pymc"])
        assert np.ptp(offsets) < 1e-8 * max(1.0, np.abs(values["pymc"]).max()), (name, offsets)


#: The default run (CI) checks the first drawn formula (a correlated block of three terms,
#: an interaction and nesting); `pytest -m slow` all of them.
IN_DEFAULT_RUN = 1


@pytest.mark.parametrize("formula,family,parametrization,structure", [
    pytest.param(*case, marks=() if i < IN_DEFAULT_RUN else (pytest.mark.slow,)) for i, case in enumerate(CASES)])
def test_formula_log_densities_agree(formula, family, parametrization, structure):
    data = _data(np.random.default_rng(zlib.crc32(formula.encode())))
    compiled = compile_formula(formula, data, family, parametrization=parametrization)
    assert "XZ" in compiled.dataset.values  # these small models' group effects are design columns
    _assert_agree(compiled.model, compiled.dataset, seed=7)


def test_gathered_group_effects_agree(monkeypatch):
    """The first drawn formula with its group effects gathered per cell, as a model with more
    than ``DENSE_GROUP_EFFECTS`` of them is written (Stan on one engine, cmdstanpy where
    installed: the other engine's path is the same for any program)."""
    monkeypatch.setattr(formula_predictor, "DENSE_GROUP_EFFECTS", 0)
    formula, family, parametrization, _ = CASES[0]
    data = _data(np.random.default_rng(zlib.crc32(formula.encode())))
    compiled = compile_formula(formula, data, family, parametrization=parametrization)
    assert "XZ" not in compiled.dataset.values and "J_g_1" in compiled.dataset.values
    _assert_agree(compiled.model, compiled.dataset, seed=7, stan_engines=STAN_ENGINES[-1:])


def test_matrix_functions_and_families_agree():
    """Every new function and family in one model: matmul (matrix by vector and by matrix),
    transpose, diag_pre_multiply, rows_dot, indexing the rows of a matrix, concat of a
    matrix and a vector, LKJ Cholesky (K = 3), a 2-D Normal parameter, Normal with a scale
    parameter, Poisson by its log rate."""
    rng = np.random.default_rng(3)
    n, k = 9, 3
    X, b, L, z, sd = (s.Var(v) for v in ("X", "b", "L", "z", "sd"))
    model = s.Model("features", (
        s.Data("X", "real", ("cell", "coef")),
        s.Data("J", "int", ("cell",), index_of="level"),
        s.Data("E", "int", ("cell",), index_of="element"),
        s.Data("Z", "real", ("cell", "term")),
        s.Data("first", "int", ("pair",), index_of="term"),
        s.Data("second", "int", ("pair",), index_of="term"),
        s.Param("b", s.Normal(0, 2), ("coef",)),
        s.Param("sd", s.HalfStudentT(3, 1.5), ("term",)),
        s.Param("L", s.LKJCholesky(2.0), ("term", "component")),
        s.Param("z", s.Normal(0, 1), ("component", "level")),
        s.Deterministic("r", s.transpose(s.matmul(s.diag_pre_multiply(sd, L), z)), ("level", "term")),
        s.Deterministic("all", s.concat("element", s.Var("r"), b), ("element",)),
        s.Deterministic("cor", s.rows_dot(L[s.Var("first")], L[s.Var("second")]), ("pair",)),
        s.Param("sigma", s.HalfNormal(1.0)),
        s.Observed("y", s.Normal(s.matmul(X, b) + s.rows_dot(s.Var("Z"), s.Var("r")[s.Var("J")]), s.Var("sigma")),
                   ("cell",)),
        s.Observed("count", s.PoissonLog(s.matmul(X, b) + s.Var("all")[s.Var("E")]), ("cell",)),
    ))
    first, second = np.tril_indices(k, -1)
    dataset = s.Dataset(
        {"X": rng.normal(size=(n, 2)), "J": rng.integers(0, 4, n), "E": rng.integers(0, 4 * k + 2, n), "Z": rng.normal(size=(n, k)),
         "first": first, "second": second, "y": rng.normal(size=n), "count": rng.poisson(2.0, n)},
        {"cell": tuple(range(n)), "coef": ("a", "b"), "level": ("l1", "l2", "l3", "l4"), "term": ("t1", "t2", "t3"),
         "component": ("c1", "c2", "c3"), "pair": ("1,0", "2,0", "2,1"), "element": tuple(range(4 * k + 2))},
    )
    s.check_dataset(model, dataset)
    _assert_agree(model, dataset, seed=11)
