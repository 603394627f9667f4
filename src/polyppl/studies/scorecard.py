"""How good is an approximation (ADVI, full-rank ADVI, Pathfinder)? One scorecard for all,
against NUTS on the same posterior.

Per scalar quantity (parameters, deterministics; decision probabilities apart), against the
NUTS reference's draws:

* **mean shift**: (mean_q - mean_NUTS) / sd_NUTS, and its z, the gap over its Monte Carlo
  error sqrt(MCSE_NUTS^2 + MCSE_q^2) (NUTS's MCSE from its autocorrelated chains, q's from
  its draws), which says whether a shift is beyond sampling noise at all;
* **sd ratio**: sd_q / sd_NUTS (below 1: under-dispersed, intervals too narrow);
* **1-Wasserstein distance** between the two marginals, over sd_NUTS (the average distance
  a unit of probability must move: shift, spread and shape together).

For the approximation as a whole, **Pareto k** of PSIS on log p - log q at its raw draws
(Yao, Vehtari, Simpson and Gelman 2018): below 0.5 q is close to p in the sense that
importance sampling from it works well; 0.5 to 0.7 importance weighting would still correct
the remaining error; above 0.7 q's tails are too light and neither q nor importance
sampling from it can be trusted on its own. Plus its wall time and gradient evaluations,
beside NUTS's.

**The verdict** weighs the distance to NUTS first, since NUTS's draws are direct evidence
where k is indirect, and Pathfinder's k is often above 0.7 while its resampled draws match
NUTS closely:

* the approximation is *close* when every mean lies within ``MEAN_SHIFT_MAX_SD`` (0.25)
  NUTS sds of NUTS's and every sd is at least ``SD_RATIO_MIN`` (0.8) of NUTS's;
* the reference is *trusted* when the NUTS run converged (R-hat, bulk and tail ESS) without
  divergences;
* with a trusted reference: ``reliable`` when close and k <= ``K_RELIABLE`` (0.5);
  ``usable`` when close and k above 0.5 (the marginals match NUTS but q is not a good
  importance proposal: trust means and intervals, not tail probabilities or the joint);
  ``unreliable`` when not close;
* with a reference in doubt (NUTS itself flagged, as on a funnel): never ``reliable``;
  ``usable`` when close and k <= ``K_USABLE`` (0.7); otherwise ``unreliable``.

Thresholds are checked on draws from known distributions in ``tests/test_variational.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
from scipy import stats

from polyppl.inference.variational import psis
from polyppl.studies.agreement import QuantityDraws

K_RELIABLE = 0.5
K_USABLE = 0.7
MEAN_SHIFT_MAX_SD = 0.25
SD_RATIO_MIN = 0.8
VERDICTS = ("reliable", "usable", "unreliable")
#: What each verdict tells a user.
VERDICT_WORDS = {
    "reliable": "close to NUTS on every marginal, and a good importance proposal (Pareto k <= 0.5): trust it",
    "usable": "close to NUTS on every marginal, but not a good importance proposal (or NUTS itself in doubt): "
              "trust its means and intervals, not its tail probabilities or the joint distribution",
    "unreliable": "a mean off by more than 0.25 NUTS sd, or an sd under 0.8 of NUTS's: do not use it",
}


@dataclass(frozen=True)
class QuantityScore:
    """One scalar quantity of an approximation against NUTS."""

    quantity: str
    nuts_mean: float
    nuts_sd: float
    mean: float
    sd: float
    mean_shift_sd: float
    mean_z: float
    sd_ratio: float
    w1_sd: float


@dataclass(frozen=True)
class Scorecard:
    """An approximation scored against a NUTS run (``reference``, its column label)."""

    reference: str
    reference_trusted: bool
    pareto_k: float | None
    max_abs_mean_z: float
    max_abs_mean_shift_sd: float
    min_sd_ratio: float
    max_w1_sd: float
    #: The quantity where each of the four worst values above is found.
    worst: dict[str, str]
    max_decision_gap: float | None
    seconds: float
    compile_seconds: float
    gradient_evaluations: int | None
    #: Whether the optimisation met its own convergence rule before the iteration limit.
    converged: bool
    nuts_seconds: float
    nuts_gradient_evaluations: int
    verdict: str
    reasons: tuple[str, ...]
    quantities: tuple[QuantityScore, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["quantities"] = [asdict(q) for q in self.quantities]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Scorecard:
        return cls(**{**values, "reasons": tuple(values["reasons"]),
                      "quantities": tuple(QuantityScore(**q) for q in values.get("quantities", ()))})


def pareto_k(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """PSIS's Pareto k of the importance ratios p/q at draws from q (pooled over paths)."""
    return psis(np.asarray(log_p, dtype=float) - np.asarray(log_q, dtype=float))[1]


def quantity_score(name: str, nuts: QuantityDraws, approximation: QuantityDraws) -> QuantityScore:
    """Mean shift, its z, sd ratio and 1-Wasserstein distance of one quantity."""
    n, q = nuts.summary, approximation.summary
    error = math.hypot(n.mcse_mean, q.mcse_mean)
    gap = q.mean - n.mean
    z = gap / error if error > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))
    w1 = stats.wasserstein_distance(np.ravel(approximation.draws), np.ravel(nuts.draws))
    return QuantityScore(name, n.mean, n.sd, q.mean, q.sd, gap / n.sd, float(z), q.sd / n.sd, float(w1 / n.sd))


