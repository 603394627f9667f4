"""The model build: a parsed formula, its data and priors, as a spec ``Model`` and ``Dataset``.

:func:`compile_formula` runs the steps in order (the priors given, the text, the data and
its checks, the design from formulae, the group units, the default priors) and
:func:`_build` writes the spec nodes: ``b``, ``sd``, ``z``/``L``/``r`` (or ``br`` in the
centered form), ``cor``, ``sigma``, the likelihood on the cells, and the decisions
``prob_positive``. :func:`_description` states the formula, the family and every prior.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from polyppl import spec as s
from polyppl.errors import UserError, unknown
from polyppl.models.formula.data import (FAMILIES, _Cells, _Frame, _cells, _check_complete, _check_finite, _check_rank,
                                          _read, _response, _weighted_sd)
from polyppl.models.formula.predictor import _linear_predictor
from polyppl.models.formula.priors import (Prior, _as_priors, _check_targets, _class_prior, _describe_dist, _resolve,
                                            default_priors)
from polyppl.models.formula.text import NAMESPACE, _formulae_call, _variables, parse_formula
from polyppl.models.formula.units import _absorbed_terms, _group_units, _identifier, _Unit


PARAMETRIZATIONS = ("noncentered", "centered")
#: Transforms whose values depend on every row (formulae's stateful transforms): the design
#: is then built on the rows themselves, not on their distinct patterns.
_STATEFUL = ("center", "scale", "standardize")


@dataclass
class FormulaModel:
    """A formula compiled: the spec model, its data, and what it was made from."""

    model: s.Model
    dataset: s.Dataset
    formula: str
    family: str
    parametrization: str
    priors: dict[str, str] = field(default_factory=dict)


def compile_formula(formula: str, data: object, family: str = "bernoulli",
                    priors: Mapping[str, str | s.Dist] | Sequence[str] | None = None,
                    parametrization: str = "noncentered", collapse: bool = True) -> FormulaModel:
    """The formula as a spec model with its dataset; see :func:`formula`. ``collapse=False``
    keeps one likelihood term per row (the same posterior, at the cost of every row)."""
    import formulae

    if family not in FAMILIES:
        raise unknown("family", family, FAMILIES)
    if parametrization not in PARAMETRIZATIONS:
        raise unknown("parametrization of a formula", parametrization, PARAMETRIZATIONS)
    given = _as_priors(priors)
    parsed = parse_formula(formula)
    frame = _read(data)
    rhs_formula = f"polyppl_response ~ {parsed.rhs}"
    variables = _variables(rhs_formula) - {"polyppl_response"}
    response_variables = _variables(f"polyppl_response ~ 1 + {' + '.join(f'offset({o})' for o in parsed.offsets)}"
                                    if parsed.offsets else "polyppl_response ~ 1") - {"polyppl_response"}
    # The response's columns: its names other than the functions it may call.
    lhs_names = {name for name in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", parsed.response)
                 if "." not in name and name not in {"cbind", "trials", *NAMESPACE}}
    _check_complete(frame, sorted(variables | response_variables | lhs_names, key=str))
    response = _response(parsed, family, frame)
    columns = sorted(variables, key=list(frame.data.columns).index)
    by_rows = not collapse or any(re.search(rf"\b{name}\s*\(", parsed.rhs) for name in _STATEFUL)
    cells = _cells(frame, columns, response, family, by_rows)
    patterns = cells.patterns.copy()
    patterns["polyppl_response"] = 0.0
    design = _formulae_call(formulae.design_matrices, rhs_formula, patterns, na_action="error",
                            extra_namespace=NAMESPACE)
    if design.common is not None:
        X_patterns = np.asarray(design.common.design_matrix, dtype=float)
        x_columns = [str(c) for c in design.common.as_dataframe().columns]
    else:
        X_patterns, x_columns = np.zeros((len(patterns), 0)), []
    _check_finite(X_patterns, x_columns, cells, frame)
    _check_rank(X_patterns, x_columns, f"formula {formula!r} on {frame.where}")
    units = _group_units(parsed, design, patterns, frame)
    for u in units:
        _check_finite(np.column_stack(u.columns), [f"{t} (in a group term of {u.factor})" for t in u.terms], cells, frame)
    if not x_columns and not units:
        raise UserError(f"formula {formula!r}: no terms (no intercept, no predictors, no group terms)")
    correlated = [u for u in units if u.correlated]
    if parametrization == "centered" and correlated:
        raise UserError(f"the centered form is offered for uncorrelated group terms only; "
                        f"{', '.join(u.factor for u in correlated)} has correlated terms (use || for uncorrelated "
                        "terms, or the default non-centered form)")
    x_sds = [_weighted_sd(X_patterns[:, j], cells.rows_per_pattern) for j in range(len(x_columns))]
    defaults = default_priors(family, response.successes, x_columns, x_sds)
    _check_targets(given, x_columns, units)
    return _build(formula, family, parametrization, frame, cells, X_patterns, x_columns, units, given, defaults)


def _build(formula: str, family: str, parametrization: str, frame: _Frame, cells: _Cells, X_patterns: np.ndarray,
           x_columns: list[str], units: list[_Unit], given: list[Prior], defaults: dict[str, s.Dist]) -> FormulaModel:
    n_cells = len(cells.cell_pattern)
    nodes: list = []
    values: dict[str, np.ndarray] = {}
    coords: dict[str, tuple] = {"cell": tuple(range(n_cells))}
    described: dict[str, tuple[str, bool]] = {}  # element -> (prior, given by the user)
    population = None  # (design columns, their dim, the coefficients' expression)
    group_columns: list[tuple[str, np.ndarray, np.ndarray]] = []  # per group term: (name, each cell's effect, covariate)

    def add_data(node: s.Data, value: np.ndarray) -> s.Var:
        nodes.append(node)
        values[node.name] = value
        return s.Var(node.name)

    # The centered form's absorbed terms: (unit index, term index) -> design column.
    absorbed = _absorbed_terms(units, X_patterns, x_columns) if parametrization == "centered" else {}
    free = [j for j in range(len(x_columns)) if j not in absorbed.values()]
    # Population-level effects.
    if x_columns:
        coords["coef"] = tuple(x_columns)
        resolved = [_resolve(f"b[{c}]", "b", None, given, defaults) for c in x_columns]
        dists = [d for d, _ in resolved]
        b_prior = _class_prior("b", "coef", dists, [f"b[{c}]" for c in x_columns], nodes, values)
        described.update({f"b[{c}]": (_describe_dist(d), mine) for c, (d, mine) in zip(x_columns, resolved)})
        b_node = s.Param("b", b_prior, ("coef",))
        if len(free) == len(x_columns):
            population = (X_patterns[cells.cell_pattern], "coef", s.Var("b"))
        elif free:  # the columns no group term took
            coords["coef_free"] = tuple(x_columns[j] for j in free)
            population = (X_patterns[cells.cell_pattern][:, free], "coef_free",
                          s.Var("b")[add_data(s.Data("b_free", "int", ("coef_free",), index_of="coef"), np.asarray(free))])
    # Group-level effects: sd over every (factor, term); r over every (factor, level, term).
    group_nodes: list = []
    if units:
        sd_labels = [f"{u.factor}:{t}" for u in units for t in u.terms]
        coords["group_term"] = tuple(sd_labels)
        resolved = [_resolve(f"sd[{u.factor}:{t}]", "sd", u.factor, given, defaults) for u in units for t in u.terms]
        sd_dists = [d for d, _ in resolved]
        sd_prior = _class_prior("sd", "group_term", sd_dists, [f"sd[{e}]" for e in sd_labels], nodes, values)
        described.update({f"sd[{e}]": (_describe_dist(d), mine) for e, (d, mine) in zip(sd_labels, resolved)})
        group_nodes.append(s.Param("sd", sd_prior, ("group_term",)))
        r_labels = [f"{u.factor}:{level},{t}" for u in units for level in u.levels for t in u.terms]
        coords["group_effect"] = tuple(r_labels)
        # Without a correlated block every effect is its own sd times its own standard
        # normal: one vector each, r = sd[sd_effect] * z, fewer operations per gradient
        # than a scaled matrix per block.
        elementwise = parametrization == "centered" or not any(u.correlated for u in units)
        # Each effect's (unit, term), in the order of r_labels.
        effect_terms = [(i, t) for i, u in enumerate(units) for _ in u.levels for t in range(len(u.terms))]
        if elementwise:
            first_term = np.cumsum([0] + [len(u.terms) for u in units])
            scale = s.Var("sd")[add_data(s.Data("sd_effect", "int", ("group_effect",), index_of="group_term"),
                                         np.array([first_term[i] + t for i, t in effect_terms]))]
        position = 0
        parts, pairs = [], []
        for u in units:
            coords[u.level_dim] = tuple(u.levels)
            coords[u.term_dim] = tuple(u.terms)
            if elementwise:
                continue
            sd_index = add_data(s.Data(f"sd_{u.uid}", "int", (u.term_dim,), index_of="group_term"),
                                np.arange(position, position + len(u.terms)))
            position += len(u.terms)
            if parametrization == "noncentered":
                scale = s.diag_pre_multiply(s.Var("sd")[sd_index], s.Var(f"L_{u.uid}")) if u.correlated \
                    else s.Var("sd")[sd_index]
                z_dims = (f"component_{u.uid}" if u.correlated else u.term_dim, u.level_dim)
                if u.correlated:
                    coords[z_dims[0]] = tuple(u.terms)
                    lkj_prior, mine = _resolve(f"cor[{u.factor}]", "cor", None, given, defaults)
                    described[f"cor[{u.factor}]"] = (_describe_dist(lkj_prior), mine)
                    group_nodes.append(s.Param(f"L_{u.uid}", lkj_prior, (u.term_dim, z_dims[0])))
                group_nodes.append(s.Param(f"z_{u.uid}", s.Normal(0.0, 1.0), z_dims))
                product = s.matmul(scale, s.Var(f"z_{u.uid}")) if u.correlated \
                    else s.diag_pre_multiply(scale, s.Var(f"z_{u.uid}"))
                parts.append(s.transpose(product))
            if u.correlated:
                j, k = np.tril_indices(len(u.terms), -1)
                pair_dim = f"pair_{u.uid}"
                coords[pair_dim] = tuple(f"{u.terms[a]},{u.terms[b_]}" for b_, a in zip(j, k))
                first = add_data(s.Data(f"cor_{u.uid}_1", "int", (pair_dim,), index_of=u.term_dim), k)
                second = add_data(s.Data(f"cor_{u.uid}_2", "int", (pair_dim,), index_of=u.term_dim), j)
                pairs.append(s.rows_dot(s.Var(f"L_{u.uid}")[first], s.Var(f"L_{u.uid}")[second]))
        if parametrization == "noncentered" and elementwise:
            group_nodes.append(s.Param("z", s.Normal(0.0, 1.0), ("group_effect",)))
            group_nodes.append(s.Deterministic("r", scale * s.Var("z"), ("group_effect",)))
        elif parametrization == "noncentered":
            group_nodes.append(s.Deterministic("r", s.concat("group_effect", *parts), ("group_effect",)))
        else:
            if not absorbed:
                group_nodes.append(s.Param("r", s.Normal(0.0, scale), ("group_effect",)))
            else:
                # Each effect's mean: b[its column] for an absorbed term, 0 for the others.
                column_of_effect = np.array([absorbed.get(k, 0) for k in effect_terms])
                is_absorbed = np.array([float(k in absorbed) for k in effect_terms])
                mean = s.Var("b")[add_data(s.Data("br_column", "int", ("group_effect",), index_of="coef"),
                                           column_of_effect)] * add_data(
                    s.Data("br_absorbed", "real", ("group_effect",)), is_absorbed)
                group_nodes.append(s.Param("br", s.Normal(mean, scale), ("group_effect",)))
                group_nodes.append(s.Deterministic("r", s.Var("br") - mean, ("group_effect",)))
        for u in units:
            level = u.level_of_pattern[cells.cell_pattern]
            for t, column in enumerate(u.columns):
                group_columns.append((f"{u.uid}_{t + 1}", u.offset + level * len(u.terms) + t, column[cells.cell_pattern]))
        if pairs:
            pair_labels = [f"{u.factor}:{label}" for u in units if u.correlated for label in coords[f"pair_{u.uid}"]]
            coords["group_pair"] = tuple(pair_labels)
            group_nodes.append(s.Deterministic("cor", s.concat("group_pair", *pairs), ("group_pair",)))
    eta = _linear_predictor(population, group_columns, coords, "br" if absorbed else "r", n_cells, add_data)
    if cells.offset is not None:
        eta = eta + add_data(s.Data("offsets", "real", ("cell",)), cells.offset)
    # The likelihood.
    observed_nodes: list = []
    if family == "gaussian":
        sigma, mine = _resolve("sigma", "sigma", None, given, defaults)
        described["sigma"] = (_describe_dist(sigma), mine)
        observed_nodes.append(s.Param("sigma", sigma))
        likelihood = s.Normal(eta, s.Var("sigma"))
        values["y"] = cells.successes
    elif family == "poisson":
        likelihood = s.PoissonLog(eta)
        values["y"] = cells.successes.astype(np.int64)
    elif cells.trials is not None and np.all(cells.trials == 1):
        likelihood = s.BernoulliLogit(eta)
        values["y"] = cells.successes.astype(np.int64)
    else:
        trials = add_data(s.Data("trials", "int", ("cell",), lower=0), cells.trials.astype(np.int64))
        likelihood = s.BinomialLogit(trials, eta)
        values["y"] = cells.successes.astype(np.int64)
    observed_nodes.append(s.Observed("y", likelihood, ("cell",)))
    decisions = []
    predictors = [i for i, c in enumerate(x_columns) if c != "Intercept"]
    if predictors:
        coords["predictor"] = tuple(x_columns[i] for i in predictors)
        index = add_data(s.Data("b_predictor", "int", ("predictor",), index_of="coef"), np.asarray(predictors))
        decisions.append(s.prob("prob_positive", s.Var("b")[index] > 0, ("predictor",), "P(b[{label}] > 0)"))
    # A predictor's effect in each level of a grouping factor that varies it: the seed's
    # question, "did the treatment help in China?", is P(b[treated] + r[country:China,treated] > 0).
    for u in units:
        for t, term in enumerate(u.terms):
            if term == "Intercept" or term not in x_columns:
                continue
            name = f"prob_positive_{u.uid}_{_identifier(term)}"
            column = add_data(s.Data(f"{name}_b", "int", (u.level_dim,), index_of="coef"),
                              np.full(len(u.levels), x_columns.index(term)))
            effect = add_data(s.Data(f"{name}_r", "int", (u.level_dim,), index_of="group_effect"),
                              u.offset + np.arange(len(u.levels)) * len(u.terms) + t)
            decisions.append(s.prob(name, s.Var("b")[column] + s.Var("r")[effect] > 0, (u.level_dim,),
                                    f"P(b[{term}] + r[{u.factor}:{{label}},{term}] > 0)"))
    params = [b_node] if x_columns else []
    model_nodes = (*nodes, *params, *group_nodes, *observed_nodes, *decisions)
    source = (f"file {frame.where}" if frame.file else "a data frame") + (
        f", {cells.rows} rows as {n_cells} cells" if n_cells != cells.rows else f", {cells.rows} rows")
    description = _description(formula, family, parametrization, source, described)
    try:
        model = s.Model("formula", model_nodes, description)
        dataset = s.Dataset(values, coords, source)
        s.check_dataset(model, dataset)
    except s.SpecError as exc:
        raise UserError(f"formula {formula!r}: {exc}") from None
    return FormulaModel(model, dataset, formula, family, parametrization, {k: v for k, (v, _) in described.items()})


def _description(formula: str, family: str, parametrization: str, source: str,
                 priors: dict[str, tuple[str, bool]]) -> str:
    """The formula, family, form and data, and every prior: one line for a class whose
    elements share it, else a line per element; each marked given or default."""
    link = FAMILIES[family][0]
    lines = [f"{formula}, family {family} ({link} link), {parametrization.replace('non', 'non-')}; {source}",
             "priors (default: polyppl's defaults, brms's recipe; given: by the user):"]
    classes: dict[str, list[tuple[str, tuple[str, bool]]]] = {}
    for element, described in priors.items():
        classes.setdefault(element.partition("[")[0], []).append((element, described))
    rows = []
    for cls, items in classes.items():
        if len({d for _, d in items}) == 1 and len(items) > 1:
            rows.append((f"{cls} ~ {items[0][1][0]}", items[0][1][1]))
        else:
            rows += [(f"{element} ~ {text}", mine) for element, (text, mine) in items]
    width = max(len(text) for text, _ in rows)
    lines += [f"  {text:<{width}}  {'given' if mine else 'default'}" for text, mine in rows]
    return "\n".join(lines)
