"""Idiomatic hand-written PyMC, NumPyro and Stan versions of the built-in models.

Each is what a person fluent in the library would write for the model in
``polyppl.models``, with the same parameter names so the same code reads the draws.
"""
