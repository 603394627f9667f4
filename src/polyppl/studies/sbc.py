"""Simulation-based calibration (SBC) of every backend, on a grid of fits.

For simulation i of an SBC run with seed s, parameters are drawn from the prior and data
from the likelihood (``inference.numpy_model.simulate``), the model is fitted to those data
on each backend, and the rank of each true value among the posterior draws is recorded
(Talts et al. 2018). Ranks of a calibrated sampler are uniform; ``studies.sbc_stats`` turns
them into a verdict per quantity (the Säilynoja et al. 2022 band test, Holm over each
backend's quantities) and ``render.sbc_report`` into ECDF-difference plots and rank
histograms.

Test quantities: every scalar element of the model's parameters and deterministics (what the
backends sample; conditional draws and decisions are left out), and the log-likelihood of
the simulated data, summed over observations (Modrák et al. 2023: it reacts to errors no
single parameter shows).

Thinning. Every fit's ranks are computed at each L of ``sbc_stats.L_LADDER`` up to
:data:`sbc_stats.DEFAULT_L` (and the number of draws), from one set of L draws thinned
evenly from every chain (the same draws for every quantity). Once all fits are in, the run's
L is the largest of these that the smallest bulk ESS of at least :data:`L_SHARE` of the
finished fits reaches (``sbc_stats.choose_L``): ranks among draws thinned to about the ESS,
one L for the whole run; fits whose ESS falls short of it are counted (``ess_below_L``).

Reproducibility. Simulation i of seed s has its own streams of random numbers, derived from
``numpy.random.SeedSequence(s, spawn_key=(i, k))``: k = 0 draws the parameters and data, k = 1
the sampler's seed (the same for every backend), k = 2 thins and breaks ties (per backend
and L). Whatever runs a simulation, and in whatever order, it gets the same numbers. Results
are the same bit for bit when a simulation runs again on the same machine and versions.

Nothing is dropped: fits that fail, time out or crash count per backend (they have no
ranks); fits with divergences or without convergence (R-hat, ESS) keep their ranks and are
counted too.

Fits run on a grid (``execution.grid``): a local Dask cluster by default, an existing one
with ``scheduler``; a ledger (``OUT/<model>-<scenario>-sbc-ledger.jsonl``) keeps every
finished fit, so a run that is interrupted and started again runs only what is missing.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polyppl.backends import get_backend, parse_columns
from polyppl.errors import UserError, did_you_mean
from polyppl.execution.fit import base_record
from polyppl.execution.grid import DEFAULT_RETRIES, FitKey, GridRun, GridTask, compiled_for, run_grid
from polyppl.execution.record import ApproximationSummary, FitRecord
from polyppl.execution.store import find_saved
from polyppl.execution.request import FitRequest
from polyppl.inference.convergence import convergence, prepare as prepare_convergence
from polyppl.inference.diagnostics import FLAG_MEANINGS, convergence_failures, diagnose
from polyppl.inference.methods import SamplerSettings, get_method
from polyppl.inference.numpy_model import log_likelihood, simulate, substitute
from polyppl.models import Labels, Problem, resolve
from polyppl.models.stan_program import check_simulable
from polyppl import spec
from polyppl.spec import FAMILIES, Dataset, Dist, Model
from polyppl.spec.serialize import content_hash, dataset_from_json, dataset_to_json, model_from_json, model_to_json
from polyppl.studies import sbc_stats
from polyppl.studies.translation import LOWERED_BACKENDS, check_translation
from polyppl.studies.remedies import LadderSummary, Rung, check_remedies, climb

DEFAULT_OUT = Path("polyppl-sbc")
DEFAULT_SIMULATIONS = 200
#: Settings of every SBC fit unless stated. 4 x 250 draws leave an ESS above L = 99 for the
#: built-in models; 500 warm-up iterations are enough for their adaptation (Stan's windows
#: scale down from 1000). Chain method ``auto`` means here each engine's way of keeping its
#: chains on one core (``Engine.single_core_chains``): the grid runs one fit per core.
DEFAULT_SETTINGS = SamplerSettings(chains=4, draws=250, tune=500)
#: The added test quantity: the log-likelihood of the simulated data.
LOG_LIKELIHOOD = "log_likelihood"
#: The run's L is the largest rung that the smallest ESS of at least this share of fits reaches.
L_SHARE = 0.9
#: Bumped when what a fit records changes, so that older ledger lines are not reused (3: each
#: task's result is an :class:`SbcFit`, its fit's :class:`FitRecord` inside, and the ladder).
LEDGER_FORMAT = 3
#: The rungs of the remedies ladder an SBC fit climbs by default: none yet. The ladder is sound
#: for SBC (docs/sbc.md), but every SBC figure so far (the power against broken compilers, the
#: calibration tests, selftest's claims) was measured on the sampler as asked; ``("target",)``
#: once they are measured again with it. ``--remedies target`` asks for it now.
SBC_REMEDIES: tuple[str, ...] = ()
Progress = Callable[[str], None]


# --------------------------------------------------------------------------- one simulation


@dataclass(frozen=True)
class SbcJob:
    """One fit of an SBC run, sent to a worker: everything it needs, picklable."""

    model: Model  # the model fitted (with its substitute priors), which the data come from
    dataset: Dataset  # the data set whose shapes, covariates and labels every simulation keeps
    backend: str
    engine: str
    method: str
    options: tuple[tuple[str, str], ...]
    settings: SamplerSettings  # its seed is the run's; each simulation derives its own
    column: str  # the backend's label in the results (``stan``, ``stan:pystan``, ``numpyro/advi``)
    simulation: int
    seed: int
    ladder: tuple[int, ...]  # the values of L at which ranks are computed
    #: The column's record before anything ran (the request's identity); each fit's record starts from it.
    record: FitRecord
    #: The rungs of the remedies ladder this fit may climb (``studies.remedies``); () for none.
    remedies: tuple[str, ...] = ()


def simulation_rng(seed: int, simulation: int) -> np.random.Generator:
    """The generator that draws simulation ``simulation``'s parameters and data."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(simulation, 0)))


