"""Checked-in reference posteriors of the built-in models, and the statistics to judge a run by them.

A reference summary is a JSON file under ``polyppl/models/references/``: for every scalar
quantity of a posterior (keyed like ``a[Canada]``) and every decision probability (keyed
like ``prob_treatment_better[China]``), the mean, sd and 5%/50%/95% quantiles with their
Monte Carlo standard errors and effective sample sizes, and the provenance of the long run
that made it (engine, versions, settings, seeds, date, command). Eight schools needs none:
its posterior is exact (``polyppl.models.eight_schools_exact``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from arviz_stats.base import array_stats
from scipy import stats

REFERENCES = Path(__file__).with_name("references")
#: Summary statistics of a quantity, each with its MCSE under ``mcse_<name>``.
STATISTICS = ("mean", "q05", "q50", "q95")


def available() -> list[str]:
    """Names of the checked-in reference summaries."""
    return sorted(p.stem for p in REFERENCES.glob("*.json"))


def load_reference(name: str) -> dict:
    """The reference summary ``name`` (e.g. ``multilevel-logistic-seed``): a dict with
    ``quantities`` ({key: {mean, sd, q05, q50, q95, mcse_mean, mcse_q05, ..., ess_bulk,
    ess_tail, rhat}}), ``chains`` and ``provenance``."""
    path = REFERENCES / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no reference summary {name!r}; available: {', '.join(available()) or 'none'}")
    return json.loads(path.read_text())


def _number(value) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def _ess(x: np.ndarray, method: str) -> float:
    return _number(array_stats.ess(x, method=method, prob=0.05 if method == "tail" else None))


def summarize(draws: np.ndarray, is_probability: bool = False) -> dict[str, float]:
    """Summary of one quantity's (chain, draw) array with ArviZ's MCSEs, ESS and rank R-hat.
    A probability (the mean of a 0/1 indicator) gets its mean, sd, the MCSE and ESS of the
    mean and R-hat only: its quantiles are 0 or 1."""
    x = np.asarray(draws, dtype=float)
    out = {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)),
        "mcse_mean": _number(array_stats.mcse(x, method="mean")),
        "rhat": _number(array_stats.rhat(x, method="rank")),
    }
    if is_probability:
        out["ess_mean"] = _ess(x, "mean")
        return out
    out["ess_bulk"] = _ess(x, "bulk")
    for name, prob in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)):
        out[name] = float(np.quantile(x, prob))
        out[f"mcse_{name}"] = _number(array_stats.mcse(x, method="quantile", prob=prob))
    out["ess_tail"] = _ess(x, "tail")
    return out


def z_score(estimate: float, mcse: float, reference: float, reference_mcse: float = 0.0) -> float:
    """(estimate - reference) / sqrt(mcse^2 + reference_mcse^2)."""
    return (estimate - reference) / math.hypot(mcse, reference_mcse)


def degrees_of_freedom(chains: int) -> int:
    """Degrees of freedom of an estimated MCSE as ``polyppl.agreement`` counts them: batch
    means over four batches a chain (with two runs, pass the smaller number of chains)."""
    return max(4 * chains - 1, 3)


def bonferroni_threshold(comparisons: int, family_alpha: float, df: int) -> float:
    """|z| above which one of ``comparisons`` two-sided t(df) tests rejects, so that the chance
    of any false alarm among them is at most ``family_alpha`` (Bonferroni)."""
    return float(stats.t.isf(family_alpha / comparisons / 2, df))
