"""Multilevel models written as lme4/brms formulas, compiled to an ordinary spec model.

``success ~ treated + (1 + treated | country)`` with a family and a CSV becomes a
:class:`~polyppl.models.base.Problem`: a spec ``Model`` and its ``Dataset``. Every
compiler, check, report and study then applies unchanged; no backend code is written here.

What is parsed where. The formula library ``formulae`` parses the fixed part and the terms
inside each group block and builds the design columns (treatment coding, interactions,
``0 +``/``- 1``, ``offset()``, nesting ``g1/g2`` and ``g1:g2``). Around it, this package fills
what formulae lacks: the response forms ``cbind(s, n - s)`` and ``s | trials(n)``, the
uncorrelated ``(1 + x || g)`` (formulae reads ``||`` as nothing), which group terms share a
block (formulae keeps terms, not blocks, and lme4 correlates the terms of one block), and
offsets, which are evaluated per row so that rows can be collapsed around them.

The model (names as brms prints them, one name per class):

* ``b`` over the design columns (``b[Intercept]``, ``b[treated]``, ``b[period[p2]]``);
* ``sd`` over every group term (``sd[country:Intercept]``), ``cor`` over the pairs of terms
  of each correlated block (``cor[country:Intercept,treated]``), and ``r`` over every group
  level and term (``r[country:Canada,Intercept]``): per block, ``r = (diag(sd) L z)'`` with
  ``z`` a term x level matrix of standard normals and ``L ~ LKJCholesky(eta)`` (``L`` is the
  identity for an uncorrelated block, and left out); with no correlated block, one vector
  ``z`` over every effect and ``r = sd[its term] * z``. Centered (uncorrelated terms only),
  hierarchically centered as the built-in models are: a group term whose column is also a
  design column (``1`` and ``treated`` in ``treated + (1 + treated || country)``) samples
  the level's own coefficient ``br ~ Normal(b[column], sd)``, with ``r = br - b[column]``,
  and the column leaves ``X``; other terms ``br ~ Normal(0, sd)``, ``r = br``. (Centering
  ``r`` at zero instead leaves the intercept and the levels' effects a ridge that big data
  make a needle: the sampler then runs at its maximum tree depth.)
* ``sigma`` for the Gaussian family; the likelihood ``y`` on the cells below.

Rows collapse to cells before the design is built (``data.py``), so a row-level CSV costs
one likelihood term per distinct pattern, not per row.

Where each idea lives: the formula's text and the calls to formulae (``text.py``); the data,
its checks, the response and the cells (``data.py``); the group blocks as units of effects
(``units.py``); priors as given, by default and per element (``priors.py``); the linear
predictor (``predictor.py``); the model build (``build.py``). This module is the public API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from polyppl import spec as s
from polyppl.models.base import Labels, Problem
from polyppl.models.formula.build import PARAMETRIZATIONS, FormulaModel, compile_formula
from polyppl.models.formula.data import FAMILIES
from polyppl.models.formula.priors import PRIOR_CLASSES, Prior, default_priors, parse_prior
from polyppl.models.formula.text import NAMESPACE, GroupBlock, ParsedFormula, parse_formula


def formula(formula: str, data: object, family: str = "bernoulli",
            priors: Mapping[str, str | s.Dist] | Sequence[str] | None = None,
            parametrization: str = "noncentered", collapse: bool = True) -> tuple[s.Model, s.Dataset]:
    """An lme4/brms formula with its data as a spec ``(Model, Dataset)``.

    ``formula``: e.g. ``"success ~ treated + (1 + treated | country)"``; ``data``: a CSV
    path or a pandas DataFrame; ``family``: ``bernoulli``, ``binomial``, ``poisson`` or
    ``gaussian``; ``priors``: ``["sd ~ half_normal(1)", "b[treated] ~ normal(0, 1)"]`` or
    ``{"sd": "half_normal(1)"}`` or ``{"sd": s.HalfNormal(1.0)}`` (defaults: see
    :func:`default_priors`); ``parametrization``: ``noncentered`` or ``centered``;
    ``collapse=False`` keeps one likelihood term per row. The model's description states
    the formula, the family and every prior.
    """
    compiled = compile_formula(formula, data, family, priors, parametrization, collapse)
    return compiled.model, compiled.dataset


def formula_problem(formula: str, data: object, family: str = "bernoulli",
                    priors: Mapping[str, str | s.Dist] | Sequence[str] | None = None,
                    parametrization: str | None = None) -> Problem:
    """The formula as a :class:`Problem` for ``run``, ``compare`` and the other studies,
    labelled ``formula`` with the data file's name as its scenario."""
    compiled = compile_formula(formula, data, family, priors, parametrization or "noncentered")
    scenario = Path(data).stem if isinstance(data, (str, Path)) else "data"
    return Problem(compiled.model, compiled.dataset, Labels("formula", scenario, compiled.parametrization),
                   rebuild=lambda other: formula_problem(formula, data, family, priors, other))


__all__ = ["FAMILIES", "PARAMETRIZATIONS", "PRIOR_CLASSES", "FormulaModel", "Prior", "compile_formula",
           "default_priors", "formula", "formula_problem", "parse_formula", "parse_prior"]