def verdict(k: float | None, close: bool, trusted: bool) -> str:
    """The verdict rule of the module docstring."""
    if not trusted:
        return "usable" if close and k is not None and k <= K_USABLE else "unreliable"
    if not close:
        return "unreliable"
    return "reliable" if k is not None and k <= K_RELIABLE else "usable"


def score(
    reference: str,
    nuts: Mapping[str, QuantityDraws],
    approximation: Mapping[str, QuantityDraws],
    log_p: np.ndarray | None,
    log_q: np.ndarray | None,
    *,
    reference_trusted: bool = True,
    seconds: float = 0.0,
    compile_seconds: float = 0.0,
    gradient_evaluations: int | None = None,
    converged: bool = True,
    nuts_seconds: float = 0.0,
    nuts_gradient_evaluations: int = 0,
) -> Scorecard:
    """Score ``approximation``'s quantities against ``nuts``'s (both by name, as
    ``studies.compare.quantities`` gives them), with Pareto k from ``log_p - log_q`` at its
    raw draws (None where q's density is not available)."""
    scores = tuple(quantity_score(name, nuts[name], q) for name, q in approximation.items()
                   if name in nuts and not q.is_probability and nuts[name].summary.sd > 0)
    if not scores:
        raise ValueError("the approximation and NUTS share no quantity with a positive sd")
    k = pareto_k(log_p, log_q) if log_p is not None and log_q is not None else None
    by = {
        "mean_z": max(scores, key=lambda s: abs(s.mean_z)),
        "mean_shift_sd": max(scores, key=lambda s: abs(s.mean_shift_sd)),
        "sd_ratio": min(scores, key=lambda s: s.sd_ratio),
        "w1_sd": max(scores, key=lambda s: s.w1_sd),
    }
    shift, ratio = abs(by["mean_shift_sd"].mean_shift_sd), by["sd_ratio"].sd_ratio
    close = shift <= MEAN_SHIFT_MAX_SD and ratio >= SD_RATIO_MIN
    gaps = [abs(q.summary.mean - nuts[name].summary.mean) for name, q in approximation.items()
            if q.is_probability and name in nuts]
    return Scorecard(
        reference=reference, reference_trusted=reference_trusted, pareto_k=k,
        max_abs_mean_z=abs(by["mean_z"].mean_z), max_abs_mean_shift_sd=shift, min_sd_ratio=ratio,
        max_w1_sd=by["w1_sd"].w1_sd, worst={key: s.quantity for key, s in by.items()},
        max_decision_gap=max(gaps) if gaps else None, seconds=seconds, compile_seconds=compile_seconds,
        gradient_evaluations=gradient_evaluations, converged=converged, nuts_seconds=nuts_seconds,
        nuts_gradient_evaluations=nuts_gradient_evaluations,
        verdict=verdict(k, close, reference_trusted),
        reasons=_reasons(k, by, close, reference_trusted, converged), quantities=scores,
    )


def _reasons(k: float | None, by: dict[str, QuantityScore], close: bool, trusted: bool,
             converged: bool) -> tuple[str, ...]:
    """The verdict in words: what decided it."""
    shift, ratio = by["mean_shift_sd"], by["sd_ratio"]
    out = []
    if abs(shift.mean_shift_sd) > MEAN_SHIFT_MAX_SD:
        out.append(f"the mean of {shift.quantity} is {shift.mean_shift_sd:+.2f} NUTS sd from NUTS's "
                   f"(z = {shift.mean_z:+.1f}; limit {MEAN_SHIFT_MAX_SD})")
    if ratio.sd_ratio < SD_RATIO_MIN:
        out.append(f"the sd of {ratio.quantity} is {ratio.sd_ratio:.2f} of NUTS's (limit {SD_RATIO_MIN}): "
                   "its intervals are too narrow")
    if close:
        out.append(f"every mean within {MEAN_SHIFT_MAX_SD} NUTS sd (worst {shift.quantity}, "
                   f"{shift.mean_shift_sd:+.2f}) and every sd at least {SD_RATIO_MIN} of NUTS's "
                   f"(lowest {ratio.quantity}, {ratio.sd_ratio:.2f})")
    if k is None:
        out.append("Pareto k unavailable: the approximation's density is not known")
    elif k <= K_RELIABLE:
        out.append(f"Pareto k {k:.2f} <= {K_RELIABLE}: importance sampling from it works well")
    elif k <= K_USABLE:
        out.append(f"Pareto k {k:.2f} between {K_RELIABLE} and {K_USABLE}: importance weights would correct it")
    else:
        out.append(f"Pareto k {k:.2f} > {K_USABLE}: its tails are too light for importance sampling to correct it"
                   + ("; its marginals match NUTS regardless" if close and trusted else ""))
    if not trusted:
        out.append("the NUTS reference did not converge or diverged, so closeness to it is weak evidence: "
                   "nothing is called reliable")
    if not converged:
        out.append("its optimisation reached the iteration limit before its convergence rule stopped it")
    return tuple(out)