def sampler_seed(seed: int, simulation: int) -> int:
    """The sampler's seed for simulation ``simulation`` (every backend gets the same)."""
    return int(np.random.SeedSequence(seed, spawn_key=(simulation, 1)).generate_state(1)[0] % 2**31)


def _ranks_rng(seed: int, simulation: int, column: str, L: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(simulation, 2, zlib.crc32(column.encode()), L)))


def scalar_values(model: Model, dataset: Dataset, values: Mapping[str, np.ndarray], lead: int) -> dict[str, np.ndarray]:
    """Every scalar element of the parameters and deterministics, keyed ``mu``, ``theta[Choate]``
    (``name[a,b]`` for two dims), each with the ``lead`` leading axes of ``values``."""
    out = {}
    for name in model.output_names:
        dims = getattr(model[name], "dims", ())
        value = np.asarray(values[name], dtype=float)
        if not dims:
            out[name] = value
            continue
        for index in np.ndindex(*value.shape[lead:]):
            labels = ",".join(str(dataset.coords[dim][i]) for dim, i in zip(dims, index))
            out[f"{name}[{labels}]"] = value[(Ellipsis, *index)]
    return out


@dataclass(frozen=True)
class SbcFit:
    """What one SBC task returns and its ledger line keeps: the fit's :class:`FitRecord` (the
    record every study's fit has: diagnostics and flags from ``inference.diagnostics``,
    timings, engine; no per-quantity summaries, which SBC does not need and which would cost
    more than its ranks), its ranks at each L, the true values, the task's own times, and the
    remedies ladder it climbed (None when it climbed none)."""

    record: FitRecord
    ranks: dict[str, dict[str, int]]
    truth: dict[str, float]
    #: Seconds compiling in this task (0 on a warm worker), the fit's, and the whole task's.
    compile_seconds: float
    fit_seconds: float
    task_seconds: float
    ladder: LadderSummary | None = None

    @property
    def sampler_seconds(self) -> float:
        """Warm-up and sampling, as the engine reports them: of the rung whose ranks these are."""
        t = self.record.timings
        return t.warmup_seconds + t.sampling_seconds if t is not None else 0.0

    @property
    def climbed(self) -> bool:
        return self.ladder is not None and self.ladder.climbed

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record.to_json(), "ranks": self.ranks, "truth": self.truth,
                "compile_seconds": self.compile_seconds, "fit_seconds": self.fit_seconds,
                "task_seconds": self.task_seconds, "ladder": self.ladder.to_json() if self.ladder else None}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> SbcFit:
        ladder = LadderSummary.from_json(values["ladder"]) if values.get("ladder") else None
        return cls(FitRecord.from_json(values["record"]), values["ranks"], values["truth"], values["compile_seconds"],
                   values["fit_seconds"], values["task_seconds"], ladder)


