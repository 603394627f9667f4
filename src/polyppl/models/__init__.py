"""Models and their front ends: the built-in models by name, a user's model from a Python
file (``path/to/file.py:NAME``), a user's Stan program (``stan_program``: ``PROGRAM.stan``
with Stan JSON data), and (``formula``) lme4/brms formulas. Each becomes a
:class:`Problem`: a spec model with its data."""

from __future__ import annotations

from pathlib import Path

from polyppl.errors import UserError, unknown
from polyppl.models import beta_binomial, eight_schools, multilevel_logistic
from polyppl.models.base import BuiltinModel, Labels, Problem, Scenario, ShrinkagePanel
from polyppl.models.stan_program import is_stan_program, stan_program
from polyppl.models.user import is_user_model, load_user_model

MODELS: dict[str, BuiltinModel] = {
    m.name: m for m in (multilevel_logistic.MODEL, beta_binomial.MODEL, eight_schools.MODEL)
}


def get_model(name: str) -> BuiltinModel:
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    return MODELS[name]


def resolve(model: str, scenario: str | None = None, data: str | Path | None = None,
            parametrization: str | None = None) -> Problem:
    """A built-in model's name or ``FILE.py:NAME``, with its data, as a :class:`Problem`.
    Bad input fails here, before anything is sampled or written."""
    if is_stan_program(model):
        if scenario is not None or parametrization is not None:
            raise UserError(f"{model} is a Stan program: give its data with --data DATA.json (Stan's JSON format)")
        if data is None:
            raise UserError(f"{model} needs its data: --data DATA.json (Stan's JSON format, .json or .json.zip)")
        return stan_program(model, data)
    if is_user_model(model):
        if scenario is not None:
            raise UserError(f"{model} is a user model: give its data with --data FILE.csv, not --scenario")
        if parametrization is not None:
            raise UserError(f"{model} is a user model: --parametrization applies to built-in models only")
        return load_user_model(model, Path(data) if data is not None else None)
    return get_model(model).problem(scenario, Path(data) if data is not None else None, parametrization)


__all__ = ["MODELS", "BuiltinModel", "Labels", "Problem", "Scenario", "ShrinkagePanel", "get_model", "resolve"]
