"""The choice a comparison is run for: which backend to use on this model.

Among the NUTS columns that finished, converged (R-hat, bulk and tail ESS), had no
divergent transitions and took part in no disagreement, the one that delivered the most
bulk ESS (the minimum over quantities, as in the diagnostics) per second, twice:

* one fit, compile included: ESS / (compile + warm-up + sampling seconds), the cost of
  fitting this model once (a compile read from a cache counts as measured: seconds);
* repeated fits, compile paid once: ESS / (warm-up + sampling seconds), the cost of each
  further fit of the same model (new data of the same shapes, another seed).

The margin (the best rate over the runner-up's) is compared with the noise of one run.
What one run can measure is the sampler's own noise: each chain's bulk ESS on its own
gives a rate per chain, and the spread of those rates gives a standard error of each
backend's rate (relative: sd / mean / sqrt(chains)). The margin is beyond noise when its
logarithm exceeds twice the standard error of the log ratio of the two rates. The
machine's timing noise (load from other jobs, frequency scaling) is not measured by one
run: the load average during the comparison is saved beside it, and a margin within
``TIMING_NOISE`` (a factor measured between whole runs on a shared 2-core machine) is
called within noise whatever the chains say.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from polyppl.execution.record import FitRecord
from polyppl.inference.diagnostics import convergence_failures, ess
from polyppl.studies.agreement import QuantityDraws

#: A margin under this factor is within the run-to-run noise of timings on a shared machine,
#: whatever the chains' spread says: each backend's warm-up and sampling seconds varied by
#: 1.33x (PyMC), 1.43x (NumPyro) and 1.33x (Stan), largest over smallest, between six whole
#: runs of `polyppl compare multilevel-logistic` on the shared 2-core machine of
#: docs/compare.md (2026-12-07, load average 6 to 18).
TIMING_NOISE = 1.5
#: Standard errors of the log ratio a margin must exceed to count as beyond the chains' noise.
NOISE_SE = 2.0
WAYS = {"one_fit": "one fit, compile included", "repeated": "repeated fits, compile paid once"}


@dataclass(frozen=True)
class Rate:
    """One eligible column's bulk ESS per second, both ways, and its relative noise."""

    column: str
    engine: str
    ess_bulk_min: float
    compile_seconds: float
    compile_cached: bool
    run_seconds: float  # warm-up and sampling
    #: Relative standard error of the rate from the spread of per-chain bulk ESS (None: one chain).
    relative_se: float | None

    @property
    def one_fit(self) -> float:
        return self.ess_bulk_min / max(self.compile_seconds + self.run_seconds, 1e-9)

    @property
    def repeated(self) -> float:
        return self.ess_bulk_min / max(self.run_seconds, 1e-9)

    def name(self) -> str:
        """``numpyro (numpyro-nuts, vectorized chains, float64)``: the column and what ran it."""
        return f"{self.column} ({self.engine.replace(' (', ', ').removesuffix(')')})"


@dataclass(frozen=True)
class Pick:
    """The best column one way, and its margin over the runner-up."""

    way: str
    best: str
    rate: float
    runner_up: str | None = None
    runner_up_rate: float | None = None
    #: The factor a margin must exceed to be beyond noise here (chains' spread, timing floor).
    noise_factor: float | None = None

    @property
    def margin(self) -> float | None:
        return self.rate / self.runner_up_rate if self.runner_up_rate else None

    @property
    def beyond_noise(self) -> bool | None:
        if self.margin is None or self.noise_factor is None:
            return None
        return self.margin > self.noise_factor


