"""posteriordb as the yardstick: every posterior on every backend, each backend checked
against the reference draws and against the others.

For each posterior: import it (``models.posteriordb``; a program outside the subset is
``unsupported`` and runs nothing), then fit it on every backend, one task of the grid
(``execution.grid``) per (posterior, backend), each returning the fit's typed
:class:`FitRecord`, kept in a resumable ledger (``OUT/posteriordb-ledger.jsonl``): a killed
worker or driver loses no finished fit, and a run started again runs only what is missing.

The tests, per posterior, one family: for every pair of finished backends and every backend
against the reference draws (where posteriordb has them), z tests of the mean, sd, 5% and
95% quantiles of every quantity the two share (every reference quantity, for the pairs with
the reference), each gap over the root sum of squares of the two MCSEs, referred to Student's
t (``studies.agreement``, the statistics ``compare`` uses). The reference's own Monte Carlo
error is included: its summaries come from its draws like a backend's (10 chains of 1,000
draws, thinned and nearly independent; ArviZ's ESS estimate all the same). The family's
p-values are adjusted together (Holm) for a false-alarm rate of at most 1% per posterior when
every backend is right; a gap below 0.1 posterior sd is never a disagreement.

A posterior's status: ``fail`` (a converged backend disagrees with the reference or with
another; the worst quantity named with its gap in posterior sds), ``error`` (a backend's fit
ended in error, crash or timeout, or a reference quantity is missing from its record),
``inconclusive`` (a backend did not converge: which and why), ``pass``, and ``unsupported``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from polyppl.backends import get_backend, parse_columns
from polyppl.errors import UserError, unknown
from polyppl.execution.fit import base_record, fit
from polyppl.execution.grid import DEFAULT_RETRIES, FitKey, GridRun, GridTask, read_ledger, run_grid
from polyppl.execution.record import FitRecord
from polyppl.execution.request import FitRequest
from polyppl.inference.diagnostics import convergence_failures, scalar_summary
from polyppl.inference.methods import SamplerSettings
from polyppl.models import Problem
from polyppl.models import posteriordb as db
from polyppl.spec.serialize import content_hash, dataset_hash, model_hash
from polyppl.studies.agreement import (
    FAMILY_ALPHA, PRACTICAL_FLOOR, PairTest, SummarySource, holm, not_finite, summary_pair_tests,
)
from polyppl.studies.remedies import Findings, Ladder, LadderSummary, Rung, Step, check_remedies, next_rung, off_note

DEFAULT_OUT = Path("polyppl-posteriordb")
#: The source name of posteriordb's reference draws among the backends' columns.
REFERENCE = "reference"
#: The ledger's backend label of a posterior's translation check.
TRANSLATION = "translation"
STATUSES = ("pass", "fail", "inconclusive", "unsupported", "error")
SELECTIONS = ("names", "all", "reference-only")
#: Bumped when what a task records changes, so that older ledger lines are not reused.
LEDGER_FORMAT = 1
#: The rungs of the remedies ladder a flagged posterior climbs by default: not the other
#: parametrization (posteriordb's reference is of the program as written, which Stan runs).
POSTERIORDB_REMEDIES = ("target", "draws")
Progress = Callable[[str], None]


# --------------------------------------------------------------------------- one fit


def run_posterior_fit(request: FitRequest) -> dict[str, Any]:
    """Fit one posterior on one backend (on a worker of the grid): its :class:`FitRecord`,
    as JSON."""
    return fit(request).record.to_json()


def record_of(request: FitRequest, entry: Mapping[str, Any]) -> FitRecord:
    """The typed record of a grid task's ledger entry: the fit's own for a finished fit, the
    request's failed record (status, error) for one that ended in error, timeout or crash."""
    if entry["status"] == "ok":
        return FitRecord.from_json({**entry["result"], "status": "ok"})
    return base_record(request).failed(entry["status"], entry.get("error") or entry["status"],
                                       entry.get("traceback"), entry.get("seconds"))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PosteriorPlan:
    """One posterior of a run: what it imported as, or why it runs nothing."""

    posterior: db.Posterior
    requests: dict[str, FitRequest]  # by column label; empty when unsupported or not imported
    status: str | None = None  # unsupported or error, decided before anything runs
    reason: str = ""
    #: The translation check's task, for a model lowered from its program.
    check: GridTask | None = None
    problem: Problem | None = None


