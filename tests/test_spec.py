"""The specification rejects models no compiler could build, and its rewrites keep names."""

import numpy as np
import pytest

from polyppl import spec as s
from polyppl.models import MODELS, multilevel_logistic


def test_reference_before_declaration_is_an_error():
    with pytest.raises(s.SpecError, match="uses 'mu' before it is declared"):
        s.Model("m", (s.Param("x", s.Normal(s.Var("mu"), 1.0)), s.Param("mu", s.Normal(0, 1))))


def test_duplicate_and_reserved_names_are_errors():
    with pytest.raises(s.SpecError, match="declared twice"):
        s.Model("m", (s.Param("x", s.Normal(0, 1)), s.Param("x", s.Normal(0, 1))))
    with pytest.raises(s.SpecError, match="not a usable name"):
        s.Model("m", (s.Param("target", s.Normal(0, 1)),))


def test_distribution_arguments_are_checked():
    with pytest.raises(TypeError):
        s.Uniform(1.0, 0.0)
    with pytest.raises(TypeError, match="cannot use"):
        s.Normal("zero", 1.0)


def test_noncentered_rewrite_keeps_output_names():
    builtin = MODELS["eight-schools"]
    dataset = builtin.dataset()
    centered, noncentered = builtin.spec("centered", dataset), builtin.spec("noncentered", dataset)
    assert set(centered.output_names) <= set(noncentered.output_names)
    assert isinstance(noncentered["theta"], s.Deterministic)
    assert isinstance(noncentered["theta_z"], s.Param)


def test_mismatched_dims_are_errors():
    model = s.Model("m", (s.Param("x", s.Normal(0, 1), ("a",)), s.Param("y", s.Normal(0, 1), ("b",)),
                          s.Deterministic("z", s.Var("x") + s.Var("y"), ("a",))))
    with pytest.raises(s.SpecError, match="cannot combine"):
        s.expr_dims(model, model["z"].expr)


def test_row_level_data_aggregates_to_the_seed_counts():
    cells = multilevel_logistic.aggregate(multilevel_logistic.seed_rows())
    assert cells.values["trials"].tolist() == [100, 100, 100, 100]
    assert cells.values["successes"].tolist() == [30, 50, 55, 60]
    assert [cells.coords["group"][g] for g in cells.values["group_idx"]] == ["Canada", "Canada", "China", "China"]
    assert cells.values["treated"].tolist() == [0, 1, 0, 1]


def test_csv_files_read_like_scenarios(tmp_path):
    path = tmp_path / "ab.csv"
    path.write_text("variant,trials,successes\nA,100,30\nB,100,50\n")
    data = MODELS["beta-binomial"].read_csv(path)
    assert data.coords["variant"] == ("A", "B")
    np.testing.assert_array_equal(data.values["successes"], [30, 50])
    rows = tmp_path / "rows.csv"
    rows.write_text("group,treated,success\n" + "".join(f"{g},{t},{y}\n" for g in "XY" for t in (0, 1) for y in (0, 1, 1)))
    cells = MODELS["multilevel-logistic"].read_csv(rows)
    assert cells.values["trials"].tolist() == [3, 3, 3, 3] and cells.values["successes"].tolist() == [2, 2, 2, 2]
