"""``polyppl show``: a model's spec and the Stan program generated from it, without sampling."""

from __future__ import annotations

import argparse

from polyppl.cli.common import add_model_arguments, problem_from


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("show", help="print a model's spec and its generated Stan program (no sampling)",
                            description="Print the spec of a built-in model, FILE.py:NAME or a --formula with its "
                            "data, and the Stan program generated from it.")
    add_model_arguments(parser)
    parser.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    problem = problem_from(args)

    from polyppl.backends.stan.program import stan_program
    from polyppl.render.spec_text import model_text
    from polyppl.spec import SpecError

    print(problem.describe())
    print()
    print(model_text(problem.model, problem.dataset))
    print()
    if problem.model.source is not None:
        try:
            regenerated = stan_program(problem.model.density_model())
        except SpecError as exc:
            # An elementwise choice over a loop's rows (a cdf's stable form in its tails) has
            # no Stan expression; the Stan column never needs one, it runs the program.
            print(f"The Stan program is not regenerated from the lowered spec ({exc}); PyMC and NumPyro "
                  "compile the spec above, and the Stan column runs your program unchanged.")
            return 0
        print("Stan program regenerated from the lowered spec (PyMC and NumPyro compile the same spec their own "
              "way; the Stan column runs your program unchanged):")
        print()
        print(regenerated, end="")
        return 0
    print("Stan program (generated from this spec; PyMC and NumPyro compile the same spec their own way):")
    print()
    print(stan_program(problem.model.density_model()), end="")
    return 0