@dataclass(frozen=True)
class StudyPlan:
    root: Path
    posteriors: list[PosteriorPlan]
    labels: tuple[str, ...]
    settings: SamplerSettings
    family_alpha: float
    floor: float
    tasks: list[GridTask]
    ledger: Path
    #: The rungs a flagged posterior may climb (empty: ``--remedies none``).
    remedies: tuple[str, ...] = ()

    @property
    def checks(self) -> list[GridTask]:
        return [p.check for p in self.posteriors if p.check is not None]

    def without_translations_that_failed(self, checks: GridRun) -> StudyPlan:
        """The plan with each posterior whose translation check did not pass marked ``error``
        and its fits dropped: never sample a wrong translation."""
        failed = {task.key.model: checks.entries[task.key] for task in self.checks
                  if checks.entries.get(task.key, {}).get("status") != "ok"}
        if not failed:
            return self
        posteriors = [replace(p, requests={}, status="error",
                              reason=f"translation check: {failed[p.posterior.name].get('error') or 'not run'}")
                      if p.posterior.name in failed else p for p in self.posteriors]
        return replace(self, posteriors=posteriors, tasks=[t for t in self.tasks if t.key.model not in failed])


def select(root: Path, names: Sequence[str] = (), selection: str = "names") -> list[db.Posterior]:
    """The posteriors asked for: by name, every one (``all``), or those with reference draws
    (``reference-only``, narrowed to ``names`` when some are given)."""
    if selection not in SELECTIONS:
        raise unknown("selection", selection, SELECTIONS)
    found = db.posteriors(root)
    for name in names:
        if name not in found:
            close = [n for n in found if n.lower().startswith(name.lower())][:5] or difflib.get_close_matches(
                name, list(found), n=5, cutoff=0.5)
            raise UserError(f"no posterior {name!r} in {root / 'posteriors'}"
                            + (f"; did you mean: {', '.join(close)}" if close else "; see `polyppl posteriordb --list`"))
    if selection == "names" and not names:
        raise UserError("name posteriors (see `polyppl posteriordb --list`), or give --all or --reference-only")
    chosen = list(dict.fromkeys(names)) if names else list(found)
    return [found[n] for n in chosen if selection != "reference-only" or found[n].has_reference]


def plan_study(root: Path, names: Sequence[str] = (), selection: str = "names", backends: Sequence[str] | None = None,
               settings: SamplerSettings | None = None, engines: Mapping[str, str] | None = None,
               family_alpha: float = FAMILY_ALPHA, floor: float = PRACTICAL_FLOOR,
               out: str | Path = DEFAULT_OUT, remedies: Sequence[str] | None = None) -> StudyPlan:
    """Every posterior imported and every fit request made (checked) before anything runs."""
    if not 0 < family_alpha < 1:
        raise UserError(f"family_alpha must lie strictly between 0 and 1, got {family_alpha!r}")
    columns = parse_columns(list(backends) if backends else None)
    if len({c.label for c in columns}) != len(columns):
        raise UserError("a backend appears twice")
    if any(c.label == REFERENCE for c in columns):
        raise UserError(f"{REFERENCE!r} names posteriordb's draws; it cannot be a backend's label")
    settings = settings or SamplerSettings()
    remedies = posteriordb_remedies(remedies)
    plans, tasks = [], []
    for posterior in select(root, names, selection):
        try:
            problem = db.import_posterior(posterior)
        except db.UnsupportedPosterior as exc:
            plans.append(PosteriorPlan(posterior, {}, "unsupported", str(exc)))
            continue
        except UserError as exc:
            plans.append(PosteriorPlan(posterior, {}, "error", f"import: {exc}"))
            continue
        requests = {}
        try:
            for column in columns:
                engine = get_backend(column.backend).engine(column.engine or (engines or {}).get(column.backend))
                # The grid runs one fit per core: each engine keeps its chains on one.
                chained = (replace(settings, chain_method=engine.single_core_chains) if settings.chain_method == "auto"
                           else settings)
                requests[column.label] = FitRequest.make(problem.model, problem.dataset, column.backend, engine.name,
                                                         "nuts", chained, labels=problem.labels)
        except UserError as exc:
            # A backend that cannot run this model (a family or feature it lacks): the posterior
            # is outside what all the backends asked for run, and none of them runs it.
            plans.append(PosteriorPlan(posterior, {}, "unsupported", f"{column.label}: {exc}"))
            continue
        tasks += [_fit_task(posterior.name, label, request, "", settings.seed) for label, request in requests.items()]
        plans.append(PosteriorPlan(posterior, requests, check=_translation_task(problem, posterior, settings.seed,
                                                                             (engines or {}).get("stan")),
                                   problem=problem))
    return StudyPlan(root, plans, tuple(c.label for c in columns), settings, family_alpha, floor, tasks,
                     Path(out) / "posteriordb-ledger.jsonl", remedies)


