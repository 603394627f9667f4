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
