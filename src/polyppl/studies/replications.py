"""Repeated-seed calibration of ``compare``: the same comparison run again and again with
other sampler seeds, on the grid, to see how often its verdict says "disagree".

One comparison's verdict is a test at a family-wise false-alarm rate (1% by default): run
on samplers that are right, it says "disagree" at most that often. A single "disagree" is
therefore weak evidence on its own, and a single "agree" says nothing about how often the
backends would be told apart. Replications answer both: if the backends sample the same
posterior, the number of disagreeing replications is at most Binomial(N, family rate); many
more than that is a real difference, and the quantities and pairs flagged again and again
say where it lies.

Each replication is one task of the grid (``execution.grid``): its worker fits every column
with the replication's seed (compiled once per worker, the data bound as SBC's fits do),
tests agreement exactly as ``compare`` does (``studies.agreement``: every quantity, four
statistics, Holm, the practical floor; unconverged columns make the replication
inconclusive) and records its verdict and flagged tests in a resumable ledger.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polyppl.backends import get_backend, parse_columns
from polyppl.errors import UserError
from polyppl.execution.fit import base_record
from polyppl.execution.grid import DEFAULT_RETRIES, FitKey, GridRun, GridTask, compiled_for, run_grid
from polyppl.execution.record import FitRecord
from polyppl.execution.request import FitRequest
from polyppl.inference.diagnostics import convergence_failures, diagnose
from polyppl.inference.methods import SamplerSettings
from polyppl.models import Problem
from polyppl.spec import Dataset, Model
from polyppl.spec.serialize import content_hash
from polyppl.studies.agreement import FAMILY_ALPHA, PRACTICAL_FLOOR, holm, pair_tests

DEFAULT_REPLICATIONS = 30
#: The replications' own false-alarm rate: "disagree" when so many replications disagree
#: that Binomial(judged, family rate) reaches that count with a smaller probability.
REPLICATIONS_ALPHA = 0.01
#: Bumped when what a replication records changes, so that older ledger lines are not reused
#: (2: a :class:`ReplicationResult`, each column's :class:`FitRecord` inside).
LEDGER_FORMAT = 2
VERDICTS = ("agree", "disagree", "inconclusive")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReplicationJob:
    """Everything one replication's task needs (picklable): the model and data, each column
    as (label, backend, engine, options, its record before anything ran), the settings, and
    which replication of which seed."""

    model: Model
    dataset: Dataset
    columns: tuple[tuple[str, str, str, tuple[tuple[str, str], ...], FitRecord], ...]
    settings: SamplerSettings
    family_alpha: float
    floor: float
    replication: int
    seed: int


def replication_seed(seed: int, replication: int) -> int:
    """The sampler seed of replication ``replication`` (every column gets the same, as in
    ``compare``), whatever runs it and in what order."""
    return int(np.random.SeedSequence(seed, spawn_key=(replication,)).generate_state(1)[0] % 2**31)


@dataclass(frozen=True)
class ReplicationResult:
    """What one replication's task returns and its ledger line keeps: the verdict, the number
    of tests, every flagged test (quantity, backends, statistic, gap, unadjusted p-value),
    and each column's :class:`FitRecord` (summaries of every quantity, the run diagnostics'
    flags, timings), with the seconds it spent compiling in this task."""

    verdict: str
    sampler_seed: int
    tests: int
    flagged: tuple[dict[str, Any], ...]
    records: dict[str, FitRecord]
    compile_seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "sampler_seed": self.sampler_seed, "tests": self.tests,
                "flagged": list(self.flagged), "records": {k: r.to_json() for k, r in self.records.items()},
                "compile_seconds": self.compile_seconds}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ReplicationResult:
        return cls(values["verdict"], values["sampler_seed"], values["tests"], tuple(values["flagged"]),
                   {k: FitRecord.from_json(r) for k, r in values["records"].items()}, values["compile_seconds"])


def run_replication(job: ReplicationJob) -> dict[str, Any]:
    """Fit every column with the replication's seed and test agreement as ``compare`` does
    (on a worker of the grid): a :class:`ReplicationResult` as JSON. Each column's record has
    the run diagnostics' flags (``inference.diagnostics``); a column they call unconverged
    makes the replication inconclusive unless another test flags a difference."""
    from polyppl.studies.compare import quantities

    settings = replace(job.settings, seed=replication_seed(job.seed, job.replication))
    sources, records, compiles, unconverged = {}, {}, {}, []
    for label, backend, engine, options, base in job.columns:
        compiled, compile_seconds = compiled_for(backend, engine, job.model, job.dataset, dict(options))
        draws = compiled.run("nuts", settings)
        sources[label] = quantities(job.model, job.dataset, {n: draws.posterior[n] for n in job.model.output_names})
        summaries = {name: q.summary for name, q in sources[label].items() if not q.is_probability}
        diagnostics = diagnose(max(s.rhat for s in summaries.values()), min(s.ess_bulk for s in summaries.values()),
                               min(s.ess_tail for s in summaries.values()), draws.stats, settings.max_tree_depth,
                               draws.timings.sampling_seconds, draws.warmup_gradient_evaluations)
        records[label] = replace(base, seed=settings.seed, settings=settings.as_dict(), engine=draws.engine,
                                 timings=draws.timings, diagnostics=diagnostics, posterior=summaries)
        compiles[label] = compile_seconds + draws.timings.compile_seconds
        if convergence_failures(diagnostics.flags):
            unconverged.append(label)
    labels = list(sources)
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    tests = holm(pair_tests(sources, job.floor, pairs), job.family_alpha)
    flagged = [t for t in tests if not t.agree and not set(t.backends) & set(unconverged)]
    verdict = "disagree" if flagged else "inconclusive" if unconverged else "agree"
    return ReplicationResult(
        verdict, settings.seed, len(tests),
        tuple({"quantity": t.quantity, "backends": list(t.backends), "statistic": t.statistic, "gap": t.gap,
               "p_value": t.p_value} for t in flagged),
        records, compiles).to_json()


# --------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class ReplicationPlan:
    """A run's replications as grid tasks, and what they share."""

    problem: Problem
    labels: tuple[str, ...]
    settings: SamplerSettings
    replications: int
    seed: int
    family_alpha: float
    tasks: list[GridTask]
    ledger: Path


