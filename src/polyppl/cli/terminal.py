"""A quiet terminal: the libraries polyppl drives (ArviZ, PyMC, JAX, Stan, Dask) warn and
log about their own affairs (deprecations, dashboards, shape checks) in words a user of
polyppl cannot act on. What matters to a result polyppl says itself, from the draws: the
diagnostics, their flags in words, a backend's error. So the commands silence the
libraries' warnings and their log records below ERROR in this process, and the warnings of
the processes it starts (``PYTHONWARNINGS=ignore`` in their environment: Dask's workers
print to this terminal). ``-W`` or ``PYTHONWARNINGS`` (any value, e.g. ``default``) turns
all of this off. Fits that run in child processes of ``compare`` keep their output in a
file, whose tail is shown when one fails."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Warnings ignored and log records below ERROR dropped while a command runs, and
    ``PYTHONWARNINGS=ignore`` for the processes it starts; restored afterwards, so that
    calling ``main`` in a test leaves the process as it was."""
    if sys.warnoptions or "PYTHONWARNINGS" in os.environ:  # the user asked to see warnings
        yield
        return
    previous_disable = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        os.environ["PYTHONWARNINGS"] = "ignore"
        try:
            yield
        finally:
            logging.disable(previous_disable)
            os.environ.pop("PYTHONWARNINGS", None)