def _fit_task(name: str, label: str, request: FitRequest, suffix: str, seed: int) -> GridTask:
    """The grid task of one fit; ``suffix`` names its rung of the remedies ladder (empty for
    the settings asked, ``-target95`` ...), so that every rung's fits keep their own ledger lines."""
    return GridTask(FitKey(name, label, "nuts", db.SCENARIO + suffix, seed), "polyppl.studies.posteriordb:run_posterior_fit",
                    request, content_hash([LEDGER_FORMAT, request.hash_parts()]))


def rung_tasks(plan: PosteriorPlan, rung: Rung, seed: int) -> dict[str, GridTask]:
    """Every backend of a posterior at a rung of the ladder (all of them, so that the columns
    stay comparable): the plan's own requests at the first rung."""
    tasks = {}
    for label, request in plan.requests.items():
        if not rung.is_first:
            settings = replace(rung.settings, chain_method=request.settings.chain_method)
            request = FitRequest.make(request.model, request.dataset, request.backend, request.engine, "nuts", settings,
                                      dict(request.options), request.labels)
        tasks[label] = _fit_task(plan.posterior.name, label, request, rung.suffix, seed)
    return tasks


def posteriordb_remedies(names: Sequence[str] | None) -> tuple[str, ...]:
    """The rungs a flagged posterior climbs: :data:`POSTERIORDB_REMEDIES` for None, else as
    asked (``studies.remedies.check_remedies``), the other parametrization refused."""
    rungs = POSTERIORDB_REMEDIES if names is None else check_remedies(names)
    if "parametrization" in rungs:
        raise UserError("--remedies parametrization does not apply to posteriordb: its reference draws are of the "
                        "program as written; use target and draws")
    return rungs


def _translation_task(problem: Problem, posterior: db.Posterior, seed: int, stan_engine: str | None) -> GridTask | None:
    """The Stan front end's translation check of a model lowered from its program (the
    model carries its program as ``source``), as a task; None for a model without one."""
    if getattr(problem.model, "source", None) is None:
        return None
    return GridTask(FitKey(posterior.name, TRANSLATION, "check", db.SCENARIO, seed),
                    "polyppl.studies.posteriordb:run_translation_check", (problem, stan_engine),
                    content_hash([LEDGER_FORMAT, model_hash(problem.model), dataset_hash(problem.dataset), stan_engine]))


def run_translation_check(argument: tuple[Problem, str | None]) -> dict[str, Any]:
    """(On a worker.) The lowered model's log density and gradient on PyMC and NumPyro against
    Stan's own for the program (``studies.translation``); a mismatch raises, and the grid
    records it as an error."""
    from polyppl.studies.translation import check_translation  # the Stan front end's

    problem, stan_engine = argument
    return check_translation(problem, stan_engine=stan_engine).to_json()


# --------------------------------------------------------------------------- judging one posterior


