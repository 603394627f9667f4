"""NumPyro: the spec becomes a NumPyro model function; NumPyro's NUTS and SVI (and BlackJAX's
Pathfinder, on NumPyro's log density) run it under JAX."""

from polyppl.backends.base import Backend, Engine

BACKEND = Backend(
    name="numpyro",
    engines=(
        Engine("numpyro", "NumPyro's NUTS and SVI, compiled by XLA; Pathfinder from BlackJAX",
               methods=("nuts", "advi", "fullrank", "pathfinder"), packages=("numpyro", "jax", "jaxlib", "blackjax"),
               chain_methods=("auto", "sequential", "parallel", "vectorized"), single_core_chains="vectorized",
               inits=("default", "advi", "pathfinder", "uniform")),
    ),
    compiler="polyppl.backends.numpyro.compiler",
    # float64 by default so that NumPyro computes the same numbers as PyMC and Stan; float32
    # (JAX's own default) exists for the reproduction of what it does to NUTS.
    options={"precision": ("float64", "float32")},
)
