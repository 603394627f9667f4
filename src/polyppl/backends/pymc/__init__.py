"""PyMC: the spec becomes a ``pm.Model``; PyMC's own NUTS, nutpie's or NumPyro's runs it."""

from polyppl.backends.base import Backend, Engine

_PYMC = ("pymc", "pytensor")

BACKEND = Backend(
    name="pymc",
    engines=(
        Engine("pymc", "PyMC's own NUTS (chains in processes); ADVI (pm.fit) and Pathfinder (pymc-extras)",
               methods=("nuts", "advi", "fullrank", "pathfinder"), packages=(*_PYMC, "pymc-extras"),
               inits=("default", "advi", "pathfinder", "uniform")),
        Engine("nutpie", "nutpie's NUTS (Rust) on the model compiled by Numba", packages=(*_PYMC, "nutpie", "numba"),
               inits=("default",)),
        Engine("numpyro", "NumPyro's NUTS on the model compiled to JAX", packages=(*_PYMC, "numpyro", "jax", "jaxlib"),
               chain_methods=("auto", "parallel", "vectorized")),
    ),
    compiler="polyppl.backends.pymc.compiler",
)