@dataclass(frozen=True)
class BackendResult:
    """One backend on one posterior: its record and how it compares with the reference."""

    record: FitRecord
    vs_reference: str | None  # agree, disagree, inconclusive; None without reference or finished fit
    worst: PairTest | None  # its test against the reference (or, without one, another backend) most off

    @property
    def converged(self) -> bool:
        return self.record.ok and not convergence_failures(self.record.diagnostics.flags)

    def speed(self) -> dict[str, float | None]:
        """ESS/s (smallest bulk ESS over the sampling seconds), µs per gradient, gradients per
        draw, and the compile, warm-up and sampling seconds, from the record."""
        r = self.record
        if not r.ok:
            return dict.fromkeys(("ess_per_s", "us_per_gradient", "gradients_per_draw", "compile_seconds",
                                  "warmup_seconds", "sampling_seconds"))
        d, t = r.diagnostics, r.timings
        return {"ess_per_s": d.ess_bulk_per_second,
                "us_per_gradient": d.seconds_per_gradient * 1e6 if d.seconds_per_gradient is not None else None,
                "gradients_per_draw": d.gradients_per_draw, "compile_seconds": t.compile_seconds,
                "warmup_seconds": t.warmup_seconds, "sampling_seconds": t.sampling_seconds}


@dataclass(frozen=True)
class PosteriorResult:
    plan: PosteriorPlan
    status: str
    reason: str
    backends: dict[str, BackendResult]
    tests: list[PairTest]
    #: The translation check's ``{points, max_rel_error, gradient_rtol}``; None where it did not pass.
    translation: dict[str, Any] | None = None
    #: The remedies ladder (each rung's findings and verdict); None where no fit ran.
    ladder: LadderSummary | None = None

    @property
    def name(self) -> str:
        return self.plan.posterior.name

    @property
    def fastest(self) -> str | None:
        """The converged backend with the most ESS per second of sampling; None unless every
        backend finished and converged (a speed that buys wrong draws is not a speed)."""
        speeds = {label: b.speed()["ess_per_s"] for label, b in self.backends.items()}
        if not speeds or not all(b.converged for b in self.backends.values()) or None in speeds.values():
            return None
        return max(speeds, key=lambda label: speeds[label])


def gap_in_sd(test: PairTest) -> float:
    """A test's gap in posterior sds (the sd pooled over its two sources)."""
    return test.gap / test.sd if test.sd > 0 else float("inf") if test.gap else 0.0


def _worst(tests: list[PairTest]) -> PairTest | None:
    """The disagreement with the largest gap in sds; without one, the smallest p-value."""
    disagreeing = [t for t in tests if not t.agree]
    if disagreeing:
        return max(disagreeing, key=lambda t: abs(gap_in_sd(t)))
    return min(tests, key=lambda t: t.p_value, default=None)


def describe_test(test: PairTest) -> str:
    """``numpyro: mu mean 0.52 sd above the reference (z = 9.1)``."""
    first, second = test.backends
    other = "the reference" if second == REFERENCE else second
    direction = "above" if test.gap > 0 else "below"
    return f"{first}: {test.quantity} {test.statistic} {abs(gap_in_sd(test)):.2f} sd {direction} {other} (z = {test.z:.1f})"


