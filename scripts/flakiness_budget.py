"""Print the suite's flakiness budget: the chance that a correct change fails the test suite
by chance, the sum of the false-alarm rates that every statistical test case declares
(``@pytest.mark.false_alarm``; tests/flakiness_budget.py), over the whole suite: the default
run, ``-m slow`` and CmdStan's cases alike. Exit 1 when it is over the budget
(tests/stat_tolerance.py's SUITE_BUDGET) or a statistical test declares no rate.

    uv run python scripts/flakiness_budget.py [--detail N] [PYTEST_ARGS...]

Extra arguments select other cases, as pytest does (``-m 'not slow'``: the default run's).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


class _Collector:
    def __init__(self) -> None:
        self.items: list = []

    def pytest_collection_finish(self, session) -> None:
        self.items = list(session.items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detail", type=int, default=40, help="how many tests to list, largest first")
    args, pytest_args = parser.parse_known_args(argv)
    sys.path.insert(0, str(TESTS))
    import pytest

    import flakiness_budget
    from stat_tolerance import SUITE_BUDGET

    collector = _Collector()
    selection = pytest_args or ["-m", ""]  # every case unless told otherwise
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        code = pytest.main(["--collect-only", "-qq", "-n", "0", "-p", "no:cacheprovider", *selection, str(TESTS)],
                           plugins=[collector])
    if code not in (0, 5):
        print(listing.getvalue()[-3000:] + f"\ncollecting the tests failed (pytest exit {code})", file=sys.stderr)
        return 2
    declarations = [flakiness_budget.declaration(item) for item in collector.items]
    scope = "every case selected by " + (" ".join(pytest_args) if pytest_args else "-m '' (the whole suite)")
    print("\n".join(flakiness_budget.budget_lines(declarations, scope, detail=args.detail)))
    undeclared = flakiness_budget.undeclared_statistical_tests(TESTS)
    for name in undeclared:
        print(f"no declared false-alarm rate: {name}", file=sys.stderr)
    return int(flakiness_budget.total_false_alarm(declarations) > SUITE_BUDGET or bool(undeclared))


if __name__ == "__main__":
    sys.exit(main())
