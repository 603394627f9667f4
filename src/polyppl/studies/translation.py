"""The check every model lowered from a user's program passes before it samples: the
lowered model's log density and gradient on PyMC and NumPyro equal those of the program
itself, as Stan computes them, on the unconstrained scale, Jacobians included, at random
points, up to one constant per backend (``~`` statements drop constants).

Exact arithmetic on the same function, so the tolerance is float64 round-off (1e-8
relative), not Monte Carlo error. A mismatch stops the run (a UserError: exit 2) naming the
backend, the quantity and the point with the largest error: never sample a wrong translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from polyppl.backends import get_backend
from polyppl.errors import UserError
from polyppl.models import Problem

#: Random points of the check, and its relative tolerance.
POINTS = 20
RTOL = 1e-8
#: The lowered model runs on these; Stan runs the program.
LOWERED_BACKENDS = ("pymc", "numpyro")


@dataclass(frozen=True)
class Translation:
    points: int
    max_rel_error: float
    #: Where the largest error was: backend, quantity (``theta[3]`` or ``log density``), point.
    worst: tuple[str, str, dict[str, list]] | None = None

    def to_json(self) -> dict:
        return {"points": self.points, "max_rel_error": self.max_rel_error}


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| relative to the larger magnitude, with an absolute floor of 1 (a gradient
    element near zero is compared on the scale of 1, as a log density's units)."""
    return np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


def _element_names(name: str, shape: tuple[int, ...]) -> list[str]:
    if not shape:
        return [name]
    return [f"{name}(unconstrained)[{','.join(str(i + 1) for i in index)}]" for index in np.ndindex(*shape)]


def check_translation(problem: Problem, stan_engine: str | None = None, points: int = POINTS, seed: int = 20261207,
                      rtol: float = RTOL) -> Translation:
    """Compare the lowered model's log density and gradient on PyMC and NumPyro with Stan's
    own for the program, at ``points`` random unconstrained points (each element uniform in
    (-2, 2), where Stan starts its chains). Raises a UserError on a mismatch."""
    model, dataset = problem.model, problem.dataset
    stan = get_backend("stan").compile(model, dataset, engine=stan_engine).log_density()
    lowered = {b: get_backend(b).compile(model, dataset).log_density() for b in LOWERED_BACKENDS}
    rng = np.random.default_rng(seed)
    shapes: Mapping[str, tuple[int, ...]] = stan.shapes
    worst_error, worst = 0.0, None
    offsets: dict[str, list[float]] = {b: [] for b in lowered}
    stan_values: list[float] = []
    drawn = []
    for _ in range(points):
        point = {k: rng.uniform(-2, 2, size=shape) for k, shape in shapes.items()}
        drawn.append(point)
        stan_logp, stan_grad = stan(point)
        stan_values.append(stan_logp)
        for backend, density in lowered.items():
            logp, grad = density(point)
            offsets[backend].append(logp - stan_logp)
            for name, shape in shapes.items():
                errors = _relative(np.ravel(np.asarray(grad[name], dtype=float)), np.ravel(stan_grad[name]))
                errors = np.where(np.isnan(errors), np.inf, errors)
                if errors.size and errors.max() > worst_error:
                    worst_error = float(errors.max())
                    where = _element_names(name, tuple(shape))[int(errors.argmax())]
                    worst = (backend, f"the gradient of {where}", {k: np.asarray(v).tolist() for k, v in point.items()})
    scale = max(1.0, float(np.max(np.abs(stan_values))) if stan_values else 1.0)
    for backend, values in offsets.items():
        values_array = np.asarray(values)
        spread = float(np.ptp(values_array)) / scale if np.all(np.isfinite(values_array)) else np.inf
        if spread > worst_error:
            worst_error = spread
            at = int(np.argmax(np.abs(values_array - np.median(values_array)))) if np.isfinite(spread) else 0
            worst = (backend, "the log density (up to a constant)",
                     {k: np.asarray(v).tolist() for k, v in drawn[at].items()})
    result = Translation(points, worst_error, worst)
    if worst_error > rtol:
        backend, quantity, point = worst
        raise UserError(f"{problem.name}: the translation check failed: on {backend}, {quantity} differs from "
                        f"Stan's by {worst_error:.3g} (relative; tolerance {rtol:g}) at the unconstrained point "
                        f"{_short(point)}; not sampling a wrong translation")
    return result


def _short(point: Mapping[str, list]) -> str:
    parts = []
    for name, value in point.items():
        flat = np.ravel(value)
        text = ", ".join(f"{v:.4g}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")
        parts.append(f"{name}=[{text}]" if np.ndim(value) else f"{name}={float(value):.4g}")
    return "{" + "; ".join(parts) + "}"