def judge(plan: PosteriorPlan, records: dict[str, FitRecord], reference: SummarySource | None,
          family_alpha: float, floor: float) -> PosteriorResult:
    """One posterior's tests (one Holm family), each backend's standing and the status."""
    if plan.status is not None:
        return PosteriorResult(plan, plan.status, plan.reason, {}, [])
    finished = {label: r for label, r in records.items() if r.ok}
    problems, unconverged = [], []
    for label, record in records.items():
        if not record.ok:
            problems.append(f"{label} {record.status}: {record.error}")
        elif convergence_failures(record.diagnostics.flags):
            unconverged.append(label)
        elif not_finite(record.posterior):  # an improper direction: no test can speak for it
            unconverged.append(label)
            problems.append(f"{label} drew non-finite values of {', '.join(not_finite(record.posterior)[:3])}")
    missing = {}
    if reference is not None:
        for label, record in finished.items():
            lacking = [q for q in reference.summaries if q not in record.posterior]
            if lacking:
                missing[label] = lacking
                problems.append(f"{label} lacks reference quantities {', '.join(lacking[:5])}"
                                + (" ..." if len(lacking) > 5 else ""))
    sources = {label: SummarySource(r.posterior, r.settings["chains"]) for label, r in finished.items()}
    labels = list(sources)
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    if reference is not None:
        sources[REFERENCE] = reference
        pairs += [(label, REFERENCE) for label in labels if label not in missing]
    tests = holm(summary_pair_tests(sources, pairs, floor), family_alpha)
    judged = [t for t in tests if not t.agree and not set(t.backends) & set(unconverged)]

    backends = {}
    for label, record in records.items():
        own = [t for t in tests if t.backends[0] == label and t.backends[1] == REFERENCE]
        verdict = None
        if reference is not None and record.ok and label not in missing:
            verdict = ("inconclusive" if label in unconverged
                       else "disagree" if any(not t.agree for t in own) else "agree")
        worst = _worst(own if reference is not None else [t for t in tests if label in t.backends])
        backends[label] = BackendResult(record, verdict, worst)

    if judged:
        status = "fail"
        worst = sorted(judged, key=lambda t: -abs(gap_in_sd(t)))
        named = list(dict.fromkeys(describe_test(t) for t in worst))
        reason = "; ".join(named[:3]) + (f"; and {len(named) - 3} more" if len(named) > 3 else "")
    elif problems:
        status, reason = "error", "; ".join(problems)
    elif unconverged:
        status = "inconclusive"
        reason = "; ".join(f"{label} did not converge ({', '.join(convergence_failures(records[label].diagnostics.flags))})"
                           for label in unconverged)
    elif reference is None and len(finished) < 2:
        status, reason = "inconclusive", "no reference draws and fewer than two finished backends: nothing to compare"
    else:
        status = "pass"
        against = "the reference and each other" if reference is not None else "each other (no reference draws)"
        reason = f"{len(finished)} backends agree with {against}: {len(tests)} tests, none beyond Monte Carlo error"
    if problems and status == "fail":
        reason += "; also " + "; ".join(problems)
    return PosteriorResult(plan, status, reason, backends, tests)


def reference_source(posterior: db.Posterior) -> SummarySource:
    """posteriordb's reference draws summarized like a backend's (MCSEs from ArviZ's ESS)."""
    draws = db.reference_draws(posterior)
    chains = {value.shape[0] for value in draws.values()}
    return SummarySource({name: scalar_summary(value) for name, value in draws.items()}, min(chains))