def plan_replications(problem: Problem, backends: Sequence[str] | None = None, replications: int = DEFAULT_REPLICATIONS,
                      seed: int = 1, settings: SamplerSettings | None = None, engines: Mapping[str, str] | None = None,
                      family_alpha: float = FAMILY_ALPHA, floor: float = PRACTICAL_FLOOR,
                      out: str | Path = "polyppl-results") -> ReplicationPlan:
    """Every replication's task, checked before anything runs."""
    if replications < 1:
        raise UserError(f"replications must be at least 1, got {replications}")
    if not 0 < family_alpha < 1:
        raise UserError(f"family_alpha must lie strictly between 0 and 1, got {family_alpha!r}")
    settings = (settings or SamplerSettings()).for_model(problem.model)
    columns = []
    for column in parse_columns(list(backends) if backends else None):
        engine = get_backend(column.backend).engine(column.engine or (engines or {}).get(column.backend))
        # The grid runs one replication per core: each engine keeps its chains on one. (Draws may
    # then differ from `compare`'s at the same seed; each replication is as valid a comparison.)
        chains = replace(settings, chain_method=engine.single_core_chains) if settings.chain_method == "auto" else settings
        request = FitRequest.make(problem.model, problem.dataset, column.backend, engine.name, "nuts", chains)
        columns.append((column.label, request))
    if len(columns) < 2:
        raise UserError("replications compare backends: name at least two columns in --backends")
    if len({label for label, _ in columns}) != len(columns):
        raise UserError("a backend appears twice")
    settings = columns[0][1].settings
    config = content_hash([LEDGER_FORMAT, [r.hash_parts() for _, r in columns], family_alpha, floor])
    described = tuple((label, r.backend, r.engine, r.options, base_record(replace(r, labels=problem.labels)))
                      for label, r in columns)
    labels = tuple(label for label, _ in columns)
    tasks = [GridTask(FitKey(problem.labels.model, ",".join(labels), "nuts", i, seed),
                      "polyppl.studies.replications:run_replication",
                      ReplicationJob(problem.model, problem.dataset, described, settings, family_alpha, floor, i, seed),
                      config)
             for i in range(replications)]
    ledger = Path(out) / f"{problem.labels.model}-{problem.labels.scenario}-replications-ledger.jsonl"
    return ReplicationPlan(problem, labels, settings, replications, seed, family_alpha, tasks, ledger)


