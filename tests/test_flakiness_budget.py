"""The suite's flakiness budget (tests/flakiness_budget.py): every statistical test declares
its false-alarm rate, and their sum over the whole suite stays within the budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flakiness_budget import Declaration, budget_lines, total_false_alarm, undeclared_statistical_tests
from stat_tolerance import SUITE_BUDGET

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

#: These tests read the declarations (arithmetic and a static reading of files): no chance.
pytestmark = pytest.mark.false_alarm(0)


def test_every_statistical_test_declares_its_false_alarm_rate():
    assert undeclared_statistical_tests(TESTS) == []


def test_an_undeclared_statistical_test_is_found(tmp_path):
    """The static check fails for the right reason: a goodness-of-fit test without a rate,
    directly or through a module-level helper, is named; with a rate (or no statistics) it
    is not."""
    (tmp_path / "test_example.py").write_text('''
import pytest
from scipy import stats
from stat_tolerance import FAMILY_ALPHA

LEVEL = FAMILY_ALPHA / 2


def _uniform(x):
    return stats.kstest(x, "uniform").pvalue > 1e-4


def test_direct():
    assert stats.kstest([0.1, 0.5], "uniform").pvalue > 1e-4


def test_through_a_helper():
    assert _uniform([0.2])


def test_through_a_constant():
    assert LEVEL > 0


@pytest.mark.false_alarm(1e-4)
def test_declared():
    assert stats.kstest([0.1, 0.5], "uniform").pvalue > 1e-4


def test_arithmetic():
    assert 1 + 1 == 2
''')
    assert undeclared_statistical_tests(tmp_path) == [
        "test_example.py::test_direct", "test_example.py::test_through_a_helper", "test_example.py::test_through_a_constant"]


def test_budget_is_the_sum_of_the_cases_that_declare_a_rate():
    cases = [Declaration("t.py::a[1]", 1e-3, None), Declaration("t.py::a[2]", 1e-3, None),
             Declaration("t.py::b", None, 0.2), Declaration("t.py::c", 0.0, None)]
    assert total_false_alarm(cases) == pytest.approx(2e-3)
    lines = budget_lines(cases, "example", detail=3)
    assert "3 statistical cases" in lines[0] and "0.20%" in lines[0] and "within" in lines[0]
    assert lines[1].strip().startswith("2.00e-03  t.py::a") and "2 cases x 0.001" in lines[1]
    assert "0.2  t.py::b" in lines[-1]
    assert "OVER" in budget_lines([Declaration("t.py::d", SUITE_BUDGET * 1.5, None)], "example")[0]


def test_whole_suite_is_within_the_budget():
    """``scripts/flakiness_budget.py`` collects every case (``-m ''``: slow and CmdStan's too)
    and sums their declared rates: within SUITE_BUDGET, and no statistical test undeclared."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "flakiness_budget.py"), "--detail", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "within the budget of 2%" in proc.stdout, proc.stdout
    # Not vacuous: the agreement, SBC and reference tests are among the declared cases.
    declared = int(proc.stdout.split(": ", 1)[1].split(" statistical cases")[0])
    assert declared >= 80, proc.stdout
