"""A Stan program, with its data, lowered to a spec model: vectorized, never unrolled.

How each block becomes nodes:

* ``data`` and ``transformed data`` are values (``interpret.py`` runs the latter once with
  NumPy); the data the model uses become :class:`Data` nodes; an int array used as an index
  (``alpha[county[n]]``) becomes a 0-based index node (``index_of``); integer scalars are
  constants.
* ``parameters``: one :class:`Param` per parameter, in Stan's names and shapes. A parameter
  with one ``~`` (or ``target += *_lpdf``) on the whole of it whose family matches its
  constraint takes that family as its distribution (``real<lower=0> tau; tau ~ cauchy(0, 5)``
  is a half-Cauchy); one without any is flat on its constraint (Flat, HalfFlat, Uniform).
* ``transformed parameters``: one :class:`Deterministic` per variable, from its value at
  the end of the block.
* ``model``: local variables are inlined; each ``~`` or ``target +=`` on the whole of a data
  variable is an :class:`Observed` node of that variable; terms of data alone are constants
  and dropped (the check is up to a constant).

A ``for`` loop runs once, symbolically: its variable ``n`` stands for every iteration at
once, so ``y[n]`` is the vector ``y`` and ``alpha[county[n]]`` is ``alpha`` indexed by the
whole ``county``; an assignment ``mu[n] = ...`` defines all of ``mu``. A loop that reads what
an earlier iteration wrote (a recursion) is refused, as is anything else outside the subset,
by an :class:`Unsupported` naming the construct and line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from polyppl import spec as s
from polyppl.models.stan_program import (
    densities, functions, interpret, loop_locals, loops, rng, types, vector_recursions,
)
from polyppl.models.stan_program.interpret import FUNCTIONS as DATA_FUNCTIONS
from polyppl.models.stan_program.interpret import Unsupported, evaluate, shape_of
from polyppl.models.stan_program.symbols import BACKENDS_WORDS, Sym, unsupported
from polyppl.models.stan_program.symbols import assigned_names as _assigned_names
from polyppl.models.stan_program.symbols import element_kind as _element_kind
from polyppl.models.stan_program.symbols import names as _names
from polyppl.models.stan_program.parse import (
    ArrayExpr, Assign, Decl, FnCall, For, If, Indexed, Name, Num, Op, Program, Slice, StanExpr, StanType, Statement,
    TargetIncrement, Ternary, Tilde, While,
)

@dataclass
class _Loop:
    variable: str
    size: int
    dim: str | None = None
    assigned: set[str] = field(default_factory=set)
    #: Variables declared inside the loop's body: one value per iteration.
    locals: set[str] = field(default_factory=set)
    #: The first value of the variable (a loop over part of a range starts above 1; ``loops.py``).
    start: int = 1
    #: The dim a loop over all of a range takes when its variable indexes no declared dim.
    default_dim: str | None = None
    body: tuple = ()
    line: int = 0
    #: What the body assigns, and the recursions it holds (``loops.py``).
    writes: set[str] = field(default_factory=set)
    recursions: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Term:
    """One ``~`` or ``target += family_lpdf(...)``: a family's log density of a value."""

    family: str
    value: Sym
    args: tuple[tuple[str, Sym], ...]
    line: int


#: Stan's distribution -> (spec family, spec argument names in Stan's order).
DISTRIBUTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "normal": ("normal", ("mu", "sigma")),
    "student_t": ("student_t", ("nu", "mu", "sigma")),
    "cauchy": ("cauchy", ("mu", "sigma")),
    "beta": ("beta", ("alpha", "beta")),
    "gamma": ("gamma", ("alpha", "beta")),
    "exponential": ("exponential", ("rate",)),
    "uniform": ("uniform", ("lower", "upper")),
    "binomial": ("binomial", ("n", "p")),
    "binomial_logit": ("binomial_logit", ("n", "logit_p")),
    "beta_binomial": ("beta_binomial", ("n", "alpha", "beta")),
    "bernoulli": ("bernoulli", ("p",)),
    "bernoulli_logit": ("bernoulli_logit", ("logit_p",)),
    "poisson": ("poisson", ("rate",)),
    "poisson_log": ("poisson_log", ("log_rate",)),
    "lognormal": ("lognormal", ("mu", "sigma")),
    "inv_gamma": ("inv_gamma", ("alpha", "beta")),
    "double_exponential": ("double_exponential", ("mu", "sigma")),
    "logistic": ("logistic", ("mu", "sigma")),
    "weibull": ("weibull", ("alpha", "sigma")),
    "chi_square": ("chi_square", ("nu",)),
    "neg_binomial_2": ("neg_binomial_2", ("mu", "phi")),
    "neg_binomial_2_log": ("neg_binomial_2_log", ("log_mu", "phi")),
    "lkj_corr_cholesky": ("lkj_corr_cholesky", ("eta",)),
}
#: Stan's GLM densities: (spec family, the arguments after ``y | x, alpha, beta``).
GLMS = {"normal_id_glm": ("normal", ("sigma",)), "bernoulli_logit_glm": ("bernoulli_logit", ()),
        "poisson_log_glm": ("poisson_log", ())}
#: Where a location-scale family on a parameter declared <lower=0> is a half family (location 0).
HALF = {"normal": ("half_normal", "mu"), "cauchy": ("half_cauchy", "mu"), "student_t": ("half_student_t", "mu")}
#: Elementwise functions of the spec, by their Stan names.
ELEMENTWISE = {"exp": "exp", "log": "log", "log1p": "log1p", "sqrt": "sqrt", "inv_logit": "inv_logit", "logit": "logit",
               "lgamma": "lgamma"}
#: Stan's functions of log gammas, as the spec's lgamma of their arguments.
LOG_GAMMA_COMBINATIONS = {
    "lbeta": lambda a, b: s.lgamma(a) + s.lgamma(b) - s.lgamma(a + b),
    "lchoose": lambda n, k: s.lgamma(n + 1.0) - s.lgamma(k + 1.0) - s.lgamma(n - k + 1.0),
}
_SUFFIXES = ("_lpdf", "_lupdf", "_lpmf", "_lupmf")
#: Stan's matrix functions the lowering takes (``Lowering._matrix_function``).
MATRICES = frozenset({"gp_exp_quad_cov", "diag_matrix", "cholesky_decompose"})
#: Stan's functions that repeat a scalar: (number of sizes, the kind of the result).
REPEATS = {"rep_vector": (1, "vector"), "rep_row_vector": (1, "row_vector"), "rep_matrix": (2, "matrix"),
           "rep_array": (1, "array")}


@dataclass
class Lowered:
    model: s.Model
    dataset: s.Dataset
    #: The functions of parameters it lowered whose gradient Stan approximates.
    loose_gradients: tuple[s.LooseGradient, ...] = ()