@dataclass(frozen=True)
class Replications:
    """How often the comparison disagreed over its replications, and what it flagged."""

    plan: ReplicationPlan
    counts: dict[str, int]  # agree, disagree, inconclusive, and the grid's error / timeout / crashed
    flagged: list[tuple[str, str, str, int]]  # (quantity, pair, statistic, replications that flagged it), most first
    divergent: dict[str, int]  # replications with a divergence, per column
    p_value: float | None  # P(Binomial(judged, family rate) >= disagreeing)
    grid: dict[str, Any]

    @property
    def ledger(self) -> Path:
        return self.plan.ledger

    @property
    def judged(self) -> int:
        return self.counts["agree"] + self.counts["disagree"]

    @property
    def verdict(self) -> str:
        """``disagree``: more replications disagreed than the family-wise rate allows for
        backends that are right (at :data:`REPLICATIONS_ALPHA`); ``agree``: no more than it
        allows; ``inconclusive``: none could be judged."""
        if self.p_value is None:
            return "inconclusive"
        return "disagree" if self.p_value < REPLICATIONS_ALPHA else "agree"

    @property
    def exit_code(self) -> int:
        return {"agree": 0, "disagree": 1, "inconclusive": 3}[self.verdict]

    def rate_interval(self) -> tuple[float, float] | None:
        """Clopper-Pearson 95% interval of the rate of disagreeing replications."""
        from scipy import stats

        n, k = self.judged, self.counts["disagree"]
        if n == 0:
            return None
        low = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
        high = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
        return float(low), float(high)

    def to_json(self) -> dict[str, Any]:
        interval, plan = self.rate_interval(), self.plan
        return {
            "model": plan.problem.labels.model, "scenario": plan.problem.labels.scenario,
            "backends": list(plan.labels), "seed": plan.seed, "settings": plan.settings.as_dict(),
            "family_alpha": plan.family_alpha, "replications_alpha": REPLICATIONS_ALPHA,
            "verdict": self.verdict, "counts": self.counts, "p_value": self.p_value,
            "disagree_rate_interval": list(interval) if interval else None,
            "flagged": [{"quantity": q, "pair": pair, "statistic": s, "replications": n} for q, pair, s, n in self.flagged],
            "divergent_replications": self.divergent, "grid": self.grid, "ledger": str(self.ledger),
        }


def run_replications(
    problem: Problem,
    backends: Sequence[str] | None = None,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = 1,
    *,
    settings: SamplerSettings | None = None,
    engines: Mapping[str, str] | None = None,
    family_alpha: float = FAMILY_ALPHA,
    floor: float = PRACTICAL_FLOOR,
    out: str | Path = "polyppl-results",
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: Progress | None = None,
) -> Replications:
    """``compare``'s agreement test on ``backends`` (at least two columns), ``replications``
    times with other sampler seeds, on the grid (``scheduler``: None for a local Dask cluster
    of ``workers`` processes, ``tcp://HOST:PORT`` for an existing one, ``in-process``). The
    ledger, ``OUT/<model>-<scenario>-replications-ledger.jsonl``, is read first and appended
    to as replications finish: asking for more replications runs only the new ones."""
    plan = plan_replications(problem, backends, replications, seed, settings, engines, family_alpha, floor, out)
    if progress:
        progress(f"Replications of the comparison of {problem.describe()}: {replications} x ({', '.join(plan.labels)}), "
                 f"seed {seed}; ledger {plan.ledger}")
    grid = run_grid(plan.tasks, ledger=plan.ledger, scheduler=scheduler, workers=workers, timeout=timeout,
                    retries=retries, progress=progress)
    return summarize(plan, grid)


def summarize(plan: ReplicationPlan, grid: GridRun) -> Replications:
    from scipy import stats

    counts = dict.fromkeys(VERDICTS, 0)
    flagged: Counter[tuple[str, str, str]] = Counter()
    divergent = dict.fromkeys(plan.labels, 0)
    for task in plan.tasks:
        entry = grid.entries.get(task.key)
        if entry is None:
            continue
        if entry["status"] != "ok":
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
            continue
        result = ReplicationResult.from_json(entry["result"])
        counts[result.verdict] += 1
        for test in result.flagged:
            flagged[test["quantity"], " vs ".join(test["backends"]), test["statistic"]] += 1
        for label, record in result.records.items():
            divergent[label] += record.diagnostics.divergences > 0
    judged = counts["agree"] + counts["disagree"]
    p_value = float(stats.binom.sf(counts["disagree"] - 1, judged, plan.family_alpha)) if judged else None
    ranked = [(q, pair, s, n) for (q, pair, s), n in sorted(flagged.items(), key=lambda item: (-item[1], item[0]))]
    facts = {"where": grid.where, "workers": grid.workers, "replications_run": grid.ran,
             "replications_reused": grid.reused, "wall_seconds": grid.wall_seconds,
             "ledger_lines_unreadable": grid.unreadable_lines, "workers_lost": list(grid.workers_lost)}
    return Replications(plan, counts, ranked, divergent, p_value, facts)


def replications_path(run: Replications) -> Path:
    """Where the summary is saved: ``OUT/<model>-<scenario>-replications.json`` beside the ledger."""
    return run.ledger.with_name(run.ledger.name.replace("-ledger.jsonl", ".json"))


__all__ = [
    "DEFAULT_REPLICATIONS", "REPLICATIONS_ALPHA", "ReplicationJob", "ReplicationPlan", "ReplicationResult", "Replications",
    "plan_replications", "replication_seed", "replications_path", "run_replication",
    "run_replications", "summarize",
]