def run_simulation(job: SbcJob) -> dict[str, Any]:
    """Simulate, fit and rank one simulation on one backend (on a worker of the grid): an
    :class:`SbcFit` as JSON.

    Where the fit is flagged and ``job.remedies`` allow, the fit climbs the remedies ladder
    (``studies.remedies.climb``: higher target acceptance for divergences; longer chains for
    R-hat or ESS, where asked) with the same data and seed, and the ranks are those of the rung
    the ladder chooses, as ``compare`` chooses it; the rule never sees the true values."""
    from polyppl.inference.draws import stopwatch

    with stopwatch() as task_clock:
        simulated = simulate(job.model, job.dataset, simulation_rng(job.seed, job.simulation))
        compiled, compile_seconds = compiled_for(job.backend, job.engine, job.model, simulated.dataset, dict(job.options))
        compile_seconds += prepare_convergence()  # Numba's compile (or cache load), once per process
        truth = scalar_values(job.model, simulated.dataset, simulated.truth, 0)
        truth[LOG_LIKELIHOOD] = log_likelihood(job.model, simulated.dataset, simulated.truth)
        base = replace(job.record, seed=sampler_seed(job.seed, job.simulation),
                       data_source=f"simulation {job.simulation} of seed {job.seed}")
        settings = replace(job.settings, seed=base.seed)
        fit_seconds = 0.0

        def attempt(rung: Rung) -> tuple[FitRecord, dict[str, dict[str, int]]]:
            nonlocal fit_seconds
            with stopwatch() as fit_clock:
                draws = compiled.run(job.method, rung.settings)
            fit_seconds += fit_clock()
            return _rank(job, simulated, draws, truth, rung.settings, replace(base, settings=rung.settings.as_dict()))

        problem = Problem(job.model, simulated.dataset, Labels(base.model, base.scenario, base.parametrization))
        if job.remedies and not isinstance(settings, SamplerSettings):
            raise ValueError("the remedies ladder is for NUTS fits")
        if job.remedies:
            ladder = climb(problem, settings, attempt, lambda result: {job.column: result[0]},
                           lambda result: "flagged" if result[0].diagnostics.flags else "clean", job.remedies)
            (record, ranks), summary = ladder.final.result, ladder.summary()
            summary = summary if summary.climbed else None
        else:
            (record, ranks), summary = attempt(Rung(problem, settings, settings, base.parametrization)), None
    return SbcFit(record, ranks, {q: float(v) for q, v in truth.items()}, compile_seconds + record.timings.compile_seconds,
                  fit_seconds, task_clock(), summary).to_json()


def _rank(job: SbcJob, simulated, draws, truth: Mapping[str, Any], settings: SamplerSettings,
          base: FitRecord) -> tuple[FitRecord, dict[str, dict[str, int]]]:
    """One fit's record (the run diagnostics' flags, from R-hat and ESS of every test quantity
    computed at once by Numba) and the ranks of the true values at each L of the job's ladder."""
    posterior = scalar_values(job.model, simulated.dataset, draws.posterior, 2)
    params = {p.name: draws.posterior[p.name] for p in job.model.params}
    posterior[LOG_LIKELIHOOD] = log_likelihood(job.model, simulated.dataset, params)
    names = list(posterior)
    stacked = np.stack([posterior[q] for q in names], axis=-1)
    chains, n_draws = stacked.shape[:2]
    ess_bulk, ess_tail, rhat = convergence(stacked)
    constant = np.ptp(stacked.reshape(chains * n_draws, -1), axis=0) == 0
    rhat = np.where(constant, 1.0, rhat)  # as polyppl's summaries report a constant quantity
    flat = stacked.reshape(chains * n_draws, -1)
    index = np.arange(chains * n_draws, dtype=float).reshape(chains, n_draws)
    true_values = np.array([truth[q] for q in names], dtype=float)
    ranks: dict[str, dict[str, int]] = {}
    for L in job.ladder:
        if L > chains * n_draws:
            continue
        rng = _ranks_rng(job.seed, job.simulation, job.column, L)
        kept = flat[sbc_stats.thin_to(index, L, rng).astype(np.int64)]
        ranks[str(L)] = dict(zip(names, sbc_stats.column_ranks(true_values, kept, rng).tolist()))
    record = replace(base, engine=draws.engine, timings=draws.timings)
    if draws.approximation is not None:  # no chains to judge: what the approximation's fit reports
        a = draws.approximation
        return replace(record, approximation=ApproximationSummary(a.family, a.iterations, a.gradient_evaluations,
                                                                  a.converged, int(np.size(a.log_p)), a.notes)), ranks
    diagnostics = diagnose(float(np.nanmax(rhat)), float(np.min(ess_bulk)), float(np.min(ess_tail)), draws.stats,
                           settings.max_tree_depth, draws.timings.sampling_seconds)
    return replace(record, diagnostics=diagnostics), ranks


# --------------------------------------------------------------------------- substitutes

_SUBSTITUTE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*~\s*([A-Za-z_]+)\s*(?:\((.*)\))?\s*$")


def _family_key(name: str) -> str:
    return name.replace("_", "").lower()


