"""Row-level A/B data (group, treated, success) compressed to counts per cell gives the
same posterior as the row-level Bernoulli model.

The Bernoulli likelihood of a cell's rows and the Binomial likelihood of its counts differ
by the constant log C(n, k), so the log densities differ by a constant and their gradients
are equal (checked to float64 round-off), and the sampled posteriors agree within Monte
Carlo error (checked against the MCSEs).
"""

import numpy as np
import pytest

from polyppl import SamplerSettings, run
from polyppl.backends import get_backend
from polyppl.models import MODELS, Labels, Problem, multilevel_logistic
from stat_tolerance import FAMILY_ALPHA, t_threshold

BUILTIN = MODELS["multilevel-logistic"]
GRAD_RTOL = 1e-8


def _rows_and_counts():
    rows = multilevel_logistic.seed_rows()
    return rows, multilevel_logistic.aggregate(rows)


@pytest.mark.parametrize("parametrization", BUILTIN.parametrizations)
def test_log_densities_differ_by_a_constant(parametrization):
    rows, counts = _rows_and_counts()
    pymc = get_backend("pymc")
    row_density = pymc.compile(BUILTIN.spec(parametrization, rows), rows).log_density()
    count_density = pymc.compile(BUILTIN.spec(parametrization, counts), counts).log_density()
    rng = np.random.default_rng(5)
    differences = []
    for _ in range(5):
        point = {k: rng.uniform(-2, 2, size=s) for k, s in row_density.shapes.items()}
        logp_rows, grad_rows = row_density(point)
        logp_counts, grad_counts = count_density(point)
        differences.append(logp_rows - logp_counts)
        for name in grad_rows:
            np.testing.assert_allclose(grad_rows[name], grad_counts[name], rtol=GRAD_RTOL, atol=1e-10)
    np.testing.assert_allclose(differences, differences[0], rtol=0, atol=1e-8)


@pytest.mark.false_alarm(FAMILY_ALPHA)
def test_posteriors_agree_within_monte_carlo_error():
    rows, counts = _rows_and_counts()
    settings = SamplerSettings(chains=4, draws=1000, tune=1000, seed=11)
    summaries = {}
    for name, dataset in (("rows", rows), ("counts", counts)):
        problem = Problem(BUILTIN.spec(None, dataset), dataset, Labels(BUILTIN.name, name))
        summaries[name] = run(problem, "pymc", settings=settings).summaries
    assert summaries["rows"].keys() == summaries["counts"].keys()
    # Posterior means may differ by this many standard errors of their difference,
    # sqrt(mcse_rows^2 + mcse_counts^2). Both MCSEs are estimated, so the gap over its error
    # is referred to Student's t with 4 x chains - 1 degrees of freedom (as in the agreement
    # study); Bonferroni over the quantities at a family false-alarm rate of 0.1%.
    multiple = t_threshold(FAMILY_ALPHA, len(summaries["rows"]), settings.chains)
    for quantity, row_summary in summaries["rows"].items():
        count_summary = summaries["counts"][quantity]
        error = np.hypot(row_summary.mcse_mean, count_summary.mcse_mean)
        gap = row_summary.mean - count_summary.mean
        assert abs(gap) <= multiple * error, (quantity, gap / error, multiple)


def _write_rows(path, groups, treated, success):
    lines = ["group,treated,success"] + [f"{g},{t},{y}" for g, t, y in zip(groups, treated, success)]
    path.write_text("\n".join(lines) + "\n")


def test_many_rows_aggregate_to_the_right_counts(tmp_path):
    rng = np.random.default_rng(3)
    n = 100_000
    names = np.array(["Canada", "China", "Chile"])
    group = rng.integers(0, 3, n)
    treated = rng.integers(0, 2, n)
    success = rng.integers(0, 2, n)
    path = tmp_path / "rows.csv"
    _write_rows(path, names[group], treated, success)

    counts = multilevel_logistic.read_csv(path)
    groups_in_file_order = list(dict.fromkeys(names[group]))
    assert list(counts.coords["group"]) == groups_in_file_order
    for g, t, trials, successes in zip(*(counts.values[k] for k in ("group_idx", "treated", "trials", "successes"))):
        cell = (names[group] == groups_in_file_order[g]) & (treated == t)
        assert trials == cell.sum()
        assert successes == success[cell].sum()
    assert counts.values["trials"].sum() == n

    rows = multilevel_logistic.read_csv(path, row_level=True)
    assert len(rows.values["success"]) == n
    assert "success" in rows.values and "trials" not in rows.values
    assert BUILTIN.spec(None, rows).observed[0].dist.family == "bernoulli_logit"
    assert BUILTIN.spec(None, counts).observed[0].dist.family == "binomial_logit"
