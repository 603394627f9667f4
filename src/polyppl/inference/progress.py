"""Notes from inside a fit to whoever runs it: a backend says that it compiles a program for
the first time (a minute on 2 cores), or how far its sampler has got, where the person
waiting would otherwise see nothing for a minute.

Whoever runs a fit listens (``listening``, set by ``execution.fit.fit`` around the fit, for
the fit's ``progress``); without a listener a note goes nowhere."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

_listener: Callable[[str], None] | None = None


def note(text: str) -> None:
    """Tell whoever runs this fit what it is doing now."""
    if _listener is not None:
        _listener(text)


@contextmanager
def listening(callback: Callable[[str], None] | None) -> Iterator[None]:
    """Notes go to ``callback`` while the body runs."""
    global _listener
    previous, _listener = _listener, callback
    try:
        yield
    finally:
        _listener = previous


class Percent:
    """``sampling 40%, about 20 s left`` each time another tenth of ``total`` iterations is
    done; the estimate assumes the iterations left cost what those done cost (the clock
    starts at the first iteration, after the compile)."""

    def __init__(self, total: int, what: str = "sampling") -> None:
        import time

        self._clock, self.total, self.what, self.done, self._shown = time.monotonic, max(total, 1), what, 0, 0
        self._started: float | None = None

    def step(self, count: int = 1) -> None:
        if self._started is None:
            self._started = self._clock()
        self.done += count
        tenth = 10 * self.done // self.total
        if tenth > self._shown and self.done < self.total:
            self._shown = tenth
            elapsed = self._clock() - self._started
            left = elapsed * (self.total - self.done) / self.done
            note(f"{self.what} {10 * tenth}%, about {left:.0f} s left")