def parse_substitute(text: str) -> tuple[str, Dist | None]:
    """``NAME ~ FAMILY(ARG, ...)`` (a proper prior for parameter NAME, numbers as arguments,
    in the family's order) or ``NAME ~ none`` (drop factor NAME), e.g. ``a ~ gamma(2, 0.1)``,
    ``sigma ~ HalfNormal(10)``, ``hyperprior ~ none``. Family names as in the spec, in any
    case, with or without underscores."""
    found = _SUBSTITUTE.match(text)
    if not found:
        raise UserError(f"--substitute {text!r}: expected NAME ~ FAMILY(ARG, ...) or NAME ~ none, "
                        "e.g. 'a ~ gamma(2, 0.1)' or 'hyperprior ~ none'")
    name, family_text, args_text = found.groups()
    if family_text.lower() == "none":
        if args_text is not None:
            raise UserError(f"--substitute {text!r}: 'none' (drop a factor) takes no arguments")
        return name, None
    families = {_family_key(f): f for f in FAMILIES}
    family = families.get(_family_key(family_text))
    if family is None:
        raise UserError(f"--substitute {text!r}: unknown family {family_text!r}{did_you_mean(family_text, FAMILIES)}; "
                        f"expected one of: {', '.join(FAMILIES)}")
    params = FAMILIES[family].params
    parts = [p.strip() for p in (args_text or "").split(",") if p.strip()]
    if len(parts) != len(params):
        raise UserError(f"--substitute {text!r}: {family} takes {len(params)} arguments ({', '.join(params)}), "
                        f"got {len(parts)}")
    values = []
    for param, part in zip(params, parts):
        try:
            values.append(float(part))
        except ValueError:
            raise UserError(f"--substitute {text!r}: argument {param} of {family} must be a number, got {part!r}") from None
    constructor = getattr(spec, "".join(part.capitalize() for part in family.split("_")))  # half_normal: HalfNormal
    try:
        return name, constructor(*values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"--substitute {text!r}: {exc}") from None


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class SbcColumn:
    """One backend (with its engine) and method of an SBC run, and its results."""

    label: str  # the key in ``backends``: the column (``stan``, ``stan:pystan``), ``/method`` unless NUTS
    backend: str
    engine: str
    method: str
    counts: dict[str, int]  # requested, ok, error, timeout, crashed, divergent, unconverged, ess_below_L
    results: dict[str, sbc_stats.SbcQuantityResult]  # by quantity; empty without finished fits
    failures: list[dict[str, Any]]  # simulation, status, error of each fit without ranks
    timing: dict[str, float | int | None]
    engines_seen: list[str] = field(default_factory=list)
    #: Fits whose ranks came from a rung of the remedies ladder, by rung (``at target 0.99``).
    remedied: dict[str, int] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``calibrated``, ``miscalibrated`` (some quantity is) or ``no verdict`` (no ranks)."""
        if not self.results:
            return "no verdict"
        return "miscalibrated" if any(r.verdict == "miscalibrated" for r in self.results.values()) else "calibrated"

    @property
    def ranks(self) -> dict[str, list[int]]:
        return {q: list(r.ranks) for q, r in self.results.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "engine": self.engine, "method": self.method, "engines_seen": self.engines_seen,
            "verdict": self.verdict, "fits": self.counts, "remedied": self.remedied, "failures": self.failures,
            "timing": self.timing,
            "parameters": {q: r.as_dict() for q, r in self.results.items()},
        }


@dataclass(frozen=True)
class SbcRun:
    """A finished SBC run: every backend's ranks and verdicts, and how the grid ran."""

    problem: Problem
    model: Model  # the model fitted (with substitutes)
    substitutes: dict[str, str | None]
    simulations: int
    seed: int
    settings: SamplerSettings
    L: int | None
    family_alpha: float
    columns: dict[str, SbcColumn]
    grid: dict[str, Any]
    ledger: Path
    #: The rungs a flagged NUTS fit could climb (empty: ``--remedies none``).
    remedies: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.columns.values()}
        if "miscalibrated" in verdicts:
            return "miscalibrated"
        return "no verdict" if "no verdict" in verdicts else "calibrated"

    @property
    def exit_code(self) -> int:
        """0 calibrated, 1 some backend miscalibrated, 3 some backend without ranks."""
        return {"calibrated": 0, "miscalibrated": 1}.get(self.verdict, 3)

    def to_json(self) -> dict[str, Any]:
        labels = self.problem.labels
        return {
            "model": labels.model, "scenario": labels.scenario, "parametrization": labels.parametrization,
            "data_source": self.problem.dataset.source, "simulations": self.simulations, "seed": self.seed,
            "settings": self.settings.as_dict(), "substitutes": self.substitutes, "L": self.L,
            "remedies": list(self.remedies),
            "test": sbc_stats.METHOD, "family_alpha": self.family_alpha, "band_level": sbc_stats.BAND_LEVEL,
            "verdict": self.verdict, "grid": self.grid, "ledger": str(self.ledger),
            "backends": {label: column.to_json() for label, column in self.columns.items()},
            # What `polyppl report` needs to write the report again without the model's file.
            "problem": {"model": model_to_json(self.problem.model), "dataset": dataset_to_json(self.problem.dataset),
                        "fitted": model_to_json(self.model)},
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any], path: Path) -> SbcRun:
        """A run from its JSON (``save_json_result``), its verdicts judged again from the ranks
        saved; the ledger is taken to lie beside ``path``."""
        problem = Problem(model_from_json(saved["problem"]["model"]), dataset_from_json(saved["problem"]["dataset"]),
                          Labels(saved["model"], saved["scenario"], saved.get("parametrization")))
        L, alpha = saved["L"], saved["family_alpha"]
        columns = {}
        for label, c in saved["backends"].items():
            ranks = {q: p["ranks"] for q, p in c["parameters"].items()}
            results = sbc_stats.judge(ranks, L, alpha) if ranks and L else {}
            columns[label] = SbcColumn(label, c["backend"], c["engine"], c["method"], c["fits"], results, c["failures"],
                                       c["timing"], c.get("engines_seen", []), c.get("remedied", {}))
        return cls(problem, model_from_json(saved["problem"]["fitted"]), saved["substitutes"], saved["simulations"],
                   saved["seed"], SamplerSettings.from_dict(saved["settings"]), L, alpha, columns, saved["grid"],
                   path.with_name(path.name.replace(".json", "-ledger.jsonl")), tuple(saved.get("remedies", ())))


