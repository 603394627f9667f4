"""Priors: as the user writes them, polyppl's defaults, and the one a model element gets.

A prior targets a class (``sd``), a grouping factor's terms (``sd[country]``) or one element
(``sd[country:treated]``); the classes are :data:`PRIOR_CLASSES`. A prior on a standard
deviation written as brms writes it (``student_t(3, 0, 2.5)``) is read as the half family.
:func:`default_priors` follows brms's recipe, with proper priors where brms has flat ones;
:func:`_resolve` picks the most specific prior for an element, and :func:`_class_prior`
makes one Dist for a vector parameter whose elements have different arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError, unknown
from polyppl.models.formula.data import FAMILIES
from polyppl.models.formula.units import _Unit


#: Prior classes, and what each holds.
PRIOR_CLASSES: dict[str, str] = {
    "b": "population-level effects, one per design column: b, b[Intercept], b[treated]",
    "sd": "group-level standard deviations: sd, sd[country], sd[country:treated]",
    "cor": "the LKJ prior of each correlated block's correlation matrix: cor, cor[country]",
    "sigma": "the residual standard deviation of the gaussian family",
}
#: Families a prior may name, with the spec's constructor; ``lkj`` is LKJCholesky.
_PRIOR_FAMILIES = {
    "normal": s.Normal, "student_t": s.StudentT, "cauchy": s.Cauchy, "flat": s.Flat,
    "half_normal": s.HalfNormal, "half_student_t": s.HalfStudentT, "half_cauchy": s.HalfCauchy,
    "exponential": s.Exponential, "gamma": s.Gamma, "lkj": s.LKJCholesky, "lkj_corr_cholesky": s.LKJCholesky,
}
#: brms writes a prior on a standard deviation as the full family, truncated at zero.
_HALF = {"normal": ("half_normal", 1), "student_t": ("half_student_t", 1), "cauchy": ("half_cauchy", 1)}
_PRIOR_TEXT = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\[(.+)\])?\s*~\s*([A-Za-z_]+)\s*\((.*)\)\s*$")
_TARGET = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\[(.+)\])?\s*$")


@dataclass(frozen=True)
class Prior:
    """A prior for a class (``sd``) or one of its elements (``sd[country:treated]``,
    ``sd[country]`` for every term of a grouping factor)."""

    target: str
    dist: s.Dist

    @property
    def parts(self) -> tuple[str, str | None]:
        name, _, rest = self.target.partition("[")
        return name, rest[:-1] if rest else None


def parse_prior(text: str) -> Prior:
    """``"sd ~ half_normal(1)"``, ``"b[treated] ~ normal(0, 2.5)"``, ``"cor ~ lkj(2)"``. A
    prior on ``sd`` or ``sigma`` written as brms writes it (``student_t(3, 0, 2.5)``) is
    the half family."""
    found = _PRIOR_TEXT.match(text)
    if not found:
        raise UserError(f"prior {text!r}: expected CLASS ~ FAMILY(ARGS) or CLASS[ELEMENT] ~ FAMILY(ARGS), "
                        "e.g. 'sd ~ half_normal(1)' or 'b[treated] ~ normal(0, 2.5)'")
    cls, element, family, arg_text = found.groups()
    target = _target(cls, element)
    try:
        args = [float(a) for a in arg_text.split(",")] if arg_text.strip() else []
    except ValueError:
        raise UserError(f"prior {text!r}: the arguments must be numbers, got ({arg_text})") from None
    return Prior(target, _prior_dist(cls, family, args, text))


def _target(cls: str, element: str | None) -> str:
    if cls not in PRIOR_CLASSES:
        raise unknown("prior class", cls, PRIOR_CLASSES)
    return f"{cls}[{element.strip()}]" if element else cls


def _prior_dist(cls: str, family: str, args: list[float], text: str) -> s.Dist:
    if cls in ("sd", "sigma") and family in _HALF:
        half, location = _HALF[family]
        if len(args) > location and args[location] != 0:
            raise UserError(f"prior {text!r}: a standard deviation's prior is a half family at 0; "
                            f"{family} with location {args[location]:g} is not (use {half})")
        family, args = half, args[:location] + args[location + 1:]
    if family not in _PRIOR_FAMILIES:
        raise unknown(f"prior family in {text!r}", family, _PRIOR_FAMILIES)
    try:
        dist = _PRIOR_FAMILIES[family](*args)
    except (TypeError, ValueError) as exc:
        raise UserError(f"prior {text!r}: {exc}") from None
    support = dist.info.support
    wanted = {"b": "real", "sd": "positive", "sigma": "positive", "cor": "corr_cholesky"}[cls]
    if support != wanted:
        raise UserError(f"prior {text!r}: {cls} needs a prior on {_SUPPORT_WORDS[wanted]}, "
                        f"and {dist.family} is on {_SUPPORT_WORDS.get(support, support)}")
    return dist


_SUPPORT_WORDS = {"real": "the real line", "positive": "the positive half-line",
                  "corr_cholesky": "correlation matrices (lkj)"}


def _as_priors(priors: Mapping[str, str | s.Dist] | Sequence[str] | None) -> list[Prior]:
    """Priors as the user gave them: ``["sd ~ half_normal(1)"]`` or ``{"sd": "half_normal(1)"}``
    or ``{"sd": s.HalfNormal(1.0)}``."""
    if priors is None:
        return []
    if isinstance(priors, Mapping):
        out = []
        for target, value in priors.items():
            if not isinstance(value, s.Dist):
                out.append(parse_prior(f"{target} ~ {value}"))
                continue
            found = _TARGET.match(target)
            if not found:
                raise UserError(f"prior target {target!r}: expected CLASS or CLASS[ELEMENT], e.g. sd or b[treated]")
            args = [a.value for _, a in value.args if isinstance(a, s.Const)]
            if len(args) != len(value.args):
                raise UserError(f"prior for {target}: its arguments must be numbers")
            cls = found.group(1)
            text = f"{target} ~ {_describe_dist(value)}"
            out.append(Prior(_target(cls, found.group(2)), _prior_dist(cls, value.family, args, text)))
        return out
    return [parse_prior(text) for text in priors]


def _describe_dist(dist: s.Dist) -> str:
    args = ", ".join(f"{a.value:g}" if isinstance(a, s.Const) else "?" for _, a in dist.args)
    return f"{'lkj' if dist.family == 'lkj_corr_cholesky' else dist.family}({args})"


def default_priors(family: str, y: np.ndarray, x_columns: list[str], x_sds: list[float]) -> dict[str, s.Dist]:
    """Default priors by element (``b[treated]``) or class (``sd``, ``cor``, ``sigma``).

    brms's recipe: ``b[Intercept] ~ student_t(3, location, scale)`` with location and scale
    the median and MAD of the response on the link scale (location 0 and scale 2.5 for the
    logit link), the scale at least 2.5; group sds and sigma ``half_student_t(3, scale)``
    with the same scale; ``cor ~ lkj(1)``. Where brms puts an improper flat prior on the
    other columns of b, they get ``student_t(3, 0, 2.5 s_y / s_x)`` (s_x the column's sd over
    the rows, s_y the response's sd for the gaussian family and 1 otherwise): proper, so
    that separated logistic data cannot make the posterior improper, and scaled to the
    predictor as rstanarm's autoscaling does. Unlike brms, the intercept is that of the
    columns as given, not of centered columns.
    """
    link = FAMILIES[family][0]
    if link == "logit":
        location, scale, s_y = 0.0, 2.5, 1.0
    else:
        on_link = np.log(np.where(y == 0, y + 0.1, y)) if link == "log" else y
        location = round(float(np.median(on_link)), 1)
        mad = 1.4826 * float(np.median(np.abs(on_link - np.median(on_link))))
        scale = max(round(mad, 1), 2.5)
        s_y = float(np.std(y)) if link == "identity" else 1.0
    out: dict[str, s.Dist] = {}
    for column, sd in zip(x_columns, x_sds):
        if column == "Intercept":
            out["b[Intercept]"] = s.StudentT(3.0, location, scale)
        else:
            out[f"b[{column}]"] = s.StudentT(3.0, 0.0, round(2.5 * s_y / (sd if sd > 0 else 1.0), 3))
    out["sd"] = s.HalfStudentT(3.0, scale)
    out["cor"] = s.LKJCholesky(1.0)
    out["sigma"] = s.HalfStudentT(3.0, scale)
    return out


def _resolve(element: str, cls: str, group: str | None, given: list[Prior],
             defaults: dict[str, s.Dist]) -> tuple[s.Dist, bool]:
    """The most specific prior for an element (its own, its group's, its class's, the
    default), and whether the user gave it."""
    for target in (element, f"{cls}[{group}]" if group else None, cls):
        for prior in reversed(given):  # the last given wins
            if target is not None and prior.target == target:
                return prior.dist, True
    return defaults.get(element, defaults.get(cls)), False


def _class_prior(cls: str, dim: str, dists: list[s.Dist], elements: list[str], nodes: list, values: dict) -> s.Dist:
    """One Dist for a vector parameter whose elements may have different arguments of the
    same family: an argument that differs becomes a data vector ``prior_<class>_<arg>``."""
    families = {d.family for d in dists}
    if len(families) > 1:
        listing = "; ".join(f"{e} ~ {_describe_dist(d)}" for e, d in zip(elements, dists))
        raise UserError(f"the elements of {cls} need priors of one family (they are one vector parameter): {listing}")
    first = dists[0]
    args = {}
    for name, _ in first.args:
        column = [d.kwargs[name].value for d in dists]
        if len(set(column)) == 1:
            args[name] = column[0]
        else:
            data_name = f"prior_{cls}_{name}"
            nodes.append(s.Data(data_name, "real", (dim,)))
            values[data_name] = np.asarray(column, dtype=float)
            args[name] = s.Var(data_name)
    return s.Dist(first.family, tuple((name, s.as_expr(value)) for name, value in args.items()))


def _check_targets(given: list[Prior], x_columns: list[str], units: list[_Unit]) -> None:
    groups = {u.factor for u in units}
    sd_elements = {f"{u.factor}:{t}" for u in units for t in u.terms}
    correlated = {u.factor for u in units if u.correlated}
    for prior in given:
        cls, element = prior.parts
        if cls == "b" and element is not None and element not in x_columns:
            raise unknown("column of b", element, x_columns)
        if cls == "sd" and element is not None and element not in groups | sd_elements:
            raise unknown("element of sd (a grouping factor or factor:term)", element, sorted(groups) + sorted(sd_elements))
        if cls == "cor" and element is not None and element not in correlated:
            raise unknown("correlated grouping factor", element, sorted(correlated) or ["(none: no correlated block)"])