# --------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class StudyRun:
    plan: StudyPlan
    results: list[PosteriorResult]
    grid: dict[str, Any]

    @property
    def ledger(self) -> Path:
        return self.plan.ledger

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def exit_code(self) -> int:
        """1 on any fail or error, else 3 on any inconclusive, else 0 (pass or unsupported)."""
        counts = self.counts()
        if counts["fail"] or counts["error"]:
            return 1
        return 3 if counts["inconclusive"] else 0

    def speed_by_posterior(self) -> dict[str, dict[str, Any]]:
        """Per posterior where every backend converged and none disagreed (pass, or
        inconclusive only for want of a reference): the fastest backend by ESS/s, each
        backend's ESS/s and its ratio to the fastest's (1 for the fastest)."""
        out = {}
        for result in self.results:
            if result.fastest is None or result.status not in ("pass", "inconclusive"):
                continue
            speeds = {label: b.speed()["ess_per_s"] for label, b in result.backends.items()}
            best = speeds[result.fastest]
            out[result.name] = {"fastest": result.fastest, "ess_per_s": speeds,
                                "over_fastest": {label: speed / best for label, speed in speeds.items()}}
        return out

    def speed_ratios(self) -> tuple[dict[str, float], int]:
        """Each backend's ESS/s over the fastest backend's, geometric mean over the posteriors
        of :meth:`speed_by_posterior`; and how many those are."""
        import math

        per_posterior = self.speed_by_posterior()
        logs: dict[str, list[float]] = {label: [] for label in self.plan.labels}
        for row in per_posterior.values():
            for label, ratio in row["over_fastest"].items():
                logs[label].append(math.log(ratio))
        return {label: math.exp(sum(v) / len(v)) for label, v in logs.items() if v}, len(per_posterior)

    def to_json(self) -> dict[str, Any]:
        posteriors = {}
        for result in self.results:
            backends = {}
            for label, b in result.backends.items():
                worst = b.worst
                backends[label] = {
                    "status": b.record.status, "engine": b.record.engine, "vs_reference": b.vs_reference,
                    "worst": None if worst is None else {
                        "quantity": worst.quantity, "statistic": worst.statistic, "against": worst.backends[1],
                        "gap": worst.gap, "gap_sd": gap_in_sd(worst), "z": worst.z, "p_value": worst.p_value,
                        "agree": worst.agree},
                    **b.speed(),
                    "divergences": b.record.diagnostics.divergences if b.record.ok else None,
                    "flags": list(b.record.diagnostics.flags) if b.record.ok else [],
                    "error": b.record.error,
                    "record": b.record.to_json(),
                }
            posteriors[result.name] = {
                "status": result.status, "reason": result.reason, "reference": result.plan.posterior.has_reference,
                "model": result.plan.posterior.model_name, "data": result.plan.posterior.data_name,
                "translation": result.translation, "fastest": result.fastest,
                "tests": len(result.tests), "disagreements": [t.as_dict() for t in result.tests if not t.agree],
                "backends": backends,
                **(result.ladder.to_json() if result.ladder is not None else
                   {"remedies": [], "remedies_enabled": bool(self.plan.remedies), "remedies_stopped": None}),
            }
        ratios, compared = self.speed_ratios()
        return {
            "posteriordb": str(self.plan.root), "backends": list(self.plan.labels),
            "settings": self.plan.settings.as_dict(), "family_alpha": self.plan.family_alpha,
            "remedies": list(self.plan.remedies),
            "floor_sd": self.plan.floor, "statistics": ["mean", "sd", "q05", "q95"],
            "posteriors": posteriors, "summary": self.counts(),
            "speed": {"ess_per_s_over_fastest_geometric_mean": ratios, "posteriors_compared": compared,
                      "per_posterior": self.speed_by_posterior(),
                      "fastest_count": {label: sum(1 for row in self.speed_by_posterior().values()
                                                   if row["fastest"] == label) for label in self.plan.labels}},
            "grid": self.grid, "ledger": str(self.ledger),
        }


