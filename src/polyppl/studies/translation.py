"""The check every model lowered from a user's program passes before it samples: the
lowered model's log density and gradient on PyMC and NumPyro equal those of the program
itself, as Stan computes them, on the unconstrained scale, Jacobians included, at random
points, up to one constant per backend (``~`` statements drop constants).

Exact arithmetic on the same function, so the tolerance is float64 round-off (1e-8
relative), not Monte Carlo error. One exception, named in the result: where the program
calls a function whose gradient Stan itself only approximates (``normal_lcdf`` of a
parameter; the model's ``source.loose_gradients``), gradients are compared to the loosest
such function's tolerance, with its reason; the log density still to 1e-8. A mismatch stops
the run (a UserError: exit 2) naming the backend, the quantity and the point with the
largest error: never sample a wrong translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from polyppl.backends import get_backend
from polyppl.errors import UserError
from polyppl.models import Problem
from polyppl.spec import Model

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
    #: The tolerance gradients were held to, and why where it is not RTOL.
    gradient_rtol: float = RTOL
    gradient_rtol_reason: str | None = None

    def to_json(self) -> dict:
        out = {"points": self.points, "max_rel_error": self.max_rel_error, "gradient_rtol": self.gradient_rtol}
        if self.gradient_rtol_reason is not None:
            out["gradient_rtol_reason"] = self.gradient_rtol_reason
        return out

    def summary(self) -> str:
        """The terminal's line: ``translation: 20 points, max relative error 3e-15``."""
        line = f"translation: {self.points} points, max relative error {self.max_rel_error:.2g}"
        if self.gradient_rtol_reason is not None:
            line += f" (gradient tolerance {self.gradient_rtol:g}: {self.gradient_rtol_reason})"
        return line


def gradient_tolerance(model: Model, rtol: float = RTOL) -> tuple[float, str | None]:
    """The tolerance of the gradients of a model lowered from a program, and its reason: the
    loosest of the functions the program calls whose gradient Stan approximates, else ``rtol``."""
    loose = model.source.loose_gradients if model.source is not None else ()
    if not loose:
        return rtol, None
    loosest = max(loose, key=lambda g: g.rtol)
    return max(rtol, loosest.rtol), loosest.reason


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
    (-2, 2), where Stan starts its chains), the log density to ``rtol`` and the gradient to
    ``gradient_tolerance``'s. Raises a UserError on a mismatch."""
    model, dataset = problem.model, problem.dataset
    gradient_rtol, reason = gradient_tolerance(model, rtol)
    stan = get_backend("stan").compile(model, dataset, engine=stan_engine).log_density()
    lowered = {b: get_backend(b).compile(model, dataset).log_density() for b in LOWERED_BACKENDS}
    rng = np.random.default_rng(seed)
    shapes: Mapping[str, tuple[int, ...]] = stan.shapes
    # The worst error of the gradient and of the log density, each with where it was.
    worst: dict[str, tuple[float, tuple[str, str, dict[str, list]] | None]] = {"gradient": (0.0, None),
                                                                                "value": (0.0, None)}
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
                if errors.size and errors.max() > worst["gradient"][0]:
                    where = _element_names(name, tuple(shape))[int(errors.argmax())]
                    worst["gradient"] = (float(errors.max()), (backend, f"the gradient of {where}",
                                                               {k: np.asarray(v).tolist() for k, v in point.items()}))
    scale = max(1.0, float(np.max(np.abs(stan_values))) if stan_values else 1.0)
    for backend, values in offsets.items():
        values_array = np.asarray(values)
        spread = float(np.ptp(values_array)) / scale if np.all(np.isfinite(values_array)) else np.inf
        if spread > worst["value"][0]:
            at = int(np.argmax(np.abs(values_array - np.median(values_array)))) if np.isfinite(spread) else 0
            worst["value"] = (spread, (backend, "the log density (up to a constant)",
                                       {k: np.asarray(v).tolist() for k, v in drawn[at].items()}))
    largest = max(worst.values(), key=lambda w: w[0])
    result = Translation(points, largest[0], largest[1], gradient_rtol, reason)
    tolerances = {"value": rtol, "gradient": gradient_rtol}
    failed = [kind for kind in ("gradient", "value") if worst[kind][0] > tolerances[kind]]
    if failed:  # the one furthest past its tolerance
        kind = max(failed, key=lambda k: worst[k][0] / tolerances[k])
        (error, (backend, quantity, point)), tolerance = worst[kind], tolerances[kind]
        why = f"; {reason}" if kind == "gradient" and reason is not None else ""
        raise UserError(f"{problem.name}: the translation check failed: on {backend}, {quantity} differs from "
                        f"Stan's by {error:.3g} (relative; tolerance {tolerance:g}{why}) at the unconstrained "
                        f"point {_short(point)}; not sampling a wrong translation")
    return result


def _short(point: Mapping[str, list]) -> str:
    parts = []
    for name, value in point.items():
        flat = np.ravel(value)
        text = ", ".join(f"{v:.4g}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")
        parts.append(f"{name}=[{text}]" if np.ndim(value) else f"{name}={float(value):.4g}")
    return "{" + "; ".join(parts) + "}"
