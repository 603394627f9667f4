"""The specification rejects models no compiler could build, and its rewrites keep names."""

import dataclasses
import json

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


def test_mismatched_dims_are_errors_at_declaration_naming_the_node():
    with pytest.raises(s.SpecError, match="'z': cannot combine values with dims"):
        s.Model("m", (s.Param("x", s.Normal(0, 1), ("a",)), s.Param("y", s.Normal(0, 1), ("b",)),
                      s.Deterministic("z", s.Var("x") + s.Var("y"), ("a",))))
    with pytest.raises(s.SpecError, match="'y': argument mu has dims"):
        s.Model("m", (s.Param("x", s.Normal(0, 1), ("a",)), s.Param("y", s.Normal(s.Var("x"), 1), ("b",))))
    with pytest.raises(s.SpecError, match="'w': its expression has dims"):
        s.Model("m", (s.Param("x", s.Normal(0, 1), ("a",)), s.Deterministic("w", s.exp(s.Var("x")))))
    with pytest.raises(s.SpecError, match="'f': a factor must be a scalar"):
        s.Model("m", (s.Param("x", s.Normal(0, 1), ("a",)), s.Factor("f", s.Var("x"))))


def test_constant_arguments_outside_their_constraint_are_errors():
    with pytest.raises(ValueError, match="normal: argument sigma must be positive, got -1.0"):
        s.Normal(0, -1)
    with pytest.raises(ValueError, match="beta_binomial: argument n must be a whole number >= 0"):
        s.BetaBinomial(2.5, 1.0, 1.0)


def test_conditionals_and_decisions_stay_out_of_the_density():
    model = MODELS["beta-binomial"].spec("marginal", MODELS["beta-binomial"].dataset())
    density = model.density_model()
    assert "rates" in model.output_names and "rates" not in density.output_names
    assert not density.decisions and {d.name for d in model.decisions} == {"prob_beats", "prob_best"}
    with pytest.raises(s.SpecError, match="drawn only after sampling"):
        s.Model("m", (s.Param("x", s.Normal(0, 1)), s.Conditional("c", s.Normal(s.Var("x"), 1)),
                      s.Observed("y", s.Normal(s.Var("c"), 1))))


def test_models_and_datasets_survive_json_with_the_same_hash():
    from polyppl.spec.serialize import (dataset_from_json, dataset_hash, dataset_to_json, model_from_json,
                                        model_hash, model_to_json)

    for builtin in MODELS.values():
        dataset = builtin.dataset()
        for parametrization in builtin.parametrizations:
            model = builtin.spec(parametrization, dataset)
            again = model_from_json(model_to_json(model))
            assert model_hash(again) == model_hash(model) and again.output_names == model.output_names
        assert dataset_hash(dataset_from_json(dataset_to_json(dataset))) == dataset_hash(dataset)
    changed = MODELS["eight-schools"].spec("noncentered", MODELS["eight-schools"].dataset())
    nodes = tuple(s.Param("mu", s.Normal(0.0, 5.5)) if n.name == "mu" else n for n in changed.nodes)
    assert model_hash(s.Model(changed.name, nodes)) != model_hash(changed)


def test_arrays_keep_their_shape_through_json():
    """A 0-d array (a Stan program's constant index, ``n2_1``) stays 0-d: a child process
    that got it back 1-d failed to save its fit."""
    from polyppl.spec.serialize import array_from_json, array_to_json

    for value in (np.asarray(3), np.arange(6.0).reshape(2, 3), np.arange(6).reshape(3, 2).T):
        again = array_from_json(json.loads(json.dumps(array_to_json(value))))
        assert again.shape == value.shape and again.dtype == value.dtype
        np.testing.assert_array_equal(again, value)


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


def test_a_model_may_ask_for_a_higher_target_acceptance():
    """The default Beta-Binomial asks for 0.95 (a mild funnel remains); a target the user sets
    wins, and the fit request records the target that runs."""
    from polyppl import FitRequest, SamplerSettings
    from polyppl.models import MODELS
    from polyppl.spec.serialize import model_from_json, model_hash, model_to_json

    builtin = MODELS["beta-binomial"]
    dataset = builtin.dataset()
    marginal, positive = (builtin.spec(p, dataset) for p in ("marginal", "positive"))
    assert marginal.target_accept == 0.95 and positive.target_accept is None
    assert marginal.density_model().target_accept == 0.95
    assert SamplerSettings().for_model(marginal).target_accept == 0.95
    assert SamplerSettings().for_model(positive).target_accept == 0.9
    assert SamplerSettings(target_accept=0.8).for_model(marginal).target_accept == 0.8
    assert FitRequest.make(marginal, dataset, "numpyro").settings.target_accept == 0.95
    again = model_from_json(model_to_json(marginal))
    assert again.target_accept == 0.95 and model_hash(again) == model_hash(marginal)
    assert model_hash(marginal) != model_hash(dataclasses.replace(marginal, target_accept=None))
    with pytest.raises(s.SpecError, match="target_accept"):
        s.Model("m", (s.Param("x", s.Normal(0.0, 1.0)),), target_accept=1.5)