class Lowering:
    """One program and its data (``data``: the data block's values) lowered to a spec model."""

    def __init__(self, program: Program, data: dict[str, object], name: str) -> None:
        self.program, self.name = program, name
        self.values: dict[str, object] = dict(data)  # data and transformed data, by name
        self.types: dict[str, StanType] = {d.name: d.type for d in program.data}
        self.dim_sizes: dict[str, int] = {}
        self.syms: dict[str, Sym] = {}  # parameters, transformed parameters, locals
        self.loops: list[_Loop] = []
        self.terms: list[Term] = []
        self.index_nodes: dict[str, s.Data] = {}
        self.index_values: dict[str, np.ndarray] = {}
        self.declared: dict[str, Decl] = {}
        self.scalar_terms: list[tuple[int, s.Expr]] = []  # target += of a scalar expression
        self.synthetic_dims: dict[str, tuple[str, ...]] = {}  # data the lowering adds (zeros_N), by dims  # variables declared without a value, until assigned
        self.block = "model"
        self.loop_state = loops.LoopState()
        self.local_vectors: dict[str, loop_locals.LocalVector] = {}  # vectors declared in a loop's body
        self.user_functions = functions.definitions(program)
        self.calling: list[str] = []  # the user functions being inlined, innermost last
        self.drawn: list[s.Conditional] = []  # _rng calls of generated quantities (rng.py)
        self.loose_gradients: dict[str, s.LooseGradient] = {}  # densities.APPROXIMATE_GRADIENTS it called

    # ------------------------------------------------------------------ the whole program

    def lower(self) -> Lowered:
        program = self.program
        functions.check_no_solver((program.transformed_data, program.transformed_parameters, program.model,
                                   program.generated_quantities))
        for statement in program.transformed_data:
            if isinstance(statement, Decl):
                self.types[statement.name] = statement.type
        try:
            interpret.run(program.transformed_data, self.values)
        except (IndexError, ValueError, TypeError) as exc:
            raise Unsupported(program.transformed_data[0].line if program.transformed_data else 0,
                              f"transformed data could not be run with NumPy ({exc})") from None
        for decl in program.parameters:
            self._check_parameter_type(decl)
            self.syms[decl.name] = self._declared_sym(decl, s.Var(decl.name))
        deterministics = self._deterministics(program.transformed_parameters, "transformed parameters")
        before_model = dict(self.syms)
        self.block = "model"
        self._run(loop_locals.scratch_vectors_into_loops(program.model))
        self.syms = before_model  # the model block's locals are not seen by generated quantities
        self.notes: list[str] = []
        generated = self._generated_quantities(program.generated_quantities)
        params, observed, factors = self._distributions()
        nodes = self._order(params, deterministics) + observed + factors
        if generated:
            try:
                s.Model(self.name, tuple(self._data_nodes(nodes + generated) + nodes + generated))
                nodes += generated
            except s.SpecError as exc:
                self.notes.append(f"generated quantities left out of the comparison: {exc}")
            except Unsupported as exc:
                self.notes.append(f"generated quantities left out of the comparison: {exc.what}")
        data_nodes = self._data_nodes(nodes)
        model = s.Model(self.name, tuple(data_nodes + nodes), description="\n".join(self.notes))
        values = {n.name: self._data_value(n) for n in data_nodes}
        values.update({o.name: np.asarray(self.values[o.name]) for o in observed})
        coords = {d: tuple(range(1, n + 1)) for d, n in self.dim_sizes.items() if d in model.dims}
        dataset = s.Dataset(values, coords, "Stan JSON data")
        s.check_dataset(model, dataset)
        return Lowered(model, dataset, tuple(self.loose_gradients.values()))

    def _deterministics(self, statements: tuple[Statement, ...], block: str) -> list[s.Deterministic]:
        """A block of assignments (transformed parameters, generated quantities) run
        symbolically: one Deterministic per variable it declares, from its final value."""
        self.block = block
        self._run(statements)
        loops.complete(self)
        vector_recursions.complete(self)
        out = []
        for decl in (st for st in statements if isinstance(st, Decl) and not st.nested):
            if decl.name not in self.syms:
                raise unsupported(decl.line, f"{decl.name}, never assigned as a whole (or in one loop over all of it),")
            value = self.syms[decl.name]
            declared = self._dims(decl.type)
            if not s.same_dims(value.dims, declared) or value.nloop:
                raise unsupported(decl.line, f"{decl.name}: a value of dims {value.dims} for dims {declared}")
            out.append(s.Deterministic(decl.name, value.expr, declared))
            self.syms[decl.name] = self._declared_sym(decl, s.Var(decl.name))
        return out

    def _generated_quantities(self, statements: tuple[Statement, ...]) -> list:
        """Generated quantities as deterministics, statement by statement: a statement
        outside the subset (a ``_rng`` draw, most often) leaves out what it assigns and what
        depends on it, with a note in the model's description; the program still computes
        them on Stan, and PyMC and NumPyro compare the rest."""
        self.block = "generated quantities"
        left_out: set[str] = set()
        for statement in statements:
            try:
                self._statement(statement)
            except Unsupported as exc:
                names = _assigned_names(statement)
                left_out |= names
                for name in names:
                    self.syms.pop(name, None)
                self.notes.append(f"left out of the comparison: {', '.join(sorted(names)) or 'a statement'} "
                                  f"(line {exc.line}: {exc.what})")
        loops.complete(self)
        vector_recursions.complete(self)
        out = []
        for decl in (st for st in statements if isinstance(st, Decl) and not st.nested):
            value = self.syms.get(decl.name)
            declared = self._dims(decl.type)
            if decl.name in left_out or value is None or not s.same_dims(value.dims, declared) or value.nloop:
                if decl.name not in left_out:
                    self.notes.append(f"left out of the comparison: {decl.name} (line {decl.line}: not assigned "
                                      "as a whole, or in one loop over all of it)")
                continue
            out.append(s.Deterministic(decl.name, value.expr, declared))
        return rng.with_draws(self, out)

    def _check_parameter_type(self, decl: Decl) -> None:
        if decl.type.base not in types.PARAMETER_TYPES:
            raise unsupported(decl.line, f"the parameter type {decl.type.base} ({decl.name})")

    # ------------------------------------------------------------------ dims and declarations

    def _dim(self, size_expr: StanExpr) -> str:
        named = functions.size_dim(self, size_expr)
        if named is not None:
            return named
        size = int(evaluate(size_expr, self.values))
        name = size_expr.name if isinstance(size_expr, Name) else f"n{size}"
        self.dim_sizes.setdefault(name, size)
        return name

    def _dims(self, stan_type: StanType) -> tuple[str, ...]:
        return types.square_dims(stan_type, tuple(self._dim(e) for e in stan_type.array_sizes + stan_type.shape),
                                 self._column_dim)

    def _column_dim(self, dim: str) -> str:
        """A square matrix's second dim, of the first's size."""
        column = s.column_dim(dim)
        self.dim_sizes.setdefault(column, self.dim_sizes[dim])
        return column

    def _declared_sym(self, decl: Decl, expr: s.Expr) -> Sym:
        base = types.KINDS.get(decl.type.base, decl.type.base)
        kind = "array" if decl.type.array_sizes else (base if base in ("vector", "row_vector", "matrix") else "scalar")
        return Sym(expr, self._dims(decl.type), kind, whole=decl.name)

    def _data_sym(self, name: str, line: int) -> Sym:
        value = self.values[name]
        stan_type = self.types[name]
        is_int = stan_type.base == "int"
        if np.ndim(value) == 0:
            if is_int:
                return Sym(s.Const(float(value)), (), "scalar", int_value=int(value))
            return Sym(s.Var(name), (), "scalar", whole=name)
        kind = "array" if stan_type.array_sizes else stan_type.base
        return Sym(s.Var(name), self._dims(stan_type), kind, whole=name, int_data=name if is_int else None)

    # ------------------------------------------------------------------ statements

    def _run(self, statements: tuple[Statement, ...]) -> None:
        for statement in statements:
            self._statement(statement)

    def _statement(self, st: Statement) -> None:
        if isinstance(st, Decl):
            if self.loops:
                self._loop_local(st)
            elif st.value is not None:
                self.syms[st.name] = self._value_for(st.name, self._expr(st.value), self._dims(st.type), st.line)
            else:
                self.syms.pop(st.name, None)
                self.declared[st.name] = st
        elif isinstance(st, Assign):
            self._assign(st)
        elif isinstance(st, Tilde):
            self._tilde(st)
        elif isinstance(st, TargetIncrement):
            self._target(st.value, st.line)
        elif isinstance(st, For):
            self._for(st)
        elif isinstance(st, If):
            if self.loops and _names(st.condition) & {lp.variable for lp in self.loops}:
                raise unsupported(st.line, "an if whose condition changes from one iteration of a loop to the next")
            condition = self._data_value_of(st.condition, "the condition of an if")
            self._run(st.then if condition else st.otherwise)
        elif isinstance(st, While):
            loops.run_while(self, st)
        else:
            raise unsupported(st.line, f"{getattr(st, 'kind', type(st).__name__)} in the {self.block} block")

    def _data_value_of(self, expr: StanExpr, what: str):
        try:
            return evaluate(expr, self.values)
        except Unsupported:
            raise unsupported(expr.line, f"{what} that depends on parameters") from None

    def _constant_or_none(self, expr: StanExpr):
        """The value of an expression of data alone, or None where it reads parameters."""
        try:
            return evaluate(expr, self.values)
        except (Unsupported, KeyError):
            return None

    def _value_for(self, name: str, value: Sym, dims: tuple[str, ...], line: int) -> Sym:
        if not s.same_dims(value.dims, dims) and not (value.dims == () and not dims):
            raise unsupported(line, f"assigning a value of dims {value.dims or '()'} to {name} (dims {dims or '()'})")
        return replace(value, whole=None, int_data=None)

    def _assign(self, st: Assign) -> None:
        target = st.target
        if loop_locals.assign_element(self, st) or vector_recursions.assign_row(self, st) \
                or loops.assign_part(self, st):
            return
        if isinstance(target, Name) and self.loops and target.name not in self.loops[-1].locals \
                and loops.reduce(self, st):
            return
        value = self._expr(st.value)
        if st.op != "=":
            current = self._expr(target)
            value = self._binary(st.op[:-1], current, value, st.line)
        if isinstance(target, Name):
            if self.loops and target.name in self.loops[-1].locals and target.name in self.local_vectors:
                loop_locals.assign_whole(self, target.name, value, st.line)
                return
            if self.loops and target.name in self.loops[-1].locals:
                self._set_loop_local(target.name, value, st.line)
                return
            if self.loops:
                raise unsupported(st.line, f"assigning all of {target.name} inside a loop (a value carried across iterations)")
            dims = self._declared_dims(target.name, st.line)
            self.syms[target.name] = self._value_for(target.name, value, dims, st.line)
            return
        if isinstance(target, Indexed) and isinstance(target.base, Name):
            name = target.base.name
            dims = self._declared_dims(name, st.line)
            loop_vars = [i.name for i in target.indexes if isinstance(i, Name)]
            if len(loop_vars) != len(target.indexes) or [lp.variable for lp in self.loops[:len(loop_vars)]] != loop_vars:
                raise unsupported(st.line, f"assigning part of {name} (only x[n] = ... inside loops over all of x)")
            for loop, dim in zip(self.loops, dims):
                if loop.size != self.dim_sizes[dim]:
                    raise unsupported(st.line, f"a loop over part of {name}")
                loop.dim = loop.dim or dim
                if loop.dim != dim:
                    raise unsupported(st.line, f"a loop whose variable indexes dims {loop.dim} and {dim}")
            if name in s.free_vars(value.expr):
                raise unsupported(st.line, f"a loop in which {name} depends on an earlier iteration (a recursion)")
            for loop in self.loops:
                loop.assigned.add(name)
            self._check_loop_value(value, len(loop_vars), st.line)
            self.syms[name] = Sym(value.expr if value.nloop == len(dims) or value.dims == dims
                                  else self._broadcast_to(value, dims, st.line), dims,
                                  "vector" if len(dims) == 1 else "matrix")
            return
        raise unsupported(st.line, "this assignment")

    def _loop_local(self, st: Decl) -> None:
        """A variable declared in a loop's body: one value per iteration, which the lowering
        holds as a value over the loop's dim (``int irat = rat[n];`` is all of ``rat``)."""
        if loop_locals.declare(self, st):
            return
        self.loops[-1].locals.add(st.name)
        self.syms.pop(st.name, None)
        if st.value is not None:
            self._set_loop_local(st.name, self._expr(st.value), st.line)

    def _set_loop_local(self, name: str, value: Sym, line: int) -> None:
        if value.dims[value.nloop:]:
            raise unsupported(line, f"a value that is not a scalar for {name}")
        self.syms[name] = replace(value, whole=None)

    def _broadcast_to(self, value: Sym, dims: tuple[str, ...], line: int) -> s.Expr:
        """``x[n] = a`` for every n, with ``a`` the same in every iteration: ``a`` over the dims."""
        if value.dims:
            raise unsupported(line, f"an element assignment of a value of dims {value.dims} to dims {dims}")
        return s.Binary("+", value.expr, s.Var(self._zeros(dims)))

    def _zeros(self, dims: tuple[str, ...]) -> str:
        """A data array of zeros over ``dims``, the lowering's way to give a scalar those dims
        (the spec has no broadcast to dims of its own)."""
        name = "zeros_" + "_".join(dims)
        self.values[name] = np.zeros(tuple(self.dim_sizes[d] for d in dims))
        self.synthetic_dims[name] = dims
        return name

    def _check_loop_value(self, value: Sym, nloop: int, line: int) -> None:
        if value.nloop not in (0, nloop):
            raise unsupported(line, "nested loops whose values vary along different loops")

    def _declared_dims(self, name: str, line: int) -> tuple[str, ...]:
        declared = self.declared.get(name)
        if declared is None:
            if name in self.syms:
                return self.syms[name].dims
            raise unsupported(line, f"assigning to {name}")
        self.types[name] = declared.type
        return self._dims(declared.type)

    def _for(self, st: For) -> None:
        if st.end is None:
            raise unsupported(st.line, "a foreach loop")
        if vector_recursions.recursion(self, st):
            return
        start = self._data_value_of(st.start, "a loop bound")
        end = self._data_value_of(st.end, "a loop bound")
        if np.ndim(start) or np.ndim(end):
            raise unsupported(st.line, "a loop bound that is not one integer")
        start, end = int(start), int(end)
        if end < start:
            return
        loop = _Loop(st.variable, end - start + 1, start=start, body=st.body, line=st.line,
                     writes=_assigned_names(st))
        if start != 1:
            loop.dim = loops.partial_loop_dim(self, st.end, start, end)
        else:
            loop.default_dim = self._dim(st.end)
        terms_before, scalar_terms_before = len(self.terms), len(self.scalar_terms)
        self.loops.append(loop)
        try:
            self._run(st.body)
        finally:
            for name in self.loops.pop().locals:
                self.syms.pop(name, None)
                self.local_vectors.pop(name, None)
        loops.finish(self, loop, terms_before, scalar_terms_before)

    # ------------------------------------------------------------------ densities

    def _tilde(self, st: Tilde) -> None:
        if st.truncation is not None:
            # T[L, U] divides the density by the probability of [L, U]: a constant where the
            # family's arguments and the bounds are data (a prior truncated at its parameter's
            # bound), dropped as ~ drops constants; of parameters it needs the family's cdf.
            bounds = [b for b in st.truncation if b is not None]
            if not all(self._is_data_only(e) for e in (*st.args, *bounds)):
                self._truncation(st)
        if functions.is_user_density(self, st.distribution):
            value = self._call(functions.density_call(self, st.distribution, st.value, st.args, st.line))
            if value.dims:
                raise unsupported(st.line, f"{st.distribution}: a density that is not a scalar")
            self.scalar_terms.append((st.line, value.expr))
            return
        self._add_term(st.distribution, self._expr(st.value), tuple(self._expr(a) for a in st.args), st.line)

    def _truncation(self, st: Tilde) -> None:
        """T[L, U] whose bounds or the family's arguments are parameters: minus the log
        probability of [L, U] (densities.truncation), once per value (per iteration of its
        loops)."""
        value = self._expr(st.value)
        if value.dims[value.nloop:]:
            raise unsupported(st.line, "truncation T[,] of a vector")
        lower, upper = (None if b is None else self._expr(b) for b in st.truncation)
        args = [self._expr(a) for a in st.args]
        present = [b for b in (lower, upper) if b is not None]
        if any(b.dims[b.nloop:] for b in present):
            raise unsupported(st.line, "truncation T[,] with bounds that are not scalars")
        operands = present + args
        self._note_gradients(densities.truncation_functions(st.distribution, lower is not None, upper is not None))
        mass = self._elementwise(operands, lambda *e: densities.truncation(
            st.distribution, e[0] if lower is not None else None,
            (e[1] if lower is not None else e[0]) if upper is not None else None, e[len(present):], st.line), st.line)
        if value.nloop > 1 and not mass.nloop:
            raise unsupported(st.line, "truncation T[,] inside nested loops")
        # As many terms as values: the loop's rows, where the bounds and arguments are the same in each.
        count = self.dim_sizes[value.dims[0]] if value.nloop and not mass.nloop else 1
        total = s.sum_all(mass.expr) if mass.nloop else mass.expr
        self.scalar_terms.append((st.line, s.Call("neg", (total * float(count) if count != 1 else total,))))

    def _note_gradients(self, functions_called: tuple[str, ...]) -> None:
        for function in functions_called:
            if function in densities.APPROXIMATE_GRADIENTS:
                self.loose_gradients[function] = densities.APPROXIMATE_GRADIENTS[function]

    def _target(self, expr: StanExpr, line: int) -> None:
        for sign, summand in _summands(expr, 1):
            if _names(summand) <= set(self.values) - set(self.syms) and not self.loops:
                continue  # a constant: the lowered density equals Stan's up to a constant
            if sign < 0 or not (isinstance(summand, FnCall) and summand.conditional
                                and summand.name.endswith(_SUFFIXES)) or functions.is_user_density(self, summand.name):
                value = self._expr(summand)
                if value.nloop and not value.dims[value.nloop:]:
                    value = Sym(s.sum_all(value.expr), (), "scalar")  # one term per iteration of its loops
                if value.dims:
                    raise unsupported(line, "target += of a vector that is not a *_lpdf / *_lpmf term")
                self.scalar_terms.append((line, s.Call("neg", (value.expr,)) if sign < 0 else value.expr))
                continue
            family = summand.name.rsplit("_", 1)[0]
            args = tuple(self._expr(a) for a in summand.args)
            self._add_term(family, args[0], args[1:], summand.line)

    def _is_data_only(self, expr: StanExpr) -> bool:
        try:
            evaluate(expr, self.values)
            return True
        except (Unsupported, KeyError):
            return False
        except Exception:  # noqa: BLE001 (data-only but NumPy failed: not constant-foldable)
            return False

    def _add_term(self, distribution: str, value: Sym, args: tuple[Sym, ...], line: int) -> None:
        if distribution in ("multi_normal", "multi_normal_cholesky"):
            self.scalar_terms.append((line, self._multi_normal(distribution, value, args, line)))
            return
        if distribution in ("categorical", "categorical_logit"):
            self.scalar_terms.append((line, self._categorical(distribution, value, args, line)))
            return
        if distribution == "dirichlet":
            self.scalar_terms.append((line, self._dirichlet(value, args, line)))
            return
        if distribution == "lkj_corr":
            self.scalar_terms.append((line, self._lkj_corr(value, args, line)))
            return
        if distribution == "std_normal":
            family, names, args = "normal", ("mu", "sigma"), (self._const(0), self._const(1))
        elif distribution in GLMS:
            family, rest = GLMS[distribution]
            x, alpha, beta = args[:3]
            linear = self._binary("+", alpha, self._binary("*", x, beta, line), line)
            names = (DISTRIBUTIONS[family][1][0],) + rest
            args = (linear,) + args[3:]
        elif distribution in DISTRIBUTIONS:
            family, names = DISTRIBUTIONS[distribution]
        else:
            raise unsupported(line, f"the distribution {distribution}")
        if len(args) != len(names):
            raise unsupported(line, f"{distribution} with {len(args)} arguments")
        self.terms.append(Term(family, value, tuple(zip(names, args)), line))

    def _multi_normal(self, distribution: str, value: Sym, args: tuple[Sym, ...], line: int) -> s.Expr:
        """A multivariate normal density of one vector, or of every vector of an array (rows
        of a matrix) with one mean vector and one matrix: a factor, in closed form."""
        own = value.dims[-1:]
        rows = value.dims[:-1]
        if len(args) != 2 or any(a.nloop for a in args) or len(value.dims) not in (1, 2) \
                or value.nloop not in (0, len(rows)) or not (args[0].dims == () or s.same_dims(args[0].dims, own)) \
                or len(args[1].dims) != 2 or not s.same_dims(args[1].dims[:1], own) \
                or self.dim_sizes[args[1].dims[1]] != self.dim_sizes[own[0]]:
            raise unsupported(line, f"{distribution} of these arguments (a vector or an array of vectors, one mean "
                              "vector and one matrix)")
        lower = args[1].expr if distribution == "multi_normal_cholesky" else s.cholesky(args[1].expr)
        size = self.dim_sizes[own[0]]
        if not rows:
            return densities.multi_normal_cholesky(value.expr, args[0].expr, lower, size)
        # Each row a vector: the columns of value' (K, J), less the mean in every column.
        ones = s.Var(self._synthetic(f"ones_{own[0]}_{rows[0]}", np.ones((size, self.dim_sizes[rows[0]])),
                                     (own[0], rows[0])))
        mean = args[0].expr * ones if not args[0].dims else s.diag_pre_multiply(args[0].expr, ones)
        return densities.multi_normal_cholesky_columns(s.transpose(value.expr), mean, lower, size,
                                                       self.dim_sizes[rows[0]])

    def _dirichlet(self, value: Sym, args: tuple[Sym, ...], line: int) -> s.Expr:
        """dirichlet(alpha) of a simplex (or of each simplex of an array in a loop, with one
        alpha or one per simplex): sum((alpha - 1) log(theta)), and where alpha depends on
        parameters its normalising term lgamma(sum(alpha)) - sum(lgamma(alpha)) for each
        simplex, which Stan's ``~`` keeps then (and drops, a constant, where alpha is data)."""
        own = value.dims[value.nloop:]
        if len(args) != 1 or len(own) != 1 or args[0].dims[args[0].nloop:] != own or value.nloop > 1 \
                or args[0].nloop not in (0, value.nloop):
            raise unsupported(line, "dirichlet of these arguments (a simplex and a vector alpha of its size)")
        alpha = args[0]
        ones = None
        if value.nloop:  # a matrix of ones, one row per simplex
            ones = s.Var(self._synthetic(f"ones_{value.dims[0]}_{value.dims[1]}",
                                         np.ones([self.dim_sizes[d] for d in value.dims]), value.dims))
        rows = alpha.expr
        if value.nloop and not alpha.nloop:  # one alpha for every simplex: each row alpha, diag(alpha) ones' transposed
            rows = s.transpose(s.diag_pre_multiply(alpha.expr, s.transpose(ones)))
        kernel = s.sum_all((rows - 1.0) * s.log(value.expr))
        if not s.free_vars(alpha.expr) & set(self.syms):
            return kernel
        if not alpha.nloop:  # its normalising term once per simplex
            copies = self.dim_sizes[value.dims[0]] if value.nloop else 1
            return kernel + copies * (s.lgamma(s.sum_all(alpha.expr)) - s.sum_all(s.lgamma(alpha.expr)))
        # One alpha per simplex: each row's sum, its dot product with the row of ones.
        return kernel + s.sum_all(s.lgamma(s.rows_dot(alpha.expr, ones))) - s.sum_all(s.lgamma(alpha.expr))

    def _lkj_corr(self, value: Sym, args: tuple[Sym, ...], line: int) -> s.Expr:
        """lkj_corr(eta) of a correlation matrix: (eta - 1) log det(Omega), the log
        determinant twice the sum of the logs of its Cholesky factor's diagonal; where eta
        depends on parameters, the part of Stan's normalising term (``do_lkj_constant``) that
        depends on eta, which Stan's ``~`` keeps then (a constant, dropped, where eta is data)."""
        if len(args) != 1 or args[0].dims or args[0].nloop or value.nloop or len(value.dims) != 2:
            raise unsupported(line, "lkj_corr of these arguments (a correlation matrix and a scalar eta)")
        eta = args[0].expr
        log_determinant = 2.0 * s.sum_all(s.log(s.diagonal(s.cholesky(value.expr))))
        if not s.free_vars(eta) & set(self.syms):
            return (eta - 1.0) * log_determinant
        return (eta - 1.0) * log_determinant + densities.lkj_log_normaliser(eta, self.dim_sizes[value.dims[0]])

    def _categorical_rows(self, distribution: str, value: Sym, arg: Sym, line: int) -> s.Expr:
        """categorical(theta[n]) or categorical_logit(eta[n]') of y[n] in a loop over n: one
        vector of probabilities (or logits) per row, a row of a matrix (N, K); each row's
        category picked by a one-hot matrix of the data."""
        rows, dim = arg.dims[0], arg.dims[1]
        y = np.asarray(self.values[value.int_data]).astype(int)
        size = self.dim_sizes[dim]
        if y.min() < 1 or y.max() > size:
            raise Unsupported(line, f"{value.int_data} holds categories outside 1..{size}")
        one_hot = self._synthetic(f"one_hot_{value.int_data}_{dim}", np.eye(size)[y - 1], arg.dims)
        if distribution == "categorical":
            return s.sum_all(s.rows_dot(s.Var(one_hot), s.log(arg.expr)))
        # Column k of every row: the dot product of each row with the k-th unit vector.
        units = [self._synthetic(f"unit_{rows}_{dim}_{k + 1}", np.tile(np.eye(size)[k], (self.dim_sizes[rows], 1)),
                                 arg.dims) for k in range(size)]
        elements = [s.rows_dot(s.Var(unit), arg.expr) for unit in units]
        return s.sum_all(s.rows_dot(s.Var(one_hot), arg.expr) - densities.log_sum_exp_of(elements))

    def _categorical(self, distribution: str, value: Sym, args: tuple[Sym, ...], line: int) -> s.Expr:
        """categorical(theta) or categorical_logit(beta) of integer data, with one vector of
        probabilities (or logits) for every row: the log probability of each row's category,
        picked by the data as an index, summed over the rows."""
        if len(args) == 1 and args[0].nloop == 1 and len(args[0].dims) == 2 and value.nloop == 1 \
                and value.int_data is not None and value.dims == args[0].dims[:1]:
            return self._categorical_rows(distribution, value, args[0], line)
        if len(args) != 1 or args[0].nloop or len(args[0].dims) != 1 or (
                value.int_data is None and value.int_value is None) or len(value.dims) > 1:
            raise unsupported(line, f"{distribution} of these arguments (integer data and one vector)")
        dim = args[0].dims[0]
        if distribution == "categorical":
            log_probability = s.log(args[0].expr)
        else:
            elements = [s.Index(args[0].expr, s.Var(self._constant_index(dim, i, line)))
                        for i in range(1, self.dim_sizes[dim] + 1)]
            log_probability = args[0].expr - densities.log_sum_exp_of(elements)
        if value.int_value is not None:
            return s.Index(log_probability, s.Var(self._constant_index(dim, value.int_value, line)))
        return s.sum_all(s.Index(log_probability, s.Var(self._index_node(value.int_data, dim, line))))

    def _const(self, value: float) -> Sym:
        return Sym(s.Const(float(value)), (), "scalar", int_value=int(value) if float(value).is_integer() else None)

    def _distributions(self) -> tuple[list[s.Param], list[s.Observed], list[s.Factor]]:
        """Each term as a parameter's distribution, an observed node, or a factor."""
        by_param: dict[str, list[Term]] = {}
        observed: list[s.Observed] = []
        loose: list[Term] = []
        params = {d.name: d for d in self.program.parameters}
        for term in self.terms:
            target = term.value.whole
            if target in params and term.value.nloop in (0, len(term.value.dims)):
                by_param.setdefault(target, []).append(term)
            elif target in self.values and target not in self.syms and term.value.dims == self._dims(self.types[target]) \
                    and not any(o.name == target for o in observed) and self._observable(target, term):
                observed.append(s.Observed(target, self._dist(term.family, term.args, term.value.dims, term.line),
                                           term.value.dims))
            else:
                loose.append(term)
        out = []
        for name, decl in params.items():
            terms = by_param.get(name, [])
            param = self._param(decl, terms[0]) if len(terms) == 1 else None
            if param is None:
                param = self._param(decl, None)
                assert param is not None
                loose.extend(terms)
            out.append(param)
        for term in loose:
            if s.FAMILIES[term.family].event_dims:
                raise unsupported(term.line, f"{term.family} other than as the one prior of a parameter of its type")
        increments = [(t.line, s.lpdf(self._dist(t.family, t.args, t.value.dims, t.line), t.value.expr)) for t in loose]
        factors, names = [], set()
        for line, expr in sorted(increments + self.scalar_terms, key=lambda t: t[0]):
            name, count = f"target_line{line}", 1
            while name in names:  # the second term of a line is target_line12_2 (Stan refuses names ending in __)
                count += 1
                name = f"target_line{line}_{count}"
            names.add(name)
            factors.append(s.Factor(name, expr))
        return out, observed, factors

    def _observable(self, name: str, term: Term) -> bool:
        """Whether a term on all of a data variable can be its observed node (a discrete
        family needs int data)."""
        return not s.FAMILIES[term.family].discrete or self.types[name].base == "int"

    def _dist(self, family: str, args: tuple[tuple[str, Sym], ...], dims: tuple[str, ...], line: int) -> s.Dist:
        for arg, sym in args:
            if sym.dims not in ((), dims):
                raise unsupported(line, f"a {family} argument {arg} of dims {sym.dims} for a value of dims {dims or '()'}")
        try:
            return s.families._dist(family, **{k: v.expr for k, v in args})
        except (ValueError, TypeError) as exc:
            raise Unsupported(line, str(exc)) from None

    def _param(self, decl: Decl, term: Term | None) -> s.Param | None:
        """The parameter with ``term`` as its distribution where the family's support is the
        declared constraint (None where it is not: a truncated prior, which stays a factor),
        or, without a term, flat on its constraint."""
        dims = self._dims(decl.type)
        constrained = types.constrained_dist(decl, self._constant_or_none, lambda e: self._expr(e).expr)
        if constrained is not None:
            # Flat on the type or constraint, through Stan's transform; its densities are factors,
            # but for a prior the type keeps as its own family (lkj_corr_cholesky on a
            # cholesky_factor_corr).
            proper = types.PROPER_ON.get(decl.type.base, {})
            if term is not None and term.family in proper:
                return s.Param(decl.name, self._dist(term.family, term.args, (), term.line), dims)
            return s.Param(decl.name, constrained, dims) if term is None else None
        lower, upper = decl.type.bound("lower"), decl.type.bound("upper")
        lo = None if lower is None else self._data_value_of(lower, "a bound")
        hi = None if upper is None else self._data_value_of(upper, "a bound")
        if np.ndim(lo) or np.ndim(hi):
            raise unsupported(decl.line, f"a bound of {decl.name} that differs from element to element")
        support = "real" if lo is None and hi is None else "positive" if lo == 0 and hi is None else (
            "interval" if lo is not None and hi is not None else None)
        if support is None:
            raise unsupported(decl.line, f"the bounds of {decl.name} (lower={lo}, upper={hi}; "
                              "the spec bounds a parameter at 0 below, or at two constants)")
        if term is None:
            dist = s.Flat() if support == "real" else s.HalfFlat() if support == "positive" else s.Uniform(float(lo), float(hi))
            return s.Param(decl.name, dist, dims)
        family, args = term.family, term.args
        if support == "positive" and family in HALF:
            location = dict(args)[HALF[family][1]]
            if location.int_value == 0 or (isinstance(location.expr, s.Const) and location.expr.value == 0):
                family, args = HALF[family][0], tuple((k, v) for k, v in args if k != HALF[family][1])
        if support == "interval" and family == "beta" and (lo, hi) == (0, 1):
            support = "unit"
        if support == "interval":
            # Only uniform on exactly the declared bounds is the parameter's own distribution.
            bounds = [a.expr.value if isinstance(a.expr, s.Const) else None for _, a in args]
            if family == "uniform" and bounds == [float(lo), float(hi)]:
                return s.Param(decl.name, self._dist("uniform", args, dims, term.line), dims)
            return None
        if s.FAMILIES[family].support != support or any(v.dims not in ((), dims) for _, v in args):
            return None
        return s.Param(decl.name, self._dist(family, args, dims, term.line), dims)

    # ------------------------------------------------------------------ expressions

    def _expr(self, expr: StanExpr) -> Sym:
        if isinstance(expr, Num):
            return self._const(expr.value)
        if isinstance(expr, Name):
            for loop in self.loops:
                if loop.variable == expr.name:
                    raise unsupported(expr.line, f"the loop variable {expr.name} used as a value")
            if expr.name in self.syms:
                if expr.name in self.local_vectors:
                    loop_locals.check_whole_read(self, expr.name, expr.line)
                return self.syms[expr.name]
            if expr.name in self.loop_state.partial:
                return loops.whole(self, expr.name, expr.line)
            if expr.name in self.loop_state.rows:
                return vector_recursions.whole(self, expr.name, expr.line)
            if expr.name in self.values:
                return self._data_sym(expr.name, expr.line)
            raise unsupported(expr.line, f"{expr.name} before it has a value")
        if isinstance(expr, Indexed):
            return self._indexed(expr)
        if isinstance(expr, Op):
            if len(expr.args) == 1:
                operand = self._expr(expr.args[0])
                if expr.op == "neg":
                    if isinstance(operand.expr, s.Const):
                        return self._const(-operand.expr.value)
                    return replace(operand, expr=s.Call("neg", (operand.expr,)), whole=None, int_data=None,
                                   int_value=None if operand.int_value is None else -operand.int_value)
                if expr.op == "'" and operand.kind == "matrix" and not operand.nloop:
                    return replace(operand, expr=s.transpose(operand.expr), dims=operand.dims[::-1], whole=None)
                if expr.op == "'" and operand.kind in ("vector", "row_vector") and len(operand.dims) == operand.nloop + 1:
                    # A row of a loop's matrix as a vector: the same values.
                    return replace(operand, kind="vector" if operand.kind == "row_vector" else "row_vector", whole=None)
                raise unsupported(expr.line, f"the operator {expr.op}")
            return self._binary(expr.op, self._expr(expr.args[0]), self._expr(expr.args[1]), expr.line)
        if isinstance(expr, FnCall):
            return self._call(expr)
        if isinstance(expr, (Ternary, ArrayExpr)):
            if self._is_data_only(expr) and np.ndim(evaluate(expr, self.values)) == 0:
                return self._const(float(evaluate(expr, self.values)))
            raise unsupported(expr.line, "a conditional or array expression of parameters")
        raise unsupported(getattr(expr, "line", 0), type(expr).__name__)

    def _binary(self, op: str, a: Sym, b: Sym, line: int) -> Sym:
        if a.int_value is not None and b.int_value is not None and op in ("+", "-", "*", "/"):
            # Stan's integer division truncates toward zero.
            value = {"+": lambda: a.int_value + b.int_value, "-": lambda: a.int_value - b.int_value,
                     "*": lambda: a.int_value * b.int_value, "/": lambda: int(a.int_value / b.int_value)}[op]()
            return self._const(value)
        a, b = loops.align(self, a, b, line)
        loop = self._loop_dims(a, b, line)
        if op in ("+", "-", ".*", "./", "^", ".^") or (op in ("*", "/") and (a.kind == "scalar" or b.kind == "scalar")):
            if op == "/" and b.kind != "scalar":
                raise unsupported(line, "dividing by a vector with / (Stan: ./)")
            spec_op = {".*": "*", "./": "/", "^": "**", ".^": "**"}.get(op, op)
            dims = self._elementwise_dims(a, b, line)
            kind = a.kind if a.kind != "scalar" else b.kind
            return Sym(s.Binary(spec_op, a.expr, b.expr), dims, kind, nloop=loop)
        if op == "*":
            own_a, own_b = a.dims[a.nloop:], b.dims[b.nloop:]
            if a.kind == "matrix" and b.kind in ("vector", "matrix") and not a.nloop and not b.nloop:
                return Sym(s.matmul(a.expr, b.expr), own_a[:1] + own_b[1:], b.kind)
            if a.kind == "row_vector" and b.kind == "vector" and a.nloop == 1 and not b.nloop and own_a == own_b:
                # X[n] * beta in a loop over n: row n of X times beta, for every n at once.
                return Sym(s.matmul(a.expr, b.expr), a.dims[:1], "scalar", nloop=1)
            raise unsupported(line, f"the product of a {a.kind} and a {b.kind} here")
        raise unsupported(line, f"the operator {op} on parameters")

    def _loop_dims(self, a: Sym, b: Sym, line: int) -> int:
        if a.nloop and b.nloop and a.dims[:a.nloop] != b.dims[:b.nloop]:
            raise unsupported(line, "combining values of different loops")
        return max(a.nloop, b.nloop)

    def _elementwise_dims(self, a: Sym, b: Sym, line: int) -> tuple[str, ...]:
        if not a.dims or s.same_dims(a.dims, b.dims):
            return b.dims
        if not b.dims:
            return a.dims
        raise unsupported(line, f"combining values of dims {a.dims} and {b.dims}")

    def _call(self, expr: FnCall) -> Sym:
        name, line = expr.name, expr.line
        if functions.defined_name(self, name) in self.user_functions:
            return functions.inline(self, expr)
        functions.check_not_a_solver(name, line)
        if rng.is_draw(self, name):
            return rng.draw(self, expr, DISTRIBUTIONS)
        if not any(isinstance(a, Name) and a.name in self.syms for a in expr.args) and self._is_data_only(expr):
            value = evaluate(expr, self.values)
            if np.ndim(value) == 0:
                return self._const(float(value))
        if name in REPEATS and len(expr.args) == REPEATS[name][0] + 1:
            return self._repeat(expr, REPEATS[name][1])
        args = [self._expr(a) for a in expr.args]
        if name in ELEMENTWISE and len(args) == 1:
            return replace(args[0], expr=s.Call(ELEMENTWISE[name], (args[0].expr,)), whole=None, int_data=None,
                           int_value=None)
        if name == "square" and len(args) == 1:
            return self._binary("^", args[0], self._const(2), line)
        if name == "inv" and len(args) == 1:
            return self._binary("./", self._const(1), args[0], line)
        if name == "pow" and len(args) == 2:
            return self._binary("^", args[0], args[1], line)
        if name in ("lbeta", "lchoose") and len(args) == 2:
            return self._elementwise(args, LOG_GAMMA_COMBINATIONS[name], line)
        if name == "lmgamma" and len(args) == 2 and args[0].int_value is not None:
            # The log of the multivariate gamma function: k(k-1)/4 log(pi) + sum_j lgamma(x + (1 - j)/2).
            k = args[0].int_value
            return self._elementwise(args[1:], lambda x: k * (k - 1) / 4 * math.log(math.pi) + sum(
                (s.lgamma(x + (1 - j) / 2) for j in range(2, k + 1)), s.lgamma(x)), line)
        if name == "rows_dot_product" and len(args) == 2 and args[0].dims == args[1].dims and len(args[0].dims) == 2:
            return Sym(s.rows_dot(args[0].expr, args[1].expr), args[0].dims[:1], "vector")
        if name == "multiply_lower_tri_self_transpose" and len(args) == 1 and len(args[0].dims) == 2 \
                and not args[0].nloop:
            return Sym(s.matmul(args[0].expr, s.transpose(args[0].expr)), args[0].dims[:1] * 2, "matrix")
        if name in ("quad_form_diag", "diag_post_multiply") and len(args) == 2 and len(args[0].dims) == 2 \
                and len(args[1].dims) == 1 and not args[0].nloop and not args[1].nloop:
            # m diag(v) as (diag(v) m')'; quad_form_diag(m, v) = diag(v) m diag(v).
            matrix, v = args[0].expr, args[1].expr
            if name == "quad_form_diag":
                matrix = s.diag_pre_multiply(v, matrix)
            return Sym(s.transpose(s.diag_pre_multiply(v, s.transpose(matrix))), args[0].dims, "matrix")
        if name == "diag_pre_multiply" and len(args) == 2:
            return Sym(s.diag_pre_multiply(args[0].expr, args[1].expr), args[1].dims, "matrix")
        if name.endswith(_SUFFIXES) and expr.conditional:
            value = self._elementwise(args, lambda *e: densities.elementwise_lpdf(name, e[0], e[1:], line), line)
            if value.nloop == 0 and value.dims:
                return Sym(s.sum_all(value.expr), (), "scalar")  # Stan's density of a vector is its sum
            if value.dims[value.nloop:]:
                raise unsupported(line, f"{name} of a vector inside a loop")
            return value
        if name == "log_mix" and len(args) == 3 and all(not a.dims[a.nloop:] for a in args):
            return self._elementwise(args, densities.log_mix, line)
        if name == "sum" and len(args) == 1 and not args[0].nloop:
            return Sym(s.sum_all(args[0].expr), (), "scalar")
        if name in ("log_sum_exp", "sum") and len(args) == 1 and args[0].nloop:
            reduced = loop_locals.reduce(self, name, args[0])
            if reduced is not None:
                return reduced
        if name == "log_sum_exp" and len(args) == 2:
            return self._elementwise(args, s.log_sum_exp, line)
        if name == "log_sum_exp" and len(args) == 1 and not args[0].nloop and len(args[0].dims) == 1:
            dim = args[0].dims[0]
            elements = [s.Index(args[0].expr, s.Var(self._constant_index(dim, i, line)))
                        for i in range(1, self.dim_sizes[dim] + 1)]
            return Sym(densities.log_sum_exp_of(elements), (), "scalar")
        if name in MATRICES:
            return self._matrix_function(name, args, expr)
        if name.endswith(("_lcdf", "_lccdf", "_cdf")) and expr.conditional:
            self._note_gradients((name,))
            value = self._elementwise(args, lambda *e: densities.elementwise_cdf(name, e[0], e[1:], line), line)
            if value.nloop == 0 and value.dims:
                if name.endswith("_cdf"):
                    raise unsupported(line, f"{name} of a vector")
                return Sym(s.sum_all(value.expr), (), "scalar")  # Stan's log cdf of a vector is its sum
            if value.dims[value.nloop:]:
                raise unsupported(line, f"{name} of a vector inside a loop")
            return value
        if name.endswith(_SUFFIXES + ("_lcdf", "_lccdf", "_cdf", "_rng")):
            raise unsupported(line, f"{name} inside an expression")
        raise unsupported(line, name if name not in DATA_FUNCTIONS else f"{name} of parameters")

    def _matrix_function(self, name: str, args: list[Sym], expr: FnCall) -> Sym:
        """gp_exp_quad_cov of 1-D data, diag_matrix, cholesky_decompose: square matrices
        (their two dims the same, as Stan sizes them)."""
        line = expr.line
        if any(a.nloop for a in args):
            raise unsupported(line, f"{name} inside a loop")
        if name == "gp_exp_quad_cov" and len(args) == 3 and isinstance(expr.args[0], Name) \
                and expr.args[0].name in self.values and not args[1].dims and not args[2].dims:
            x = np.asarray(self.values[expr.args[0].name], dtype=float)
            if x.ndim != 1:
                raise unsupported(line, "gp_exp_quad_cov of points that are not numbers")
            dims = args[0].dims * 2
            squared = self._synthetic(f"squared_distance_{expr.args[0].name}", (x[:, None] - x[None, :]) ** 2, dims)
            alpha, rho = args[1].expr, args[2].expr
            return Sym(alpha * alpha * s.exp(-0.5 * s.Var(squared) / (rho * rho)), dims, "matrix")
        if name == "diag_matrix" and len(args) == 1 and len(args[0].dims) == 1:
            dims = args[0].dims * 2
            identity = self._synthetic(f"identity_{dims[0]}", np.eye(self.dim_sizes[dims[0]]), dims)
            return Sym(s.diag_pre_multiply(args[0].expr, s.Var(identity)), dims, "matrix")
        if name == "cholesky_decompose" and len(args) == 1 and len(args[0].dims) == 2 \
                and args[0].dims[0] == args[0].dims[1]:
            return Sym(s.cholesky(args[0].expr), args[0].dims, "matrix")
        raise unsupported(line, f"{name} of these arguments")

    def _synthetic(self, name: str, value: np.ndarray, dims: tuple[str, ...]) -> str:
        """A data array the lowering computes from the data, as a Data node of its own."""
        self.values[name] = value
        self.synthetic_dims[name] = dims
        return name

    def _elementwise(self, args: list[Sym], build, line: int) -> Sym:
        """``build`` of the arguments' expressions, elementwise: dims and loops as a binary
        operator's, folded over the arguments."""
        deepest = max(args, key=lambda a: a.nloop)
        args = [loops.align(self, a, deepest, line)[0] for a in args]  # values of nested loops over all of them
        dims, loop, kind = args[0].dims, args[0].nloop, args[0].kind
        for arg in args[1:]:
            loop = self._loop_dims(Sym(s.Const(0.0), dims, kind, nloop=loop), arg, line)
            dims = self._elementwise_dims(Sym(s.Const(0.0), dims, kind), arg, line)
            kind = kind if kind != "scalar" else arg.kind
        return Sym(build(*(a.expr for a in args)), dims, kind, nloop=loop)

    def _repeat(self, expr: FnCall, kind: str) -> Sym:
        """``rep_vector(x, N)`` and its kin, of a scalar ``x``: ``x`` plus zeros over the sizes' dims."""
        value = self._expr(expr.args[0])
        if value.dims:
            raise unsupported(expr.line, f"{expr.name} of a value that is not a scalar")
        dims = tuple(self._dim(size) for size in expr.args[1:])
        return Sym(s.Binary("+", value.expr, s.Var(self._zeros(dims))), dims, kind)

    def _indexed(self, expr: Indexed) -> Sym:
        found = loop_locals.index(self, expr)
        if found is None:
            found = vector_recursions.index(self, expr)
        if found is None:
            found = loops.index(self, expr)
        if found is not None:
            return found
        if len(expr.indexes) == 2 and isinstance(expr.indexes[1], Slice) and expr.indexes[1].lower is None \
                and expr.indexes[1].upper is None and not isinstance(expr.indexes[0], Slice):
            return self._indexed(Indexed(expr.base, expr.indexes[:1], expr.line))  # x[i, :] is the row x[i]
        base = self._expr(expr.base)
        line = expr.line
        if len(expr.indexes) != 1 or isinstance(expr.indexes[0], Slice):
            return self._multi_loop_index(base, expr)
        index = expr.indexes[0]
        own = base.dims[base.nloop:]
        if not own:
            raise unsupported(line, "indexing a scalar")
        loop = self._loop_of(index)
        if loop is not None:
            if base.nloop:
                raise unsupported(line, "indexing, inside a loop, a value that already varies along a loop")
            self._bind(loop, own[0], line)
            int_data = base.int_data
            return Sym(base.expr, base.dims, _element_kind(base.kind, own), nloop=1, whole=base.whole, int_data=int_data)
        position = self._expr(index)
        if position.int_value is not None:
            node = self._constant_index(own[0], position.int_value, line)
            return Sym(s.Index(base.expr, s.Var(node)), base.dims[:base.nloop] + own[1:], _element_kind(base.kind, own))
        if position.int_data is not None and position.kind != "matrix":
            if base.nloop:
                raise unsupported(line, "an index into a value that varies along a loop")
            node = self._index_node(position.int_data, own[0], line)
            return Sym(s.Index(base.expr, s.Var(node)), position.dims + own[1:], _element_kind(base.kind, own),
                       nloop=position.nloop)
        raise unsupported(line, "an index that is not a loop variable, an integer, or integer data")

    def _multi_loop_index(self, base: Sym, expr: Indexed) -> Sym:
        """``y[i, j]`` inside loops over i and j: all of ``y``."""
        names = [self._loop_of(i) for i in expr.indexes]
        if any(n is None for n in names) or base.nloop or len(names) != len(self.loops) \
                or names != self.loops[:len(names)]:
            element = self._element_of_nested_loops(base, expr)
            if element is None:
                raise unsupported(expr.line, "this multiple or sliced index")
            return element
        for loop, dim in zip(names, base.dims):
            self._bind(loop, dim, expr.line)
        return Sym(base.expr, base.dims, "scalar", nloop=len(names), whole=base.whole, int_data=base.int_data)

    def _element_of_nested_loops(self, base: Sym, expr: Indexed) -> Sym | None:
        """``theta[doc[n], k]`` or ``phi[k, w[n]]`` of a two-dimensional value, inside a loop
        over n and, right inside it, a loop over all of k: one index is the inner loop's
        variable, the other reads the outer loop alone (``doc[n]``, int data). The rows the
        outer index picks (of ``phi``'s transpose for the second form), over (n, k); None
        where the index is not of this form."""
        if len(expr.indexes) != 2 or any(isinstance(i, Slice) for i in expr.indexes) or base.nloop \
                or len(base.dims) != 2 or len(self.loops) != 2:
            return None
        outer, inner = self.loops
        first, second = expr.indexes
        if self._loop_of(second) is inner and _names(first) & {inner.variable} == set():
            rows, own = base, base.dims[1]
            outer_index = first
        elif self._loop_of(first) is inner and _names(second) & {inner.variable} == set():
            rows, own = Sym(s.transpose(base.expr), base.dims[::-1], "matrix"), base.dims[0]
            outer_index = second
        else:
            return None
        if not _names(outer_index) & {outer.variable}:
            return None
        position = self._expr(outer_index)
        if position.int_data is None or position.nloop != 1 or position.dims[1:]:
            return None
        node = self._index_node(position.int_data, rows.dims[0], expr.line)
        self._bind(inner, own, expr.line)
        return Sym(s.Index(rows.expr, s.Var(node)), position.dims + (own,), "scalar", nloop=2)

    def _loop_of(self, index) -> _Loop | None:
        if isinstance(index, Name):
            for loop in self.loops:
                if loop.variable == index.name:
                    return loop
        return None

    def _bind(self, loop: _Loop, dim: str, line: int) -> None:
        if self.dim_sizes[dim] != loop.size:
            raise unsupported(line, f"a loop over 1:{loop.size} indexing a dimension of size {self.dim_sizes[dim]} "
                              "(only loops over all of a vector are vectorized)")
        if loop.dim is None:
            loop.dim = dim
        elif loop.dim != dim:
            raise unsupported(line, f"a loop variable indexing dims {loop.dim} and {dim}")
        if self.loops.index(loop) != 0 and self.loops[0].dim is None:
            raise unsupported(line, "an inner loop's variable used before the outer one's")

    def _constant_index(self, dim: str, position: int, line: int) -> str:
        if not 1 <= position <= self.dim_sizes[dim]:
            raise Unsupported(line, f"index {position} is outside 1..{self.dim_sizes[dim]}")
        name = f"{dim}_{position}"
        self.index_nodes[name] = s.Data(name, "int", (), index_of=dim)
        self.index_values[name] = np.asarray(position - 1)
        return name

    def _index_node(self, data_name: str, dim: str, line: int) -> str:
        existing = self.index_nodes.get(data_name)
        if existing is not None and existing.index_of != dim:
            raise unsupported(line, f"{data_name} indexing both {existing.index_of} and {dim}")
        value = np.asarray(self.values[data_name])
        if value.size and (value.min() < 1 or value.max() > self.dim_sizes[dim]):
            raise Unsupported(line, f"{data_name} holds indexes outside 1..{self.dim_sizes[dim]}")
        self.index_nodes[data_name] = s.Data(data_name, "int", self._dims(self.types[data_name]), index_of=dim)
        self.index_values[data_name] = value - 1
        return data_name

    # ------------------------------------------------------------------ assembling

    def _order(self, params: list[s.Param], deterministics: list[s.Deterministic]) -> list:
        """Parameters and transformed parameters, each after what it refers to."""
        pending, placed, out = list(params) + list(deterministics), set(self.values), []
        while pending:
            for node in pending:
                if s.references(node) <= placed | set(self.index_nodes):
                    out.append(node)
                    placed.add(node.name)
                    pending.remove(node)
                    break
            else:
                node = pending[0]
                raise unsupported(0, f"{node.name}: a prior that refers to {sorted(s.references(node) - placed)}")
        return out

    def _data_nodes(self, nodes: list) -> list[s.Data]:
        used = set().union(*(s.references(n) for n in nodes)) if nodes else set()
        out = []
        for name in sorted(used):
            if name in self.index_nodes:
                out.append(self.index_nodes[name])
            elif name in self.values:
                if any(o.name == name for o in nodes if isinstance(o, s.Observed)):
                    raise unsupported(0, f"the data {name} both observed and used in an expression")
                if name in self.synthetic_dims:
                    dtype = "int" if name in self.loop_state.synthetic_int else "real"
                    out.append(s.Data(name, dtype, self.synthetic_dims[name]))
                    continue
                stan_type = self.types[name]
                out.append(s.Data(name, "int" if stan_type.base == "int" else "real", self._dims(stan_type)))
        return out

    def _data_value(self, node: s.Data) -> np.ndarray:
        if node.name in self.index_values:
            return self.index_values[node.name]
        return np.asarray(self.values[node.name])


def _summands(expr: StanExpr, sign: int) -> list[tuple[int, StanExpr]]:
    if isinstance(expr, Op) and expr.op in ("+", "-") and len(expr.args) == 2:
        right = -sign if expr.op == "-" else sign
        return _summands(expr.args[0], sign) + _summands(expr.args[1], right)
    return [(sign, expr)]


def lower(program: Program, data: dict[str, object], name: str) -> Lowered:
    """The spec model and dataset of a program; an :class:`Unsupported` outside the subset."""
    try:
        return Lowering(program, data, name).lower()
    except s.SpecError as exc:
        raise Unsupported(0, f"the lowered model does not fit the spec ({exc})") from None
