"""What is computed from the draws after sampling, the same way for every backend.

* **Conditional draws**: each :class:`~polyppl.spec.Conditional` node is drawn once per
  posterior draw from its exact conditional distribution, with a generator seeded from the
  run's seed, and so are the deterministics that use it. A backend never sees them, so
  every backend's output still holds them, with the same names, dims and coords.
* **Decisions**: each :class:`~polyppl.spec.Decision` node becomes 0/1 indicators per draw
  (P(B beats C), P(best), P(condition)), whose means are the probabilities users came for.

Both evaluate the spec with NumPy (``numpy_model``) on all draws at once: a leading axis of
draws, then the node's own dims.
"""

from __future__ import annotations

from itertools import permutations
from typing import Mapping

import numpy as np

from polyppl.inference.numpy_model import dist_args, draw, evaluate
from polyppl.spec import Conditional, Dataset, Deterministic, Model

#: Mixed into the run's seed, so conditional draws never reuse a sampler's stream.
_CONDITIONAL_STREAM = 0x5EED_C0DE

#: Decision draws by decision and label: {"prob_beats": {"B>C": indicators (chain, draw)}}.
DecisionDraws = dict[str, dict[str, np.ndarray]]


def _batched(dataset: Dataset, posterior: Mapping[str, np.ndarray]) -> tuple[dict, int, int]:
    """The data, and every posterior array with its (chain, draw) axes as one draws axis."""
    chains, n_draws = next(iter(posterior.values())).shape[:2]
    env = {name: np.asarray(v) for name, v in dataset.values.items()}
    env.update({name: np.asarray(v).reshape(chains * n_draws, *np.shape(v)[2:]) for name, v in posterior.items()})
    return env, chains, n_draws


def complete(model: Model, dataset: Dataset, posterior: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """``posterior`` (name -> (chain, draw, *shape), the sampled part) with the conditional
    draws and the deterministics that use them added, in the model's order."""
    late = model.post_sampling_names()
    if not late:
        return posterior
    env, chains, n_draws = _batched(dataset, posterior)
    batched = set(posterior)
    rng = np.random.default_rng([seed, _CONDITIONAL_STREAM])
    out = dict(posterior)
    for name in late:
        node = model[name]
        shape = (chains * n_draws, *dataset.shape(node.dims))
        if isinstance(node, Conditional):
            value = draw(node.dist.family, dist_args(node.dist, env, shape[1:], batched), rng, shape)
        else:
            assert isinstance(node, Deterministic)
            value = np.broadcast_to(evaluate(node.expr, env, batched), shape)
        env[name] = np.asarray(value, dtype=float)
        batched.add(name)
        out[name] = env[name].reshape(chains, n_draws, *shape[1:])
    return out


def decision_draws(model: Model, dataset: Dataset, posterior: Mapping[str, np.ndarray]) -> DecisionDraws:
    """0/1 indicators (chain, draw) per decision and label."""
    if not model.decisions:
        return {}
    sampled = {k: v for k, v in posterior.items() if k in model.output_names}
    env, chains, n_draws = _batched(dataset, sampled)
    out: DecisionDraws = {}
    for decision in model.decisions:
        values = np.broadcast_to(evaluate(decision.expr, env, set(sampled)),
                                 (chains * n_draws, *dataset.shape(decision.dims)))

        def per_draw(indicator: np.ndarray) -> np.ndarray:
            return indicator.astype(float).reshape(chains, n_draws)

        labels = [str(v) for v in dataset.coords[decision.dims[0]]] if decision.dims else [""]
        if decision.kind == "probability":
            flat = values.reshape(chains * n_draws, -1)
            keys = labels if len(decision.dims) <= 1 else [",".join(map(str, k)) for k in np.ndindex(*values.shape[1:])]
            out[decision.name] = {key: per_draw(flat[:, i]) for i, key in enumerate(keys)}
        elif decision.kind == "beats":
            out[decision.name] = {f"{labels[i]}>{labels[j]}": per_draw(values[:, i] > values[:, j])
                                  for i, j in permutations(range(len(labels)), 2)}
        else:  # best
            best = values.argmax(axis=-1)
            out[decision.name] = {label: per_draw(best == i) for i, label in enumerate(labels)}
    return out


def decision_titles(model: Model) -> dict[str, str]:
    """Each decision's title as the model states it (its name where it states none)."""
    return {d.name: d.heading() for d in model.decisions}
