"""The checked-in Stan programs are exactly what the compiler writes."""

import pytest

from polyppl.backends.stan.program import builtin_programs

PROGRAMS = builtin_programs()


@pytest.mark.parametrize("filename", sorted(PROGRAMS))
def test_checked_in_program_matches_generator(repo, filename):
    path = repo / "stan_models" / filename
    assert path.exists(), f"{path} is missing; regenerate with `polyppl stan-programs --write stan_models`"
    assert path.read_text() == PROGRAMS[filename], (
        f"{path} differs from the generator; regenerate with `polyppl stan-programs --write stan_models`"
    )


def test_every_checked_in_program_is_generated(repo):
    on_disk = {p.name for p in (repo / "stan_models").glob("*.stan")}
    assert on_disk == set(PROGRAMS)


def test_integer_data_in_arithmetic_is_converted_once():
    """`treated` (0/1 integers) multiplies a vector: the program converts it to a vector in
    `transformed data`, not with `to_vector` in the model block, which would allocate in
    every gradient evaluation (benchmarks/RESULTS.md)."""
    program = PROGRAMS["multilevel_logistic.stan"]
    transformed_data = program.split("transformed data {")[1].split("}")[0]
    model_block = program.split("\nmodel {")[1].split("}")[0]
    assert "vector[N_cell] treated_real = to_vector(treated);" in transformed_data
    assert "to_vector" not in model_block and ".* treated_real" in model_block


@pytest.mark.parametrize("family,formula,glm", [
    ("bernoulli", "y ~ x + (1 | g)", "y ~ bernoulli_logit_glm(XZ, 0, append_row(b, r));"),
    ("binomial", "k | trials(n) ~ x + (1 + x || g)", "y ~ binomial_logit_glm(trials, XZ, 0, append_row(b, r));"),
    ("poisson", "c ~ x + offset(log(e))", "y ~ poisson_log_glm(X, offsets, b);"),
    ("gaussian", "w ~ x + (1 | g)", "y ~ normal_id_glm(XZ, 0, append_row(b, r), sigma);"),
    # Past 64 group effects, each effect is gathered for its cells.
    ("bernoulli", "y ~ x + (1 | id)", "y ~ bernoulli_logit_glm(X, r[J_id_1], b);"),
    ("binomial", "k | trials(n) ~ x + (1 + x || id)", "y ~ binomial_logit_glm(trials, X, r[J_id_1] + Z_id_2 .* r[J_id_2], b);"),
])
def test_a_design_matrix_times_b_is_written_as_stans_glm_function(family, formula, glm):
    """``y ~ family(X * b + alpha)`` with X a data matrix is one fused GLM density in Stan,
    as brms writes it; a small model's group effects are columns of that matrix (``XZ``).
    The log densities are the same as the other backends' (test_formula_density.py)."""
    import numpy as np
    import pandas as pd

    from polyppl.backends.stan.program import stan_program
    from polyppl.models.formula import compile_formula

    rng = np.random.default_rng(3)
    rows = 140
    n = rng.integers(1, 5, rows)
    data = pd.DataFrame({"y": rng.integers(0, 2, rows), "k": rng.binomial(n, 0.5), "n": n,
                         "c": rng.poisson(2.0, rows), "w": rng.normal(size=rows), "x": rng.normal(size=rows),
                         "e": rng.uniform(1, 2, rows), "g": rng.choice(["a", "b", "c"], rows),
                         "id": [f"i{k % 70}" for k in range(rows)]})
    program = stan_program(compile_formula(formula, data, family).model)
    assert glm in program.split("\nmodel {")[1], program


def test_the_engines_compile_the_program_without_its_header(tmp_path):
    """A formula's program names its data file in its header comments; the engines compile
    the program with them emptied, so the same formula on another file reuses the
    executable, and line numbers stay those of the program `show` prints."""
    import pandas as pd

    from polyppl.backends.stan.program import engine_code, stan_program
    from polyppl.models.formula import compile_formula

    frame = pd.DataFrame({"y": [0, 1, 1, 0, 1, 0], "g": ["a", "a", "b", "b", "c", "c"]})
    programs = []
    for name in ("first.csv", "second.csv"):
        frame.to_csv(tmp_path / name, index=False)
        programs.append(stan_program(compile_formula("y ~ 1 + (1 | g)", tmp_path / name, "bernoulli").model))
    assert programs[0] != programs[1] and "first.csv" in programs[0]
    assert engine_code(programs[0]) == engine_code(programs[1])
    assert "first.csv" not in engine_code(programs[0])
    # Line for line the same program, so that Stan's messages point at the lines `show` prints.
    assert [line for line in engine_code(programs[0]).splitlines() if not line.startswith("//")] == \
        [line for line in programs[0].splitlines() if not line.startswith("//")]
    assert len(engine_code(programs[0]).splitlines()) == len(programs[0].splitlines())