def sbc_stem(out: Path, problem: Problem) -> Path:
    """``OUT/<model>-<scenario>-sbc``: the ledger, JSON and report are this plus a suffix."""
    return Path(out) / f"{problem.labels.model}-{problem.labels.scenario}-sbc"


@dataclass(frozen=True)
class SbcPlan:
    """What an SBC run will do, before anything runs: the model fitted, the columns, one
    task per (simulation, column), and the ledger."""

    problem: Problem
    fitted: Model
    substitutes: dict[str, Dist | None]
    simulations: int
    seed: int
    settings: SamplerSettings
    columns: list[tuple[str, FitRequest]]
    tasks: list[GridTask]
    ledger: Path
    remedies: tuple[str, ...] = ()


def plan_sbc(
    model: str | Problem,
    backends: Sequence[str] | None = None,
    methods: Sequence[str] = ("nuts",),
    simulations: int = DEFAULT_SIMULATIONS,
    seed: int = 1,
    *,
    scenario: str | None = None,
    data: str | Path | None = None,
    parametrization: str | None = None,
    settings: SamplerSettings = DEFAULT_SETTINGS,
    substitutes: Mapping[str, Dist | None] | None = None,
    engines: Mapping[str, str] | None = None,
    out: str | Path = DEFAULT_OUT,
    remedies: Sequence[str] | None = None,
) -> SbcPlan:
    """Check the input and lay out the tasks of :func:`run_sbc` (same arguments); bad input
    (an improper prior, a backend that cannot run the method) fails here, naming it.
    ``remedies``: the rungs an SBC fit climbs when flagged (None: :data:`SBC_REMEDIES`;
    ``("none",)``: none); the other parametrization is not one of them."""
    remedies = sbc_remedies(remedies)
    if not isinstance(simulations, int) or simulations < 1:
        raise UserError(f"simulations must be a positive whole number, got {simulations!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise UserError(f"seed must be a whole number in 0..2^31-1, got {seed!r}")
    problem = model if isinstance(model, Problem) else resolve(model, scenario, data, parametrization)
    substitutes = dict(substitutes or {})
    check_simulable(problem.model)  # a Stan program's observed variables must be ones it can be given
    fitted = substitute(problem.model.density_model(), substitutes)
    if substitutes and fitted.source is not None:
        # The user's program has the priors that were substituted: Stan runs the program
        # generated from the model with substitutes, as PyMC and NumPyro run that model.
        fitted = replace(fitted, source=None)
    simulate(fitted, problem.dataset, simulation_rng(seed, 0))  # refuses improper priors here, naming the nodes
    settings = replace(settings, seed=seed).for_model(fitted)
    ladder = tuple(L for L in sbc_stats.L_LADDER if L <= min(sbc_stats.DEFAULT_L, settings.chains * settings.draws))
    if not ladder:
        raise UserError(f"{settings.chains} chains x {settings.draws} draws leave fewer than "
                        f"{sbc_stats.L_LADDER[0]} draws to rank a true value among; ask for more draws")
    for method in methods:
        get_method(method)
    engines = dict(engines or {})
    columns = []
    for column in parse_columns(list(backends) if backends else None):
        backend = get_backend(column.backend)
        engine = backend.engine(column.engine or engines.get(column.backend))
        chains = replace(settings, chain_method=engine.single_core_chains) if settings.chain_method == "auto" else settings
        for method in methods:
            request = FitRequest.make(fitted, problem.dataset, column.backend, engine.name, method, chains)
            label = column.label if method == "nuts" else f"{column.label}/{method}"
            columns.append((label, request))
    if len({label for label, _ in columns}) != len(columns):
        raise UserError("a backend or method appears twice")
    records = {label: base_record(replace(request, labels=problem.labels)) for label, request in columns}
    tasks = []
    for simulation in range(simulations):
        for label, request in columns:
            rungs = remedies if request.method == "nuts" else ()
            job = SbcJob(fitted, problem.dataset, request.backend, request.engine, request.method, request.options,
                         request.settings, label, simulation, seed, ladder, records[label], rungs)
            config = content_hash([LEDGER_FORMAT, request.hash_parts(), list(ladder), list(rungs)])
            tasks.append(GridTask(FitKey(problem.labels.model, label, request.method, simulation, seed),
                                  "polyppl.studies.sbc:run_simulation", job, config))
    stem = sbc_stem(Path(out), problem)
    return SbcPlan(problem, fitted, substitutes, simulations, seed, settings, columns, tasks,
                   stem.with_name(stem.name + "-ledger.jsonl"), remedies)


def sbc_remedies(names: Sequence[str] | None) -> tuple[str, ...]:
    """The rungs an SBC fit may climb: :data:`SBC_REMEDIES` for None, else as asked
    (``studies.remedies.check_remedies``), the other parametrization refused (its quantities
    are not the simulated model's)."""
    rungs = SBC_REMEDIES if names is None else check_remedies(names)
    if "parametrization" in rungs:
        raise UserError("--remedies parametrization does not apply to SBC: the other parametrization's quantities are "
                        "not those simulated; use target and draws")
    return rungs


def run_sbc(
    model: str | Problem,
    backends: Sequence[str] | None = None,
    methods: Sequence[str] = ("nuts",),
    simulations: int = DEFAULT_SIMULATIONS,
    seed: int = 1,
    *,
    scenario: str | None = None,
    data: str | Path | None = None,
    parametrization: str | None = None,
    settings: SamplerSettings = DEFAULT_SETTINGS,
    substitutes: Mapping[str, Dist | None] | None = None,
    engines: Mapping[str, str] | None = None,
    out: str | Path = DEFAULT_OUT,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    family_alpha: float = sbc_stats.FAMILY_ALPHA,
    remedies: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> SbcRun:
    """SBC of ``model`` (a built-in name, ``FILE.py:NAME`` or a Problem) on ``backends``
    (columns such as ``stan:pystan``; default all) and ``methods``, ``simulations`` per
    backend and method, on the grid (``scheduler``: None for a local Dask cluster of
    ``workers`` processes, ``tcp://HOST:PORT`` for an existing one, ``in-process``).

    Improper priors and factors are refused with a message naming each node, unless
    ``substitutes`` states a proper prior for each such parameter and drops each factor
    (``{"a": s.Gamma(2, 0.1), "hyperprior": None}``); the substituted model is then the one
    simulated and fitted. ``engines`` picks the engine of a backend named without one
    (``{"stan": "pystan"}``). The ledger, ``OUT/<model>-<scenario>-sbc-ledger.jsonl``, is
    read first and appended to as fits finish. A script that starts a local cluster must
    guard its entry point (``if __name__ == "__main__":``): Dask starts workers by spawn.
    ``remedies``: the rungs a flagged NUTS fit climbs (:func:`sbc_remedies`; docs/sbc.md)."""
    plan = plan_sbc(model, backends, methods, simulations, seed, scenario=scenario, data=data,
                    parametrization=parametrization, settings=settings, substitutes=substitutes, engines=engines, out=out,
                    remedies=remedies)
    if plan.fitted.source is not None and any(request.backend in LOWERED_BACKENDS for _, request in plan.columns):
        # A Stan program beside the spec lowered from it: never calibrate a wrong translation (a
        # mismatch would show as Stan's miscalibration). Raises before any fit.
        if progress:
            progress("checking the translation: log density and gradient against Stan's own ...")
        checked = check_translation(plan.problem, stan_engine=(engines or {}).get("stan"))
        if progress:
            progress(checked.summary())
    if progress:
        progress(f"SBC of {plan.problem.describe()}: {simulations} simulations x {len(plan.columns)} backends "
                 f"({', '.join(label for label, _ in plan.columns)}), seed {seed}; ledger {plan.ledger}")
    grid = run_grid(plan.tasks, ledger=plan.ledger, scheduler=scheduler, workers=workers, timeout=timeout,
                    retries=retries, progress=progress)
    return summarize(plan, grid, family_alpha)


def choose_run_L(ess_minima: Sequence[float], ladder: Sequence[int]) -> int | None:
    """The run's L: the largest of ``ladder`` that the smallest bulk ESS of at least
    :data:`L_SHARE` of the fits reaches (the ``1 - L_SHARE`` quantile of the fits' smallest
    ESS, as ``sbc_stats.choose_L`` reads a pilot); the smallest rung if even that falls
    short; None without fits."""
    values = sorted(e if math.isfinite(e) else 0.0 for e in ess_minima)
    if not values:
        return None
    quantile = values[int(math.floor((1 - L_SHARE) * len(values)))]
    try:
        return sbc_stats.choose_L([quantile], default=max(ladder))
    except ValueError:
        return min(ladder)


def fit_of(task: GridTask, entry: Mapping[str, Any]) -> SbcFit | None:
    """The :class:`SbcFit` of a finished task's ledger entry; None for one that ended in
    error, timeout or crash (the entry's status and error say which)."""
    return SbcFit.from_json(entry["result"]) if entry["status"] == "ok" else None


def summarize(plan: SbcPlan, grid: GridRun, family_alpha: float = sbc_stats.FAMILY_ALPHA) -> SbcRun:
    """Verdicts, counts and timings from the grid's entries."""
    columns, simulations = plan.columns, plan.simulations
    by_label: dict[str, list[tuple[int, dict[str, Any], SbcFit | None]]] = {label: [] for label, _ in columns}
    for task in plan.tasks:
        if task.key in grid.entries:
            entry = grid.entries[task.key]
            by_label[task.key.backend].append((int(task.key.simulation), entry, fit_of(task, entry)))
    ess_minima = [f.record.diagnostics.ess_bulk_min for rows in by_label.values() for _, _, f in rows
                  if f is not None and f.record.diagnostics is not None]
    L = choose_run_L(ess_minima, plan.tasks[0].argument.ladder)
    out = {}
    for label, request in columns:
        rows = sorted(by_label[label], key=lambda row: row[0])
        ok = [f for _, _, f in rows if f is not None]
        counts = {"requested": simulations, **{status: 0 for status in ("ok", "error", "timeout", "crashed")}}
        for _, entry, _ in rows:
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        # Fits with draws keep their ranks; how many of them the run diagnostics flag (their
        # record's flags: R-hat, bulk or tail ESS, divergences, ...), and per flag.
        judged = [f.record.diagnostics for f in ok if f.record.diagnostics is not None]
        counts["divergent"] = sum(1 for d in judged if d.divergences > 0)
        counts["unconverged"] = sum(1 for d in judged if convergence_failures(d.flags))
        for flag in FLAG_MEANINGS:
            counts[f"flag_{flag}"] = sum(1 for d in judged if flag in d.flags)
        counts["ess_below_L"] = sbc_stats.count_below([d.ess_bulk_min for d in judged], L) if L and judged else 0
        # The remedies ladder: fits that climbed, and the rung whose ranks they gave.
        counts["remedied"] = sum(1 for f in ok if f.climbed)
        results = {}
        if ok and L is not None:
            quantities = list(ok[0].ranks[str(L)])
            results = sbc_stats.judge({q: [f.ranks[str(L)][q] for f in ok] for q in quantities}, L, family_alpha)
        failures = [{"simulation": simulation, "status": entry["status"], "error": entry.get("error")}
                    for simulation, entry, f in rows if f is None]
        out[label] = SbcColumn(label, request.backend, request.engine, request.method, counts, results, failures,
                               _timing([(entry, f) for _, entry, f in rows if f is not None]),
                               sorted({f.record.engine for f in ok}), _rungs(ok))
    # The grid's facts are the whole grid's (which may have run other plans' tasks too).
    ran = [SbcFit.from_json(entry["result"]) for entry in grid.entries.values() if entry["status"] == "ok"]
    sampler = sum(f.sampler_seconds for f in ran)
    compiles = sum(f.compile_seconds for f in ran)
    per_fit = sum(f.task_seconds for f in ran) - sampler - compiles
    cpu = sum(e.get("cpu_seconds") or 0.0 for e in grid.entries.values())
    whole_run = grid.reused == 0 and grid.ran and sampler > 0
    grid_facts = {
        "where": grid.where, "workers": grid.workers, "fits_run": grid.ran, "fits_reused": grid.reused,
        "ledger_lines_unreadable": grid.unreadable_lines, "workers_lost": list(grid.workers_lost),
        "wall_seconds": grid.wall_seconds,
        "fits_per_minute": 60 * grid.ran / grid.wall_seconds if grid.ran and grid.wall_seconds > 0 else None,
        # CPU seconds of every task (its process and finished children) over the workers: about
        # the wall time the tasks would take on a quiet machine with that many cores.
        "cpu_seconds": cpu,
        "cpu_seconds_per_worker": cpu / grid.workers if grid.workers else None,
        # Everything the workers spent beyond sampling (start-up, imports, compiles, simulation,
        # ranks, scheduling, idle cores), against the sampling: only for a run that ran every fit.
        "overhead_share": (grid.wall_seconds * grid.workers - sampler) / sampler if whole_run else None,
        # ... of which each worker's compiles, and the per-fit work around the sampler (the rest is
        # start-up, imports, scheduling and workers idle at the end).
        "compile_share": compiles / sampler if whole_run else None,
        "per_fit_overhead_share": per_fit / sampler if whole_run else None,
    }
    return SbcRun(plan.problem, plan.fitted, {k: _describe(v) for k, v in plan.substitutes.items()}, simulations,
                  plan.seed, plan.settings, L, family_alpha, out, grid_facts, plan.ledger, plan.remedies)


def _describe(dist: Dist | None) -> str | None:
    """``gamma(alpha=2.0, beta=0.1)``; None (a dropped factor) stays None."""
    if dist is None:
        return None
    args = ", ".join(f"{name}={getattr(expr, 'value', expr)}" for name, expr in dist.args)
    return f"{dist.family}({args})"


def _timing(fits: Sequence[tuple[Mapping[str, Any], SbcFit]]) -> dict[str, float | int | None]:
    """Per-fit times of one backend's finished fits (ledger entry and fit): the sampler's own
    time, compiles, the rest of each task (simulation, data hand-over, the call around the
    sampler, diagnostics, ranks; a remedies ladder's earlier rungs), and CPU seconds."""
    if not fits:
        return {"fits": 0}
    n = len(fits)
    cpu = sum(entry.get("cpu_seconds") or 0.0 for entry, _ in fits)
    sampler = sum(f.sampler_seconds for _, f in fits)
    compile_seconds = sum(f.compile_seconds for _, f in fits)
    task = sum(f.task_seconds for _, f in fits)
    overhead = task - sampler - compile_seconds
    return {
        "fits": n,
        "sampler_seconds_per_fit": sampler / n,
        "task_seconds_per_fit": task / n,
        "compile_seconds_total": compile_seconds,
        "overhead_seconds_per_fit": overhead / n,
        # The per-fit overhead (compiles excluded) against the sampler's own time.
        "overhead_share": overhead / sampler if sampler > 0 else None,
        "fits_per_worker_minute": 60 * n / task if task > 0 else None,
        "cpu_seconds_per_fit": cpu / n,
    }


def _rungs(fits: Sequence[SbcFit]) -> dict[str, int]:
    """How many fits' ranks came from each rung of the remedies ladder, by the rung's words
    (``at target 0.99``); the fits that climbed none are not counted."""
    counts: dict[str, int] = {}
    for f in fits:
        if f.climbed:
            rung = f.ladder.rungs[f.ladder.chosen].rung
            counts[rung] = counts.get(rung, 0) + 1
    return dict(sorted(counts.items()))


def save_json_result(run: SbcRun, path: Path | None = None) -> Path:
    """The run as JSON (default ``OUT/<model>-<scenario>-sbc.json`` beside the ledger)."""
    from polyppl.inference.idata import save_json

    path = Path(path) if path is not None else run.ledger.with_name(run.ledger.name.replace("-ledger.jsonl", ".json"))
    save_json(run.to_json(), path)
    return path


def load_sbc_run(out_dir: str | Path, model: str | None = None, scenario: str | None = None) -> SbcRun:
    """A finished SBC run from ``OUT_DIR`` (its ``<model>-<scenario>-sbc.json``; pick one with
    ``model``/``scenario`` when the folder holds several), without fitting."""
    wanted = " ".join(f"--{k} {v}" for k, v in (("model", model), ("scenario", scenario)) if v)
    path, saved = find_saved(
        out_dir, "-sbc.json", "SBC run", "polyppl sbc",
        lambda saved: ((model is None or saved.get("model") == model)
                       and (scenario is None or saved.get("scenario") == scenario)),
        wanted, lambda s: f"--model {s['model']} --scenario {s['scenario']}")
    if "problem" not in saved:
        raise UserError(f"{path} was written by an older polyppl; run the SBC again (its ledger's fits are reused)")
    return SbcRun.from_json(saved, path)


__all__ = [
    "DEFAULT_SETTINGS", "DEFAULT_SIMULATIONS", "LOG_LIKELIHOOD", "SBC_REMEDIES", "SbcColumn", "SbcFit", "SbcJob",
    "SbcPlan", "SbcRun", "choose_run_L", "fit_of", "load_sbc_run", "parse_substitute", "plan_sbc", "run_sbc", "sbc_remedies",
    "summarize", "run_simulation", "sampler_seed", "save_json_result", "scalar_values",
    "simulation_rng",
]
