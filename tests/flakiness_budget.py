"""The suite's flakiness budget: how likely a correct change fails the suite by chance.

Every statistical test declares, with ``@pytest.mark.false_alarm(rate)``, the chance that
it fails although the code is right (per case of a parametrised test; tests/stat_tolerance.py
says how the rates are derived), and a test asserting power against a deliberate break
declares the chance that the break escapes with ``@pytest.mark.power(miss)``. The budget is
Bonferroni's bound, the sum of the false-alarm rates of the cases that ran; it must stay
within ``stat_tolerance.SUITE_BUDGET``. Power misses are listed beside it, not added: they
are measured (or bounded) rates of a broken implementation passing, not chances that a
correct one fails.

Three users: ``tests/conftest.py`` prints the budget of the cases that ran at the end of
every run; ``scripts/flakiness_budget.py`` prints it for the whole suite (``-m slow`` and
CmdStan's cases included) and exits 1 over budget; ``tests/test_flakiness_budget.py``
fails when the whole suite is over budget or a statistical test declares no rate
(:func:`undeclared_statistical_tests`, a static reading of the test files).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stat_tolerance import SUITE_BUDGET

MARKERS = {
    "false_alarm": "false_alarm(rate): the chance that this case fails although the code is right "
                   "(per parametrised case); summed into the suite's flakiness budget (tests/flakiness_budget.py)",
    "power": "power(miss): the chance that the deliberate break this case asserts is caught escapes "
             "(listed beside the flakiness budget)",
}


@dataclass(frozen=True)
class Declaration:
    """One test case's declared rates (``None``: not declared)."""

    nodeid: str
    false_alarm: float | None
    miss: float | None


def declaration(item) -> Declaration:
    """The rates a collected pytest item declares with its markers."""

    def rate(name: str) -> float | None:
        marker = item.get_closest_marker(name)
        if marker is None:
            return None
        value = float(marker.args[0])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{item.nodeid}: @pytest.mark.{name}({value}) is not a probability")
        return value

    return Declaration(item.nodeid, rate("false_alarm"), rate("power"))


def total_false_alarm(declarations: Iterable[Declaration]) -> float:
    """Bonferroni's bound on the chance that any of these cases fails by chance."""
    return sum(d.false_alarm or 0.0 for d in declarations)


def _test_name(nodeid: str) -> str:
    """``file::test`` without the parametrisation: the unit a rate is stated for."""
    return nodeid.partition("[")[0]


def budget_lines(declarations: list[Declaration], scope: str, detail: int = 0) -> list[str]:
    """The budget as printed: the sum, its limit, and the ``detail`` largest contributors
    (by test function, cases summed) and every power test's miss rate."""
    declared = [d for d in declarations if d.false_alarm is not None]
    total = total_false_alarm(declared)
    verdict = "within" if total <= SUITE_BUDGET else "OVER"
    lines = [f"flakiness budget ({scope}): {len(declared)} statistical cases declare false-alarm rates; "
             f"the chance that any fails by chance is at most {total:.2%} (Bonferroni), "
             f"{verdict} the budget of {SUITE_BUDGET:.0%}"]
    if detail:
        by_test: dict[str, list[float]] = {}
        for d in declared:
            by_test.setdefault(_test_name(d.nodeid), []).append(d.false_alarm)
        ranked = sorted(by_test.items(), key=lambda kv: -sum(kv[1]))
        for name, rates in ranked[:detail]:
            cases = f"{len(rates)} cases x {rates[0]:.2g}" if len(set(rates)) == 1 and len(rates) > 1 else \
                f"{len(rates)} case{'s' * (len(rates) > 1)}"
            lines.append(f"  {sum(rates):.2e}  {name}  ({cases})")
        misses = sorted({(_test_name(d.nodeid), d.miss) for d in declarations if d.miss is not None})
        if misses:
            lines.append("power tests (chance that the deliberate break escapes, per case; not in the sum):")
            lines.extend(f"  {miss:.2g}  {name}" for name, miss in misses)
    return lines


# --------------------------------------------------------------------------- static check

#: What marks a test as statistical when it refers to it, directly or through a module-level
#: helper, constant or fixture of its file: the tolerance helpers (every name imported from
#: stat_tolerance), the agreement and SBC tests, goodness-of-fit tests and p-values, Monte
#: Carlo standard errors, the skewed backend of power tests, and a stated false-alarm level (a
#: name with ALPHA in it, ``family_alpha``). The CLI's ``--alpha`` is not on the list: tests of
#: the parser name it without any statistics; a test that passes a level passes a constant.
STATISTICAL_NAMES = {"holm", "pair_tests", "bonferroni_threshold", "kstest", "ks_2samp", "chisquare",
                     "simultaneous_band", "judge", "family_alpha", "_binomial_ok", "_disagrees", "pvalue", "p_value",
                     "mcse", "mcse_mean", "skewed_backend"}
STATISTICAL_PATTERN = re.compile(r"ALPHA")


def _referenced(nodes: Iterable[ast.AST]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                names.add(sub.id)
            elif isinstance(sub, ast.Attribute):
                names.add(sub.attr)
            elif isinstance(sub, ast.arg):
                names.add(sub.arg)  # a fixture, by its parameter name
            elif isinstance(sub, ast.keyword) and sub.arg:
                names.add(sub.arg)
    return names


def _is_seed(name: str, imported: set[str]) -> bool:
    return name in imported or name in STATISTICAL_NAMES or bool(STATISTICAL_PATTERN.search(name))


def _declares(function: ast.FunctionDef, module_marks: set[str]) -> bool:
    marks = set(module_marks)
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute):
            marks.add(target.attr)
    return bool(marks & set(MARKERS))


def undeclared_statistical_tests(tests_dir: Path) -> list[str]:
    """``file::test`` of every test function in ``tests_dir/test_*.py`` that is statistical
    (refers to a name of :data:`STATISTICAL_NAMES`, a stat_tolerance name or an ``ALPHA``,
    itself or through its file's module-level helpers, constants and fixtures) and declares
    neither ``false_alarm`` nor ``power``."""
    undeclared = []
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                    and node.module == "stat_tolerance" for alias in node.names}
        definitions: dict[str, list[ast.AST]] = {}
        module_marks: set[str] = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                definitions.setdefault(node.name, []).append(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            definitions.setdefault(sub.id, []).append(node)
                            if sub.id == "pytestmark":
                                module_marks |= {m for m in _referenced([node.value]) if m in MARKERS}
        uses = {name: _referenced(nodes) for name, nodes in definitions.items()}
        statistical = {name for name, refs in uses.items() if any(_is_seed(r, imported) for r in refs)}
        while True:  # module-level names that use statistical ones, to a fixed point
            more = {name for name, refs in uses.items() if name not in statistical and refs & statistical}
            if not more:
                break
            statistical |= more
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name in statistical \
                    and not _declares(node, module_marks):
                undeclared.append(f"{path.name}::{node.name}")
    return undeclared