def run_posteriordb(
    path: str | Path | None,
    names: Sequence[str] = (),
    selection: str = "names",
    backends: Sequence[str] | None = None,
    *,
    settings: SamplerSettings | None = None,
    engines: Mapping[str, str] | None = None,
    family_alpha: float = FAMILY_ALPHA,
    floor: float = PRACTICAL_FLOOR,
    out: str | Path = DEFAULT_OUT,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    remedies: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> StudyRun:
    """The posteriors of the posteriordb snapshot at ``path`` (a checkout or its
    ``posterior_database`` folder; ``$POLYPPL_POSTERIORDB`` when None) named or selected
    (``all``, ``reference-only``) on every backend, on the grid (``scheduler``: None for a
    local Dask cluster of ``workers`` processes, ``tcp://HOST:PORT``, or ``in-process``).

    ``remedies``: the rungs a posterior climbs when a backend's fit is flagged
    (:func:`posteriordb_remedies`; None: target acceptance, then longer chains; ``("none",)``:
    none). Every backend of the posterior runs again at each rung, each rung's fits in the
    ledger, and the posterior is judged on the rung the ladder chooses."""
    root = db.locate(path)
    plan = plan_study(root, names, selection, backends, settings, engines, family_alpha, floor, out, remedies)
    if progress:
        runnable = sum(1 for p in plan.posteriors if p.requests)
        progress(f"posteriordb at {root}: {len(plan.posteriors)} posteriors, {runnable} importable, "
                 f"{len(plan.tasks)} fits on {', '.join(plan.labels)}; ledger {plan.ledger}")
        for p in plan.posteriors:
            if p.status is not None:
                progress(f"{p.posterior.name}: {p.status} - {p.reason}")

    plan.ledger.parent.mkdir(parents=True, exist_ok=True)
    checks = None
    if plan.checks:
        # First every translation check, then the fits of the posteriors that passed theirs.
        if progress:
            progress(f"checking {len(plan.checks)} translations: log density and gradient against Stan's own")
        checks = run_grid(plan.checks, ledger=plan.ledger, scheduler=scheduler, workers=workers, timeout=timeout,
                          retries=retries, on_result=_check_line(progress))
        plan = plan.without_translations_that_failed(checks)
    in_ledger = read_ledger(plan.ledger).entries
    todo = sum(1 for t in plan.tasks if (t.key.text(), t.config) not in in_ledger)
    if progress and todo < len(plan.tasks):
        progress(f"{len(plan.tasks) - todo} fits already in the ledger; running the other {todo}")

    def run_round(tasks: list[GridTask]) -> GridRun:
        waiting = sum(1 for t in tasks if (t.key.text(), t.config) not in read_ledger(plan.ledger).entries)
        return run_grid(tasks, ledger=plan.ledger, scheduler=scheduler, workers=workers, timeout=timeout,
                        retries=retries, on_result=_fit_line(progress, tasks, waiting))

    ladders, grids = climb_posteriors(plan, run_round, plan.remedies, progress)
    return summarize(plan, ladders, grids, checks)


#: One posterior's fits at one rung: its records by backend label.
RungRecords = dict[str, FitRecord]


def climb_posteriors(plan: StudyPlan, run_round: Callable[[list[GridTask]], GridRun], remedies: Sequence[str],
                     progress: Progress | None = None) -> tuple[dict[str, Ladder[RungRecords]], list[GridRun]]:
    """Every posterior's fits at the settings asked, then, round after round on the grid,
    every backend of each flagged posterior again at its next rung (``studies.remedies``),
    until no posterior has a rung left to climb. Each posterior's ladder (its rungs' records),
    and each round's grid."""
    rungs = {p.posterior.name: Rung.first(p.problem, plan.settings) for p in plan.posteriors
             if p.requests and p.problem is not None}
    plans = {p.posterior.name: p for p in plan.posteriors}
    steps: dict[str, list[Step[RungRecords]]] = {name: [] for name in rungs}
    reasons: dict[str, str | None] = dict.fromkeys(rungs)
    stopped: dict[str, str | None] = {}
    grids = []
    while rungs:
        tasks = {name: rung_tasks(plans[name], rung, plan.settings.seed) for name, rung in rungs.items()}
        grid = run_round([t for by_label in tasks.values() for t in by_label.values()])
        grids.append(grid)
        following = {}
        for name, rung in rungs.items():
            records = {label: record_of(task.argument, grid.entries[task.key])
                       for label, task in tasks[name].items() if task.key in grid.entries}
            findings = Findings.of(records)
            steps[name].append(Step(rung, records, findings, "clean" if findings.clean else "flagged", reasons[name],
                                    tuple(records)))
            if not remedies:
                stopped[name] = None if findings.clean else off_note(rung, findings)
                continue
            after, why = next_rung(rung, findings, remedies, Ladder(steps[name], tuple(remedies)).final.rung)
            if after is None:
                stopped[name] = None if findings.clean else why
                continue
            reasons[name] = f"{rung.describe()}: {findings.text()}"
            if progress:
                progress(f"{name}: remedies: {reasons[name]} -> all backends {after.describe()}")
            following[name] = after
        rungs = following
    return {name: Ladder(s, tuple(remedies), stopped.get(name)) for name, s in steps.items()}, grids


def _check_line(progress: Progress | None) -> Callable[[GridTask, dict[str, Any]], None]:
    def line(task: GridTask, entry: dict[str, Any]) -> None:
        if progress:
            failed = f" - {entry.get('error')}" if entry["status"] != "ok" else ""
            progress(f"{task.key.model}: translation check {entry['status']}{failed}")
    return line


def _fit_line(progress: Progress | None, tasks: Sequence[GridTask], todo: int) -> Callable[[GridTask, dict[str, Any]], None]:
    """A progress line per finished fit: its status, time and speed."""
    requests = {task.key: task.argument for task in tasks}
    done = 0

    def line(task: GridTask, entry: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if progress is None:
            return
        record = record_of(requests[task.key], entry)
        if record.ok:
            speed = BackendResult(record, None, None).speed()
            flags = f", flags: {', '.join(record.diagnostics.flags)}" if record.diagnostics.flags else ""
            what = (f"ok in {entry.get('seconds') or 0:.0f} s, {speed['ess_per_s'] or 0:.0f} ESS/s, "
                    f"{speed['us_per_gradient'] or 0:.1f} µs/gradient{flags}")
        else:
            what = f"{record.status}: {(record.error or '').splitlines()[0] if record.error else ''}"
        rung = str(task.key.simulation).removeprefix(db.SCENARIO).lstrip("-")
        progress(f"[{done}/{todo}] {task.key.model} on {task.key.backend}{f' ({rung})' if rung else ''}: {what}")
    return line


def summarize(plan: StudyPlan, ladders: Mapping[str, Ladder[RungRecords]], grids: Sequence[GridRun],
              checks: GridRun | None = None) -> StudyRun:
    """Every posterior judged on the rung its ladder chose (its records from the ledger), with
    its translation check's outcome and the ladder's rungs, each rung's verdict its own."""
    results = []
    for posterior_plan in plan.posteriors:
        name = posterior_plan.posterior.name
        reference = None
        if posterior_plan.status is None and posterior_plan.posterior.has_reference:
            reference = reference_source(posterior_plan.posterior)
        translation = None
        if checks is not None and posterior_plan.check is not None:
            entry = checks.entries.get(posterior_plan.check.key)
            translation = entry["result"] if entry and entry["status"] == "ok" else None
        ladder = ladders.get(name)
        if ladder is None:
            results.append(replace(judge(posterior_plan, {}, reference, plan.family_alpha, plan.floor),
                                   translation=translation))
            continue
        judged = [judge(posterior_plan, step.result, reference, plan.family_alpha, plan.floor) for step in ladder.steps]
        ladder.steps = [replace(step, verdict=j.status) for step, j in zip(ladder.steps, judged)]
        result = judged[ladder.chosen]
        summary = ladder.summary()
        reason = result.reason
        if summary.climbed:
            reason = f"{summary.line(result.status)}; {reason}"
        if summary.stopped is not None and result.status == "inconclusive":
            reason += f"; the ladder stopped {summary.rungs[-1].rung}: {summary.stopped}"
        results.append(replace(result, reason=reason, translation=translation, ladder=summary))
    first = grids[0] if grids else None
    facts = {"where": first.where if first else "nothing to run", "workers": max((g.workers for g in grids), default=0),
             "fits_run": sum(g.ran for g in grids), "fits_reused": sum(g.reused for g in grids),
             "wall_seconds": sum(g.wall_seconds for g in grids), "rounds": len(grids)}
    return StudyRun(plan, results, facts)


def listing(path: str | Path | None) -> list[dict[str, Any]]:
    """Every posterior of the snapshot: whether it has reference draws and whether its program
    imports (``supported``, ``unsupported`` with why, ``error``)."""
    root = db.locate(path)
    rows = []
    for posterior in db.posteriors(root).values():
        support, why = db.support(posterior)
        rows.append({"name": posterior.name, "reference": posterior.has_reference, "program": support, "why": why})
    return rows


__all__ = ["DEFAULT_OUT", "REFERENCE", "STATUSES", "BackendResult", "PosteriorPlan", "PosteriorResult", "StudyPlan",
           "StudyRun", "describe_test", "gap_in_sd", "judge", "listing", "plan_study", "record_of", "reference_source",
           "run_posterior_fit", "run_posteriordb", "select", "summarize"]
