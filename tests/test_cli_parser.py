"""The command line as a new user meets it: one-line errors that point to ``--help``, a
suggestion for a near miss (command, model, scenario, family, backend, method, option), the
model functions of a file given without ``:NAME``, one name for each option across
subcommands, and help that states every default. In-process: nothing here samples."""

import argparse
import textwrap

import pytest

from polyppl import __version__
from polyppl.cli import build_parser, main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"polyppl {__version__}"


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["comapre", "eight-schools"], ["polyppl: error:", "'comapre'", "did you mean 'compare'?", "(see polyppl --help)"]),
        (["compare", "eight-schools", "--stan-engine", "cmdstan"],
         ["polyppl compare: error: argument --stan-engine", "did you mean 'cmdstanpy'", "(see polyppl compare --help)"]),
        (["compare", "eight-schools", "--methods", "nuts,adiv"], ["unknown method 'adiv'", "did you mean 'advi'?"]),
        (["compare", "eight-schools", "--backends", "pymc,numpyr"], ["unknown backend 'numpyr'", "did you mean 'numpyro'?"]),
        (["compare", "eight-schools", "--famly-alpha", "0.1"], ["unrecognized arguments: --famly-alpha 0.1", "'--alpha'"]),
        (["sbc", "eight-schools", "--simulatons", "3"], ["polyppl sbc: error:", "did you mean '--simulations'?"]),
        (["compare", "eight-schools", "--chains", "x"], ["argument --chains: 'x' is not a whole number"]),
        # Earlier versions' spellings answer with the one name each thing has now.
        (["compare", "eight-schools", "--family-alpha", "0.1"], ["use --alpha"]),
        (["report", "--output", "x.html"], ["use --report"]),
        (["bench", "--model", "beta-binomial"], ["the model as the first argument"]),
        (["repro", "centered-funnel", "--seeds", "3"], ["use --seed-count"]),
        (["compare", "eight-schools", "--warmup", "200"], ["use --tune"]),
    ],
)
def test_argument_errors_are_one_line_with_a_suggestion(capsys, args, fragments):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err  # not argparse's usage block first
    assert "usage:" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["show", "eigth-schools"], ["polyppl show: error: unknown model 'eigth-schools'", "did you mean 'eight-schools'?"]),
        (["show", "eight-schools", "--scenario", "clasic"], ["unknown scenario", "did you mean 'classic'?"]),
        (["show", "beta-binomial", "--parametrization", "marginl"], ["did you mean 'marginal'?"]),
        (["repro", "centred-funnel"], ["unknown scenario 'centred-funnel'", "did you mean 'centered-funnel'?"]),
        (["show", "--formula", "success ~ treated", "--data", "examples/seed-ab.csv", "--family", "bernouli"],
         ["unknown family 'bernouli'", "did you mean 'bernoulli'?"]),
        (["run", "eight-schools"], ["name the backend: --backends"]),
        (["run", "eight-schools", "--backends", "stan,pymc"], ["run fits one backend", "compare"]),
        # `run --backend` still parses (the spelling of earlier versions), into --backends.
        (["run", "eight-schools", "--backend", "jags"], ["unknown backend 'jags'"]),
    ],
)
def test_bad_names_get_a_suggestion(capsys, args, fragments):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


MODELS_FILE = textwrap.dedent("""
    from polyppl import spec as s

    def tiny():
        model = s.Model("tiny", (s.Param("mu", s.Normal(0.0, 1.0)),
                                 s.Observed("y", s.Normal(s.Var("mu"), 1.0), ("i",))))
        return model, s.Dataset(values={"y": [0.1, -0.3]}, coords={"i": (0, 1)})

    def tiny_wide():
        return tiny()

    def _helper():
        pass

    CONSTANT = 3
""")


def test_a_file_without_name_lists_its_models(capsys, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(MODELS_FILE)
    code, _, err = run_cli(capsys, "show", path)
    assert code == 2
    assert f"{path}: name the model, FILE.py:NAME; NAME can be: tiny, tiny_wide (e.g. {path}:tiny)" in err
    code, _, err = run_cli(capsys, "show", f"{path}:tinny")
    assert code == 2
    assert "defines no 'tinny' (did you mean 'tiny'" in err and "NAME can be: tiny, tiny_wide" in err
    code, out, _ = run_cli(capsys, "show", f"{path}:tiny")
    assert code == 0 and "mu" in out


def subparsers() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_option_has_help_and_states_its_default():
    for name, parser in subparsers().items():
        assert parser.description, f"polyppl {name} has no description"
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"polyppl {name} {action.option_strings or action.dest}: no help"
            text = formatter._get_help_string(action)
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in text, f"polyppl {name} {action.option_strings}: default {action.default!r} not stated"


def test_one_vocabulary():
    """The same thing has the same option in every subcommand that has it."""
    parsers = subparsers()
    options = {name: {s for a in p._actions if a.help is not argparse.SUPPRESS for s in a.option_strings}
               for name, p in parsers.items()}
    for name in ("run", "compare", "sbc", "repro", "bench"):
        assert "--backends" in options[name], name
    for name in ("run", "compare", "sbc", "bench", "report"):
        assert "--out" in options[name], name
    for name in ("compare", "sbc", "report"):
        assert "--report" in options[name], name
    for name in ("compare", "sbc"):
        assert "--alpha" in options[name], name
    assert not any({"--backend", "--family-alpha", "--output", "--model" if n != "report" else "-"} & o
                   for n, o in options.items())
    positional = {name: [a.dest for a in p._actions if not a.option_strings] for name, p in parsers.items()}
    for name in ("run", "compare", "sbc", "show"):
        assert positional[name][-1] == "model", name
    assert positional["bench"][-1] == "models"
