"""What an inference method hands back: plain arrays named as in the specification, and
the time each phase took. Every engine of every backend returns these shapes."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np

#: Per-draw sampler statistics every NUTS engine reports, under these names.
STAT_NAMES = ("diverging", "tree_depth", "n_steps", "energy", "step_size", "acceptance_rate", "lp")


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of each phase of one multi-chain run.

    ``split`` says how warm-up and sampling were told apart: ``measured`` (separate
    calls), ``engine`` (the engine's own per-chain report) or ``gradients`` (the
    engine reports only the total, split in proportion to gradient evaluations).
    For an approximation, warm-up is the optimisation (fitting the approximation) and
    sampling is drawing from it, with the target's log density at each draw.
    """

    compile_seconds: float
    warmup_seconds: float
    sampling_seconds: float
    split: str
    compile_cached: bool = False


@dataclass(frozen=True)
class Approximation:
    """What an approximation (ADVI, Pathfinder) reports beside its draws.

    ``log_p`` and ``log_q``: the target's log density (unconstrained scale, Jacobian
    included, up to a constant) and the approximation's, at each raw draw from the
    approximation, (path, draw) (ADVI: one path). Pathfinder's posterior draws are resampled
    from these; PSIS's Pareto k is computed from ``log_p - log_q``. ``gradient_evaluations``:
    gradients of the target the optimisation spent, where the library tells (None where it
    does not). ``converged``: whether the optimisation met its stopping rule before the
    iteration limit.
    """

    family: str
    log_p: np.ndarray
    log_q: np.ndarray
    iterations: int
    gradient_evaluations: int | None
    converged: bool
    notes: tuple[str, ...] = ()


@dataclass
class Draws:
    """Draws of one run: ``posterior`` name -> (chain, draw, *shape); ``stats``
    STAT_NAMES -> (chain, draw) for NUTS, only what exists for other methods (an
    approximation: ``lp`` and ``log_q``, the log densities of the target and of the
    approximation at each draw; its ``approximation`` holds the rest)."""

    posterior: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    warmup_gradient_evaluations: int
    timings: Timings
    engine: str
    messages: list[str] = field(default_factory=list)
    approximation: Approximation | None = None


@dataclass
class LogDensity:
    """An unconstrained log density: parameter name -> array in, (logp, gradient) out."""

    shapes: Mapping[str, tuple[int, ...]]
    function: Callable[[Mapping[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]]

    def __call__(self, point: Mapping[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        return self.function(point)


def split_by_gradients(total: float, warmup_steps: int, sampling_steps: int) -> tuple[float, float]:
    steps = warmup_steps + sampling_steps
    if steps == 0:
        return 0.0, total
    return total * warmup_steps / steps, total * sampling_steps / steps


def tree_depth_from_steps(n_steps: np.ndarray) -> np.ndarray:
    """Tree depth of a NUTS trajectory of n leapfrog steps: 2^(d-1) <= n < 2^d."""
    return np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())
