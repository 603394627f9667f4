"""The checked-in Stan programs are exactly what the compiler writes."""

import pytest

from polyppl.models import builtin_stan_programs

PROGRAMS = builtin_stan_programs()


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