@dataclass
class Recommendation:
    rates: list[Rate]
    #: Columns left out, with why.
    excluded: dict[str, str]
    picks: list[Pick] = field(default_factory=list)
    #: The 1-minute load average at the start and end of the comparison, and the CPU count.
    load: dict[str, float] | None = None

    def lines(self) -> list[str]:
        """The terminal's closing lines."""
        if not self.picks:
            why = "; ".join(f"{c}: {w}" for c, w in self.excluded.items()) or "no NUTS fit"
            return ["RECOMMENDATION: none: no backend converged and agreed (" + why + ")"]
        out = ["RECOMMENDATION (most bulk ESS per second among the backends that converged and agreed: "
               + ", ".join(r.column for r in self.rates) + ")"]
        for pick in self.picks:
            out.append(f"  {WAYS[pick.way]}: {pick_words(pick, self.rates)}")
        if self.excluded:
            out.append("  left out: " + "; ".join(f"{c} ({w})" for c, w in self.excluded.items()))
        out.append("  " + self.noise_words())
        return out

    def noise_words(self) -> str:
        spread = ", ".join(f"{r.column} ±{100 * r.relative_se:.0f}%" for r in self.rates if r.relative_se is not None)
        load = ""
        if self.load:
            load = (f"; load average {self.load['start']:.1f} at the start, {self.load['end']:.1f} at the end, "
                    f"on {self.load['cpus']:.0f} CPUs")
        return (f"noise: per-chain ESS spread ({spread or 'one chain: not measured'}); timing noise is not measured "
                f"by one run, so a margin under {TIMING_NOISE}x counts as within noise{load}")

    def to_json(self) -> dict[str, Any]:
        return {
            "measure": "bulk ESS min per second: one fit = compile + warm-up + sampling; repeated = warm-up + sampling",
            "eligible": [{**asdict(r), "one_fit_ess_per_second": r.one_fit, "repeated_ess_per_second": r.repeated}
                         for r in self.rates],
            "excluded": self.excluded,
            "picks": {p.way: {**asdict(p), "margin": p.margin, "beyond_noise": p.beyond_noise} for p in self.picks},
            "noise": {"method": "relative standard error of each rate from the spread of per-chain bulk ESS; "
                                f"beyond noise when the log margin exceeds {NOISE_SE} standard errors and the "
                                f"margin exceeds {TIMING_NOISE}x (timing noise between runs)",
                      "timing_floor": TIMING_NOISE},
            "load": self.load,
            "text": self.lines(),
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Recommendation:
        rates = [Rate(**{k: v for k, v in r.items() if k in Rate.__dataclass_fields__}) for r in saved["eligible"]]
        picks = [Pick(**{k: v for k, v in p.items() if k in Pick.__dataclass_fields__})
                 for p in saved["picks"].values()]
        return cls(rates, dict(saved["excluded"]), picks, saved.get("load"))


def pick_words(pick: Pick, rates: list[Rate]) -> str:
    by_column = {r.column: r for r in rates}
    best = by_column[pick.best]
    text = f"{best.name()}, {pick.rate:,.0f} ESS/s"
    if pick.way == "one_fit":
        text += f" ({best.compile_seconds:.1f} s compile{' from the cache' if best.compile_cached else ''})"
    if pick.runner_up is None:
        return text + " (the only backend eligible)"
    # As many decimals as it takes for a margin and the factor it is judged against never to
    # print alike ("1.50x ...: beyond noise" beside "needs over 1.50x" reads as a contradiction).
    digits = next((d for d in range(2, 7) if f"{pick.margin:.{d}f}" != f"{pick.noise_factor:.{d}f}"), 6)
    verdict = ("beyond noise" if pick.beyond_noise else
               f"within noise (needs over {pick.noise_factor:.{digits}f}x): {pick.best} or {pick.runner_up}")
    return f"{text}, {pick.margin:.{digits}f}x {pick.runner_up}'s {pick.runner_up_rate:,.0f}: {verdict}"


def relative_se(chains: list[np.ndarray]) -> float | None:
    """The relative standard error of a rate from per-chain bulk ESS: each chain's minimum
    over quantities, their sd over their mean over sqrt(chains)."""
    if len(chains) < 2:
        return None
    per_chain = np.asarray(chains, dtype=float)
    mean = per_chain.mean()
    return float(per_chain.std(ddof=1) / mean / math.sqrt(len(per_chain))) if mean > 0 else None


def per_chain_ess(quantities: dict[str, QuantityDraws]) -> list[float]:
    """Each chain's bulk ESS, its minimum over the posterior's quantities (decision
    indicators left out, as in the diagnostics)."""
    draws = [q.draws for q in quantities.values() if not q.is_probability]
    chains = draws[0].shape[0] if draws else 0
    return [min(ess(d[c]) for d in draws) for c in range(chains)]


def recommend(records: dict[str, FitRecord], sources: dict[str, dict[str, QuantityDraws]], disagreeing: set[str],
              load: dict[str, float] | None = None) -> Recommendation:
    """The recommendation among NUTS columns (``records``, with every quantity's draws in
    ``sources``), those in a disagreement (``disagreeing``) left out."""
    rates, excluded = [], {}
    for column, record in records.items():
        if not record.ok:
            excluded[column] = f"did not finish: {record.status}"
            continue
        d, t = record.diagnostics, record.timings
        failures = convergence_failures(d.flags)
        if failures:
            excluded[column] = "did not converge: " + ", ".join(failures)
        elif d.divergences:
            excluded[column] = f"{d.divergences} divergent transitions"
        elif column in disagreeing:
            excluded[column] = "disagreed with another backend"
        elif column not in sources:
            excluded[column] = "its draws are missing"
        else:
            rates.append(Rate(column, record.engine, d.ess_bulk_min, t.compile_seconds, t.compile_cached,
                              t.warmup_seconds + t.sampling_seconds, relative_se(per_chain_ess(sources[column]))))
    picks = [_pick(way, rates) for way in WAYS] if rates else []
    return Recommendation(rates, excluded, picks, load)


def _pick(way: str, rates: list[Rate]) -> Pick:
    ranked = sorted(rates, key=lambda r: getattr(r, way), reverse=True)
    best = ranked[0]
    if len(ranked) == 1:
        return Pick(way, best.column, getattr(best, way))
    second = ranked[1]
    ses = [r.relative_se for r in (best, second)]
    chains_factor = math.exp(NOISE_SE * math.hypot(*ses)) if None not in ses else math.inf
    return Pick(way, best.column, getattr(best, way), second.column, getattr(second, way),
                max(chains_factor, TIMING_NOISE))


def load_now() -> tuple[float, int]:
    """This machine's 1-minute load average and CPU count."""
    return os.getloadavg()[0], os.cpu_count() or 1
