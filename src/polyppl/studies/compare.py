"""``polyppl compare``: one model on several backends; do they agree, did they converge, how fast?

Each backend (a column: ``stan``, or ``stan:pystan`` to name the engine) runs in its own
process with an optional timeout (``polyppl.execution.runner``). Every finished fit is on
disk (``OUT/<model>-<scenario>-<column>-<method>.nc`` and ``.json``) the moment it ends; a
second invocation with the same ``--out`` reuses a finished fit only when its whole request
is the same (model, data, engine, settings, versions), so an interrupted comparison resumes
and a changed input is never answered from an old run. A backend that raises, crashes or
hangs is recorded with its status and error, and the others go on.

The verdict: ``agree`` (exit code 0), ``disagree`` (1), ``inconclusive`` (3, a backend
failed or did not converge).

With ``methods`` beyond ``nuts`` (``advi``, ``fullrank``, ``pathfinder``), each column also
runs each approximation (a cell ``<column>/<method>``, in its own process like the NUTS
fits). A cell its backend or engine cannot run is ``n/a`` with the reason, decided before
anything runs. NUTS cells are judged as above, among themselves; each approximation is
scored against the best-converged NUTS column (``studies.scorecard``) and does not change
the verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from polyppl.backends import BACKENDS, Column, parse_columns
from polyppl.errors import UserError, unknown
from polyppl.execution.fit import result_stem
from polyppl.execution.record import FitRecord
from polyppl.execution.request import FitRequest
from polyppl.execution.runner import FitJob, FitOutcome, run_fits
from polyppl.execution.store import file_sha256, find_saved, folder_lock
from polyppl.inference.diagnostics import convergence_failures, flatten
from polyppl.inference.idata import load_netcdf, save_json
from polyppl.inference.methods import METHODS, SamplerSettings, VariationalSettings
from polyppl.inference.posterior import decision_draws
from polyppl.models import MODELS, Labels, Problem, get_model, resolve
from polyppl.spec import Dataset, Model
from polyppl.spec.serialize import dataset_from_json, dataset_to_json, model_from_json, model_to_json
from polyppl.studies.agreement import FAMILY_ALPHA, PRACTICAL_FLOOR, PairTest, QuantityDraws, holm, pair_tests
from polyppl.studies.recommendation import Recommendation, load_now
from polyppl.studies.recommendation import recommend as recommend_among
from polyppl.studies.remedies import Ladder, LadderSummary, Rung, check_remedies, climb
from polyppl.studies.scorecard import K_RELIABLE, K_USABLE, MEAN_SHIFT_MAX_SD, SD_RATIO_MIN, Scorecard, score
from polyppl.studies.translation import LOWERED_BACKENDS, check_translation

REFERENCES = ("exact",)
EXACT_DRAWS_PER_CHAIN = 25_000
EXACT_CHAINS = 4
#: Exit codes of ``polyppl compare``, by verdict (2 is bad input).
EXIT_CODES = {"agree": 0, "disagree": 1, "inconclusive": 3}


@dataclass
class Comparison:
    problem: Problem
    settings: SamplerSettings
    outcomes: dict[str, FitOutcome]  # by column label
    family_alpha: float = FAMILY_ALPHA
    floor: float = PRACTICAL_FLOOR
    method: str = "nuts"
    reference: str | None = None
    tests: list[PairTest] = field(default_factory=list)
    verdict: str = "inconclusive"
    reasons: list[str] = field(default_factory=list)
    #: What the agreement tests said where the verdict is not theirs (no rung of the remedies
    #: ladder rescued the fits: inconclusive, whatever the tests said); None otherwise.
    tests_verdict: str | None = None
    #: Draws of every quantity by source (the columns, and "exact"), filled by ``assess``.
    sources: dict[str, dict[str, QuantityDraws]] = field(default_factory=dict)
    #: The methods asked for, ``nuts`` first; the approximations' settings.
    methods: tuple[str, ...] = ("nuts",)
    variational: VariationalSettings | None = None
    #: Approximation cells by ``<column>/<method>``: those that ran, and those n/a with why.
    approximations: dict[str, FitOutcome] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    #: Each finished approximation scored against ``reference_column`` (a NUTS column).
    scorecards: dict[str, Scorecard] = field(default_factory=dict)
    reference_column: str | None = None
    #: Draws of every quantity of each finished approximation, filled by ``score_approximations``.
    approximation_sources: dict[str, dict[str, QuantityDraws]] = field(default_factory=dict)
    #: The remedies ladder that led to this comparison (its last rung); None without one.
    remedies: LadderSummary | None = None
    #: For a model lowered from a user's program: its translation check, ``{points, max_rel_error,
    #: gradient_rtol}`` (and ``gradient_rtol_reason`` where Stan approximates a gradient).
    translation: dict[str, Any] | None = None
    #: Which backend to use: the most bulk ESS per second among those that converged and agreed.
    recommendation: Recommendation | None = None

    @property
    def records(self) -> dict[str, FitRecord]:
        return {label: o.record for label, o in self.outcomes.items()}

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def disagreements(self) -> list[PairTest]:
        return [t for t in self.tests if not t.agree]

    def worst(self) -> PairTest | None:
        return max(self.tests, key=lambda t: (not t.agree, abs(t.z)), default=None)

    def to_json(self) -> dict[str, Any]:
        worst = self.worst()
        labels = self.problem.labels
        return {
            "model": labels.model,
            "scenario": labels.scenario,
            "parametrization": labels.parametrization,
            "builtin": self.problem.builtin.name if self.problem.builtin else None,
            "method": self.method,
            "settings": self.settings.as_dict(),
            "backends": {label: o.record.to_json() for label, o in self.outcomes.items()},
            "files": {label: o.stem.name for label, o in self.outcomes.items()},
            "reference": self.reference,
            "agreement": {
                "family_alpha": self.family_alpha,
                "practical_floor_sd": self.floor,
                "method": "z tests of means and 5%/95% quantiles from MCSEs, ESS-adjusted KS; Holm over all tests",
                "n_tests": len(self.tests),
                "pairs": [t.as_dict() for t in self.tests],
                "worst": worst.as_dict() if worst else None,
                "verdict": self.verdict,
                "tests_verdict": self.tests_verdict,
                "reasons": self.reasons,
            },
            "methods": self.methods_json(),
            "variational_settings": self.variational.as_dict() if self.variational else None,
            "scorecard": {
                "reference": self.reference_column,
                "thresholds": {"pareto_k_reliable": K_RELIABLE, "pareto_k_usable": K_USABLE,
                               "mean_shift_sd": MEAN_SHIFT_MAX_SD, "sd_ratio": SD_RATIO_MIN},
            },
            "translation": self.translation,
            "recommendation": self.recommendation.to_json() if self.recommendation else None,
            "problem": {"model": model_to_json(self.problem.model), "dataset": dataset_to_json(self.problem.dataset)},
            **(self.remedies.to_json() if self.remedies else {}),
        }

    def cells(self) -> list[str]:
        """Every cell ``<column>/<method>``, column by column, methods in the order asked."""
        columns = list(self.outcomes) or sorted({cell.rpartition("/")[0] for cell in self.approximations}
                                                | {cell.rpartition("/")[0] for cell in self.not_applicable})
        return [f"{column}/{method}" for column in columns for method in self.methods]

    def methods_json(self) -> dict[str, dict[str, Any]]:
        """The comparison JSON's ``methods``: one entry per cell with its status (``ok``,
        ``n/a``, ``error``, ``crashed``, ``timeout``), the reason where not ok, timings, the
        files, and for an approximation its record and scorecard."""
        out = {}
        for cell in self.cells():
            column, _, method = cell.rpartition("/")
            entry: dict[str, Any] = {"column": column, "method": method}
            if cell in self.not_applicable:
                out[cell] = {**entry, "status": "n/a", "reason": self.not_applicable[cell]}
                continue
            outcome = self.outcomes.get(column) if method == "nuts" else self.approximations.get(cell)
            if outcome is None:
                continue
            record = outcome.record
            entry.update(status=record.status, reason=None if record.ok else record.error, file=outcome.stem.name,
                         timings=record.to_json()["timings"])
            if method != "nuts":
                scorecard = self.scorecards.get(cell)
                entry.update(settings=self.variational.resolved(method).as_dict() if self.variational else None,
                             record=record.to_json(), scorecard=scorecard.as_dict() if scorecard else None)
            out[cell] = entry
        return out

    @classmethod
    def from_json(cls, saved: dict[str, Any], out_dir: Path) -> Comparison:
        """A saved comparison with its fits' files in ``out_dir``: tests and verdict as saved,
        draws reloaded from the ``.nc`` files (nothing is sampled)."""
        builtin = get_model(saved["builtin"]) if saved.get("builtin") else None
        problem = Problem(model_from_json(saved["problem"]["model"]), dataset_from_json(saved["problem"]["dataset"]),
                          Labels(saved["model"], saved["scenario"], saved.get("parametrization")), builtin)
        outcomes = {}
        for label, record_json in saved["backends"].items():
            record = FitRecord.from_json(record_json)
            stem = out_dir / saved["files"][label]
            if record.ok:
                check_draws_file(record, out_dir / f"{stem.name}.nc", label)
            outcomes[label] = FitOutcome(None, stem, record, reused=True)
        agreement = saved["agreement"]
        comparison = cls(
            problem, SamplerSettings.from_dict(saved["settings"]), outcomes, agreement["family_alpha"],
            agreement["practical_floor_sd"], saved.get("method", "nuts"), saved.get("reference"),
            tests=[PairTest.from_dict(p) for p in agreement["pairs"]], verdict=agreement["verdict"],
            reasons=list(agreement["reasons"]), tests_verdict=agreement.get("tests_verdict"),
        )
        comparison.remedies = LadderSummary.from_json(saved)
        comparison.sources = load_sources(comparison)
        comparison.translation = saved.get("translation")
        comparison.recommendation = (Recommendation.from_json(saved["recommendation"]) if saved.get("recommendation")
                                     else recommend(comparison))
        cells = saved.get("methods") or {}
        comparison.methods = tuple(dict.fromkeys(entry["method"] for entry in cells.values())) or ("nuts",)
        if saved.get("variational_settings"):
            comparison.variational = VariationalSettings.from_dict(saved["variational_settings"])
        comparison.reference_column = (saved.get("scorecard") or {}).get("reference")
        for cell, entry in cells.items():
            if entry["method"] == "nuts":
                continue
            if entry["status"] == "n/a":
                comparison.not_applicable[cell] = entry["reason"]
                continue
            record = FitRecord.from_json(entry["record"])
            if record.ok:
                check_draws_file(record, out_dir / f"{entry['file']}.nc", cell)
            comparison.approximations[cell] = FitOutcome(None, out_dir / entry["file"], record, reused=True)
            if entry.get("scorecard"):
                comparison.scorecards[cell] = Scorecard.from_dict(entry["scorecard"])
        comparison.approximation_sources = {cell: load_quantities(problem, o.netcdf)
                                            for cell, o in comparison.approximations.items() if o.ok}
        return comparison


def check_draws_file(record: FitRecord, netcdf: Path, label: str) -> None:
    """Refuse a saved comparison whose draws file is missing or differs from its record."""
    rerun = f"run the same `polyppl compare` with --out {netcdf.parent} again to re-run that fit"
    if not netcdf.exists():
        raise UserError(f"the comparison in {netcdf.parent} lists a finished {label} fit, but {netcdf.name} is missing; "
                        + rerun)
    if record.netcdf_sha256 and file_sha256(netcdf) != record.netcdf_sha256:
        raise UserError(f"{netcdf} does not match the checksum in its record (damaged or cut short); " + rerun)


# --------------------------------------------------------------------------- quantities


def quantities(model: Model, dataset: Dataset, posterior: dict[str, np.ndarray]) -> dict[str, QuantityDraws]:
    """Every scalar quantity of a posterior, and its decision probabilities, by name
    (``rates[A]``, ``prob_beats[B>C]``)."""
    import xarray as xr

    frame = xr.Dataset({name: (("chain", "draw", *getattr(model[name], "dims", ())), np.asarray(value))
                        for name, value in posterior.items()},
                       coords={d: list(dataset.coords[d]) for d in model.dims})
    out = {k: QuantityDraws(v) for k, v in flatten(frame).items()}
    for group, values in decision_draws(model, dataset, posterior).items():
        for label, indicator in values.items():
            out[f"{group}[{label}]" if label else group] = QuantityDraws(indicator, is_probability=True)
    return out


def exact_posterior(problem: Problem, seed: int) -> dict[str, np.ndarray]:
    """The built-in model's exact posterior as chains of independent draws (name -> (chain,
    draw, *shape)), restricted to the names this parametrization outputs."""
    assert problem.builtin is not None and problem.builtin.exact_draws is not None
    draws = problem.builtin.exact_draws(problem.dataset, EXACT_CHAINS * EXACT_DRAWS_PER_CHAIN, seed)
    return {name: value.reshape(EXACT_CHAINS, EXACT_DRAWS_PER_CHAIN, *value.shape[1:])
            for name, value in draws.items() if name in problem.model.output_names}


def load_quantities(problem: Problem, netcdf: Path) -> dict[str, QuantityDraws]:
    """Every quantity of a finished fit, from its ``.nc``."""
    posterior = load_netcdf(netcdf).posterior
    return quantities(problem.model, problem.dataset, {n: posterior[n].values for n in problem.model.output_names})


def load_sources(comparison: Comparison) -> dict[str, dict[str, QuantityDraws]]:
    """Draws of every finished column (from its ``.nc``), and of the exact reference."""
    problem, sources = comparison.problem, {}
    for label, outcome in comparison.outcomes.items():
        if outcome.ok:
            sources[label] = load_quantities(problem, outcome.netcdf)
    if comparison.reference == "exact":
        sources["exact"] = quantities(problem.model, problem.dataset, exact_posterior(problem, comparison.settings.seed))
    return sources


# --------------------------------------------------------------------------- verdict


def assess(comparison: Comparison) -> Comparison:
    """Agreement tests, Holm-adjusted, and the verdict."""
    unconverged = []
    for label, outcome in comparison.outcomes.items():
        if not outcome.ok:
            comparison.reasons.append(f"{label} did not finish ({outcome.record.status}: {outcome.record.error})")
            continue
        failures = convergence_failures(outcome.record.diagnostics.flags)
        if failures:
            unconverged.append(label)
            comparison.reasons.append(f"{label} did not converge ({', '.join(failures)}): "
                                      "comparing unconverged chains is no evidence either way")
    comparison.sources = load_sources(comparison)
    columns = [label for label in comparison.sources if label != "exact"]
    pairs = [(a, b) for i, a in enumerate(columns) for b in columns[i + 1:]]
    if "exact" in comparison.sources:
        pairs += [(label, "exact") for label in columns]
    comparison.tests = holm(pair_tests(comparison.sources, comparison.floor, pairs), comparison.family_alpha)
    judged = [t for t in comparison.disagreements() if not set(t.backends) & set(unconverged)]
    if judged:
        comparison.verdict = "disagree"
        names = sorted({f"{t.quantity} ({' vs '.join(t.backends)})" for t in judged})
        comparison.reasons.insert(0, "disagreement beyond Monte Carlo error: " + "; ".join(names[:8])
                                  + (" ..." if len(names) > 8 else ""))
    elif comparison.reasons:
        comparison.verdict = "inconclusive"
    elif len(comparison.sources) < 2:
        comparison.verdict = "inconclusive"
        comparison.reasons.append("fewer than two finished sources: nothing to compare")
    else:
        comparison.verdict = "agree"
    return comparison


def recommend(comparison: Comparison, load: dict[str, float] | None = None) -> Recommendation:
    """Which backend to use (``studies.recommendation``): among the judged comparison's NUTS
    columns that converged, had no divergences and took part in no disagreement."""
    disagreeing = {backend for t in comparison.disagreements() for backend in t.backends}
    return recommend_among(comparison.records, comparison.sources, disagreeing, load)


# --------------------------------------------------------------------------- approximations


def best_nuts_column(comparison: Comparison) -> str | None:
    """The NUTS column the approximations are scored against: finished, fewest convergence
    failures, then fewest divergences, then the largest bulk ESS."""
    finished = {label: o.record for label, o in comparison.outcomes.items() if o.ok}
    if not finished:
        return None
    return min(finished, key=lambda label: (len(convergence_failures(finished[label].diagnostics.flags)),
                                            finished[label].diagnostics.divergences,
                                            -finished[label].diagnostics.ess_bulk_min))


def score_approximations(comparison: Comparison) -> Comparison:
    """Score each finished approximation against the best-converged NUTS column."""
    reference = best_nuts_column(comparison)
    comparison.reference_column = reference
    finished = {cell: o for cell, o in comparison.approximations.items() if o.ok}
    comparison.approximation_sources = {cell: load_quantities(comparison.problem, o.netcdf) for cell, o in finished.items()}
    if reference is None:
        return comparison
    nuts = comparison.outcomes[reference].record
    trusted = not convergence_failures(nuts.diagnostics.flags) and nuts.diagnostics.divergences == 0
    for cell, outcome in finished.items():
        record, raw = outcome.record, load_netcdf(outcome.netcdf).approximation
        comparison.scorecards[cell] = score(
            reference, comparison.sources[reference], comparison.approximation_sources[cell],
            raw["log_p"].values, raw["log_q"].values, reference_trusted=trusted,
            seconds=record.timings.warmup_seconds + record.timings.sampling_seconds,
            compile_seconds=record.timings.compile_seconds,
            gradient_evaluations=record.approximation.gradient_evaluations, converged=record.approximation.converged,
            nuts_seconds=nuts.timings.warmup_seconds + nuts.timings.sampling_seconds,
            nuts_gradient_evaluations=nuts.diagnostics.gradient_evaluations + nuts.diagnostics.warmup_gradient_evaluations,
        )
    return comparison


def check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    """The methods asked for, checked, ``nuts`` first: approximations are scored against it."""
    methods = tuple(dict.fromkeys(methods or ("nuts",)))
    for method in methods:
        if method not in METHODS:
            raise unknown("method", method, METHODS)
    if "nuts" not in methods:
        raise UserError(f"approximations are scored against NUTS: add nuts to the methods "
                        f"(e.g. nuts,{','.join(methods)})")
    return ("nuts", *(m for m in methods if m != "nuts"))


# --------------------------------------------------------------------------- the study


def as_problem(model: str | Model | Problem, dataset: Dataset | None = None, scenario: str | None = None,
               data: str | Path | None = None, parametrization: str | None = None) -> Problem:
    """What the user gave as a problem: a built-in model's name or ``FILE.py:NAME`` (with a
    scenario or CSV file), a spec ``Model`` with its ``Dataset``, or a ``Problem``."""
    if isinstance(model, Problem):
        return model
    if isinstance(model, Model):
        if dataset is None:
            raise UserError(f"model {model.name!r} needs its data: compare(model, dataset)")
        return Problem(model, dataset, Labels(model.name, "data"))
    if dataset is not None:
        raise UserError("a dataset goes with a spec Model; a built-in model takes scenario= or data=")
    return resolve(model, scenario, data, parametrization)


def compare(
    model: str | Model | Problem,
    dataset: Dataset | None = None,
    backends: Sequence[str] | None = None,
    *,
    scenario: str | None = None,
    data: str | Path | None = None,
    parametrization: str | None = None,
    settings: SamplerSettings | None = None,
    engines: dict[str, str] | None = None,
    reference: str | None = None,
    out: str | Path = "polyppl-results",
    timeout: float | None = None,
    force: bool = False,
    family_alpha: float = FAMILY_ALPHA,
    floor: float = PRACTICAL_FLOOR,
    methods: Sequence[str] = ("nuts",),
    variational: VariationalSettings | None = None,
    remedies: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Comparison:
    """Run one model on each backend (own process, optional timeout) and judge agreement.

    ``backends``: columns such as ``["pymc", "stan:pystan", "stan:cmdstanpy"]`` (all three
    backends by default); ``engines``: the engine of a backend named without one
    (``{"stan": "pystan"}``). Each fit is saved in ``out`` as it finishes, and the comparison
    (verdict and every test) as ``OUT/<model>-<scenario>-comparison.json``.

    ``remedies``: the rungs of the remedies ladder (``studies.remedies``) to climb when a
    NUTS fit diverges or does not converge: every backend again at a higher target
    acceptance, in the other parametrization, with longer chains. ``None`` is all of them,
    ``()`` or ``["none"]`` none. The comparison returned is the last rung's, with the ladder
    in ``remedies``.

    ``methods``: ``nuts`` and any approximations (``advi``, ``fullrank``, ``pathfinder``),
    run on every column with ``variational`` settings (the seed of ``settings`` by default)
    and scored against the best-converged NUTS column of the last rung.
    """
    if reference is not None and reference not in REFERENCES:
        raise unknown("reference", reference, REFERENCES)
    if not 0 < family_alpha < 1:
        raise UserError(f"family_alpha must lie strictly between 0 and 1, got {family_alpha!r}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"timeout must be positive, got {timeout!r}")
    problem = as_problem(model, dataset, scenario, data, parametrization)
    if reference == "exact" and (problem.builtin is None or problem.builtin.exact_draws is None):
        with_exact = ", ".join(name for name, m in MODELS.items() if m.exact_draws)
        raise UserError(f"--reference exact needs a model with an exact posterior ({with_exact}), not {problem.name}")
    settings = (settings or SamplerSettings()).for_model(problem.model)
    methods = check_methods(methods)
    remedies = check_remedies(remedies)
    variational = (variational or VariationalSettings(seed=settings.seed)) if len(methods) > 1 else None
    columns = parse_columns(list(backends) if backends else None)
    requests, approximation_requests, not_applicable = plan(problem, columns, methods, settings, variational, engines or {})
    for cell, reason in not_applicable.items():
        progress(f"{cell}: n/a - {reason}")
    translation = None
    if problem.model.source is not None and any(c.backend in LOWERED_BACKENDS for c in columns):
        # Never sample a wrong translation: a mismatch raises here, before any fit.
        progress("checking the translation: log density and gradient against Stan's own ...")
        checked = check_translation(problem, stan_engine=(engines or {}).get("stan"))
        translation = checked.to_json()
        progress(checked.summary())
    out = Path(out)
    load_start = load_now()

    def run(runs: list[tuple[str, str, FitRequest]], suffix: str) -> dict[str, FitOutcome]:
        """Each (label, column, request), reused or run (``run_fits``: prepared at once,
        sampled one at a time), as the progress lines count them."""
        jobs = []
        for i, (label, column, request) in enumerate(runs, start=1):
            stem = result_stem(out, problem.labels, column, request.method)
            jobs.append(FitJob(request, stem.with_name(stem.name + suffix), f"[{i}/{len(runs)}] {label}"))
        outcomes = run_fits(jobs, timeout=timeout, force=force, progress=progress)
        return {label: outcome for (label, _, _), outcome in zip(runs, outcomes)}

    def attempt(rung: Rung) -> Comparison:
        if rung.problem is not problem and translation is not None:
            # A program in its other form is another program: checked before it samples too.
            progress(f"checking the translation of the {rung.problem.parametrization} program ...")
            checked = check_translation(rung.problem, stan_engine=(engines or {}).get("stan"))
            progress(checked.summary())
        rung_requests = requests if rung.is_first else nuts_requests(rung.problem, columns, rung.settings, engines or {})
        outcomes = run([(label, label, request) for label, request in rung_requests.items()], rung.suffix)
        return assess(Comparison(rung.problem, rung.settings, outcomes, family_alpha, floor, reference=reference,
                                 methods=methods, variational=variational, not_applicable=not_applicable))

    with folder_lock(out, lock_name(problem.labels), waiting=progress):  # another run on this --out: take turns
        ladder = climb(problem, settings, attempt, lambda c: c.records, lambda c: c.verdict, remedies, progress)
        comparison = conclude(ladder)
        comparison.translation = translation
        load_end, cpus = load_now()
        comparison.recommendation = recommend(comparison, {"start": load_start[0], "end": load_end, "cpus": cpus})
        if approximation_requests:
            final = ladder.final.rung
            if final.problem is not problem:  # the other parametrization: its own requests and files
                approximation_requests, comparison.not_applicable = plan(final.problem, columns, methods, final.settings,
                                                                         variational, engines or {})[1:]
            form = f"-{final.problem.parametrization}" if final.problem is not problem else ""
            comparison.approximations = run([(cell, cell.rpartition("/")[0], request)
                                             for cell, request in approximation_requests.items()], form)
            score_approximations(comparison)
        save_json(comparison.to_json(), comparison_path(out, problem.labels, [c.label for c in columns]))
        return comparison


def conclude(ladder: Ladder[Comparison]) -> Comparison:
    """The chosen rung's comparison (the last, or where no rung rescued it the one with the
    fewest flags: ``Ladder.chosen``) with its ladder. Where no rung rescued it (remedies on,
    the last rung still flagged, divergences alone included) the verdict is inconclusive: a
    reason names the last rung tried and the backends that failed it, a finding about those
    backends on this model, and what the agreement tests said is kept beside it
    (``tests_verdict``)."""
    comparison = ladder.final.result
    comparison.remedies = summary = ladder.summary()
    if not summary.unrescued:
        return comparison
    last, chosen = ladder.last, ladder.final
    failed = " and ".join(last.findings.flagged())
    note = (f"no remedy rescued it: the last rung tried ({last.rung.describe()}) left {last.findings.text()} "
            f"({summary.stopped}); a finding about {failed} on this model, not about its posterior")
    if chosen is not last:
        note += (f". The tables are those of the rung with the fewest flags ({chosen.rung.describe()}: "
                 f"{chosen.findings.text()})")
    if comparison.verdict != "inconclusive":
        # The tests ran on converged chains; divergent transitions left can still mean a biased posterior.
        note += (f"; there the agreement tests say {comparison.verdict.upper()}, on converged chains (R-hat and "
                 f"ESS), but divergent transitions can mean a biased posterior")
        comparison.tests_verdict, comparison.verdict = comparison.verdict, "inconclusive"
    comparison.reasons.append(note)
    return comparison


def plan(problem: Problem, columns: Sequence[Column], methods: Sequence[str], settings: SamplerSettings,
         variational: VariationalSettings | None, engines: dict[str, str],
         ) -> tuple[dict[str, FitRequest], dict[str, FitRequest], dict[str, str]]:
    """Every request of a comparison, checked before anything runs: NUTS's by column (a
    refusal is the user's error and stops the comparison), the approximations' by cell
    ``<column>/<method>``, and the cells a backend or engine cannot run (n/a) with why."""
    requests = nuts_requests(problem, columns, settings, engines)
    approximations, not_applicable = {}, {}
    for c in columns:
        for method in methods:
            if method == "nuts":
                continue
            try:
                approximations[f"{c.label}/{method}"] = _request(problem, c, method, variational, engines)
            except UserError as refusal:
                not_applicable[f"{c.label}/{method}"] = str(refusal)
    return requests, approximations, not_applicable


def nuts_requests(problem: Problem, columns: Sequence[Column], settings: SamplerSettings,
                  engines: dict[str, str]) -> dict[str, FitRequest]:
    """The NUTS request of every column (a refusal is the user's error)."""
    return {c.label: _request(problem, c, "nuts", settings, engines) for c in columns}


def _request(problem: Problem, column: Column, method: str, settings: SamplerSettings | VariationalSettings,
             engines: dict[str, str]) -> FitRequest:
    engine = column.engine or engines.get(column.backend)
    return FitRequest.make(problem.model, problem.dataset, column.backend, engine, method, settings, labels=problem.labels)


def lock_name(labels: Labels) -> str:
    """The lock a run holds in its ``--out`` while it writes or reads the fits of one model
    and scenario (``store.folder_lock``)."""
    return f"{labels.model}-{labels.scenario}"


def comparison_name(labels: Labels, columns: Sequence[str]) -> str:
    """The name a comparison's files share: ``<model>-<scenario>`` for every backend, else
    with its columns (``<model>-<scenario>-pymc+stan-pystan``), so that a comparison of
    other columns in the same ``--out`` never overwrites it."""
    name = f"{labels.model}-{labels.scenario}"
    if set(columns) == set(BACKENDS):
        return name
    return name + "-" + "+".join(column.replace(":", "-") for column in columns)


def comparison_path(out: str | Path, labels: Labels, columns: Sequence[str] = tuple(BACKENDS)) -> Path:
    """Where a comparison's verdict and tests are saved: ``OUT/<name>-comparison.json``
    (``comparison_name``)."""
    return Path(out) / f"{comparison_name(labels, columns)}-comparison.json"


def load_comparison(out_dir: str | Path, model: str | None = None, scenario: str | None = None,
                    backends: Sequence[str] | None = None) -> Comparison:
    """A finished comparison from ``OUT_DIR`` (pick one with ``model``, ``scenario`` and its
    columns ``backends`` when the folder holds several), without sampling."""
    wanted = " ".join(f"--{k} {v}" for k, v in (("model", model), ("scenario", scenario),
                                                ("backends", ",".join(backends or ()))) if v)
    path, saved = find_saved(
        out_dir, "-comparison.json", "comparison", "polyppl compare",
        lambda saved: ((model is None or saved.get("model") == model)
                       and (scenario is None or saved.get("scenario") == scenario)
                       and (backends is None or set(saved.get("backends", ())) == set(backends))),
        wanted, lambda s: f"--model {s['model']} --scenario {s['scenario']} --backends {','.join(s.get('backends', ()))}")
    if "problem" not in saved:
        raise UserError(f"{path} was written by an older polyppl; run the comparison again")
    with folder_lock(out_dir, lock_name(Labels(saved["model"], saved["scenario"])), shared=True):
        return Comparison.from_json(saved, out_dir)
