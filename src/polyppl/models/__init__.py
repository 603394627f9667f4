"""The built-in models, by name."""

from __future__ import annotations

from polyppl.errors import unknown
from polyppl.models import beta_binomial, eight_schools, multilevel_logistic
from polyppl.models.base import BuiltinModel, DecisionDraws, Scenario

MODELS: dict[str, BuiltinModel] = {
    m.name: m for m in (multilevel_logistic.MODEL, beta_binomial.MODEL, eight_schools.MODEL)
}


def get_model(name: str) -> BuiltinModel:
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    return MODELS[name]


__all__ = ["MODELS", "BuiltinModel", "DecisionDraws", "Scenario", "builtin_stan_programs", "get_model"]


def builtin_stan_programs() -> dict[str, str]:
    """The checked-in ``stan_models/*.stan``: each built-in model and parametrization on its
    default scenario. The default parametrization has the plain name."""
    from polyppl.backends.stan_program import stan_program

    out = {}
    for model in MODELS.values():
        dataset = model.dataset()
        for p in model.parametrizations:
            suffix = "" if p == model.default_parametrization else f"_{p}"
            out[f"{model.name.replace('-', '_')}{suffix}.stan"] = stan_program(model.spec(p, dataset))
    return out
