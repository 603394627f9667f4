"""The Stan compiler: a model specification in, a readable Stan program out.

Pure text generation (no Stan install needed), so the checked-in programs under
``stan_models/`` can be compared with what the generator writes.

Placement of deterministics: those the log density needs go to ``transformed
parameters``; the rest go to ``generated quantities`` (computed once per draw, not per
gradient), as a person writing Stan would do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from polyppl.backends.beta_binomial_math import STAN_FUNCTIONS
from polyppl.models import MODELS
from polyppl.spec import (
    CONSTRAINED_FLAT,
    FAMILIES,
    Binary,
    Call,
    Concat,
    Const,
    Data,
    Dataset,
    Deterministic,
    Expr,
    Factor,
    Index,
    LogPdf,
    Model,
    Observed,
    Param,
    Scan,
    SpecError,
    Var,
    density_dependencies,
    expr_dims,
    expr_dtype,
    free_vars,
)

#: polyppl family -> Stan distribution name (half families are the full ones on a
#: parameter declared <lower=0>; they differ by a constant, which `~` drops anyway).
STAN_DISTRIBUTIONS = {
    "normal": "normal",
    "half_normal": "normal",
    "student_t": "student_t",
    "half_student_t": "student_t",
    "cauchy": "cauchy",
    "half_cauchy": "cauchy",
    "beta": "beta",
    "gamma": "gamma",
    "exponential": "exponential",
    "uniform": "uniform",
    "binomial": "binomial",
    "binomial_logit": "binomial_logit",
    "beta_binomial": "polyppl_beta_binomial",  # defined in the functions block: stable at huge a + b
    "bernoulli": "bernoulli",
    "bernoulli_logit": "bernoulli_logit",
    "poisson": "poisson",
    "poisson_log": "poisson_log",
    "lkj_corr_cholesky": "lkj_corr_cholesky",
    "lognormal": "lognormal",
    "inv_gamma": "inv_gamma",
    "double_exponential": "double_exponential",
    "logistic": "logistic",
    "weibull": "weibull",
    "chi_square": "chi_square",
    "neg_binomial_2": "neg_binomial_2",
    "neg_binomial_2_log": "neg_binomial_2_log",
}
#: Half families take a location of zero in Stan.
_HALF_LOCATION = {"half_normal": 1, "half_cauchy": 1, "half_student_t": 2}


def dim_size_name(dim: str) -> str:
    return f"N_{dim}"


@dataclass(frozen=True)
class _Code:
    text: str
    dims: tuple[str, ...]
    dtype: str  # "int" or "real"
    precedence: int

    @property
    def int_array(self) -> bool:
        return self.dtype == "int" and bool(self.dims)


_PRECEDENCE = {"||": 1, "<": 2, "<=": 2, ">": 2, ">=": 2, "+": 3, "-": 3, "*": 4, "/": 4, ".*": 4, "./": 4}
_POSTFIX = 9  # the transpose, A'
_ATOM = 10
#: Integer arrays of one and two dims as real vectors and matrices.
_TO_REAL = {1: "to_vector", 2: "to_matrix"}


#: The matrix whose rows are the vectors of an array (a parameter ``array[J] simplex[K]``).
_ROWS_OF_VECTORS = """  matrix rows_of_vectors(array[] vector v) {
    matrix[size(v), size(v) ? rows(v[1]) : 0] m;
    for (j in 1:size(v)) {
      m[j] = v[j]';
    }
    return m;
  }"""


class _ExprWriter:
    def __init__(self, model: Model):
        self.model = model
        #: Integer data arrays used in real arithmetic: converted once, in ``transformed data``.
        self.real_data: dict[str, tuple[str, ...]] = {}
        self._data_names = {n.name for n in model.nodes if isinstance(n, (Data, Observed))}
        self._names = {n.name for n in model.nodes}
        #: The functions that scans become, for the ``functions`` block.
        self.functions: list[str] = []

    def as_real(self, code: _Code) -> _Code:
        """Stan has no arithmetic on integer arrays: promote them to vectors. An integer data
        array becomes a vector once, in ``transformed data``, as a person writes Stan, rather
        than by ``to_vector`` (an allocation) in every gradient evaluation."""
        if not code.int_array:
            return code
        converted = f"{code.text}_real"
        if code.text in self._data_names and converted not in self._names:
            self.real_data[code.text] = code.dims
            return _Code(converted, code.dims, "real", _ATOM)
        return _Code(f"{_TO_REAL[len(code.dims)]}({code.text})", code.dims, "real", _ATOM)

    def write(self, expr: Expr) -> _Code:
        model = self.model
        dims, dtype = expr_dims(model, expr), expr_dtype(model, expr)
        if isinstance(expr, Const):
            return _Code(_literal(expr.value), dims, dtype, _ATOM)
        if isinstance(expr, Var):
            node = model[expr.name] if expr.name in self._names else None
            if isinstance(node, Param) and is_array_of_vectors(node):
                # An array of vectors (``array[J] simplex[K]``) read as the matrix of its rows,
                # which the spec's arithmetic on it means.
                if _ROWS_OF_VECTORS not in self.functions:
                    self.functions.append(_ROWS_OF_VECTORS)
                return _Code(f"rows_of_vectors({expr.name})", dims, dtype, _ATOM)
            return _Code(expr.name, dims, dtype, _ATOM)
        if isinstance(expr, Index):
            base = self.write(expr.base)
            index = self.write(expr.index)
            if len(index.dims) == 2 and len(base.dims) == 1:
                # Stan indexes by one-dim arrays: a matrix of indexes goes through to_array_1d
                # (row by row) and back, row-major (to_matrix's last argument 0).
                base = self.as_real(base)
                rows, cols = (dim_size_name(d) for d in index.dims)
                return _Code(f"to_matrix({_wrap(base, _ATOM)}[to_array_1d({index.text})], {rows}, {cols}, 0)",
                             dims, "real", _ATOM)
            return _Code(f"{_wrap(base, _ATOM)}[{index.text}]", dims, dtype, _ATOM)
        if isinstance(expr, Binary):
            left, right = self.write(expr.left), self.write(expr.right)
            if expr.op in ("<", "<=", ">", ">=", "|"):
                if left.dims or right.dims:
                    raise SpecError("comparisons and `|` work on scalars only in the Stan compiler")
                op = "||" if expr.op == "|" else expr.op
                prec = _PRECEDENCE[op]
                return _Code(f"{_wrap(left, prec)} {op} {_wrap(right, prec + 1)}", (), "int", prec)
            if dtype == "real":
                left, right = self.as_real(left), self.as_real(right)
            if expr.op == "**":
                op = ".^" if left.dims or right.dims else "^"
                return _Code(f"{_wrap(left, _ATOM)} {op} {_wrap(right, _ATOM)}", dims, dtype, 5)
            op = expr.op
            if op == "/" and left.dtype == "int" and right.dtype == "int":
                # Stan divides integers with truncation; the specification means real division.
                left = _Code(f"1.0 * {_wrap(left, _PRECEDENCE['*'])}", left.dims, "real", _PRECEDENCE["*"])
            if op in ("*", "/") and left.dims and right.dims:
                op = "." + op
            prec = _PRECEDENCE[op]
            # Left-associative: a right operand of equal precedence needs parentheses.
            return _Code(f"{_wrap(left, prec)} {op} {_wrap(right, prec + 1)}", dims, dtype, prec)
        if isinstance(expr, LogPdf):
            discrete = FAMILIES[expr.family].discrete
            value = self.write(expr.value) if discrete else self.as_real(self.write(expr.value))
            int_params = {"binomial": {0}, "binomial_logit": {0}, "beta_binomial": {0}}.get(expr.family, set())
            args = [self.write(e) if i in int_params else self.as_real(self.write(e)) for i, (_, e) in enumerate(expr.args)]
            if expr.family in _HALF_LOCATION:
                args.insert(_HALF_LOCATION[expr.family] - 1, _Code("0", (), "int", _ATOM))
            suffix = "lpmf" if discrete else "lpdf"
            if len(value.dims) == 2 and not FAMILIES[expr.family].event_dims:
                # Stan's vectorised densities take vectors: a matrix of independent values as one.
                value = _Code(f"to_vector({value.text})", value.dims, value.dtype, _ATOM)
                args = [_Code(f"to_vector({a.text})", a.dims, a.dtype, _ATOM) if len(a.dims) == 2 else a for a in args]
            text = f"{STAN_DISTRIBUTIONS[expr.family]}_{suffix}({value.text} | {', '.join(a.text for a in args)})"
            return _Code(text, (), "real", _ATOM)
        if isinstance(expr, Concat):
            parts = [self._flat(part) for part in expr.parts]
            text = parts[-1]
            for part in reversed(parts[:-1]):
                text = f"append_row({part}, {text})"
            return _Code(text, dims, "real", _ATOM)
        if isinstance(expr, Call):
            args = [self.as_real(self.write(a)) for a in expr.args]
            if expr.fn == "matmul":
                prec = _PRECEDENCE["*"]
                return _Code(f"{_wrap(args[0], prec)} * {_wrap(args[1], prec + 1)}", dims, "real", prec)
            if expr.fn == "transpose":
                return _Code(f"{_wrap(args[0], _ATOM)}'", dims, "real", _POSTFIX)
            if expr.fn in ("cholesky", "solve_lower"):
                stan_name = {"cholesky": "cholesky_decompose", "solve_lower": "mdivide_left_tri_low"}[expr.fn]
                return _Code(f"{stan_name}({', '.join(a.text for a in args)})", dims, "real", _ATOM)
            if expr.fn == "rows_dot":
                return _Code(f"rows_dot_product({args[0].text}, {args[1].text})", dims, "real", _ATOM)
            if expr.fn == "neg":
                return _Code(f"-{_wrap(args[0], 6)}", dims, dtype, 6)
            if expr.fn == "where":
                if dims:
                    raise SpecError("where() works on scalars only in the Stan compiler")
                cond = self.write(expr.args[0])
                return _Code(f"{_wrap(cond, 2)} ? {_wrap(args[1], 2)} : {_wrap(args[2], 2)}", (), "real", 0)
            return _Code(f"{expr.fn}({', '.join(a.text for a in args)})", dims, "real", _ATOM)
        if isinstance(expr, Scan):
            return self._scan(expr, dims)
        raise TypeError(expr)

    def _scan(self, expr: Scan, dims: tuple[str, ...]) -> _Code:
        """A scan as a function of the functions block (a loop over its steps), called with
        its initial state, its sequences and the nodes its body reads."""
        state = dims[1:]
        sequences = [(name, self.as_real(self.write(e))) for name, e in expr.sequences]
        if any(len(code.dims) != 1 for _, code in sequences):
            raise SpecError("the Stan compiler takes scans over vectors (sequences of one dim)")
        outer = sorted(free_vars(expr.body) - expr.local_names)
        local = {expr.carry: state, **{name: () for name, _ in sequences}}
        body_writer = _ExprWriter(_Scoped(self.model, local))
        body_writer._data_names = set()  # inside the function, integer arrays convert in place
        body = body_writer.as_real(body_writer.write(expr.body)).text
        name = f"polyppl_scan_{len(self.functions) + 1}"
        state_type = "vector" if state else "real"
        params = [f"{state_type} {expr.carry}_init"] + [f"vector {n}_seq" for n, _ in sequences]
        for ref in outer:
            code = self.write(Var(ref))
            params.append(_argument_type(code) + " " + ref)
        steps = f"rows({sequences[0][0]}_seq)" if sequences else dim_size_name(expr.dim)
        states = f"matrix[n, rows({expr.carry}_init)]" if state else "vector[n]"
        lines = [f"  {'matrix' if state else 'vector'} {name}({', '.join(params)}) {{",
                 f"    int n = {steps};", f"    {states} states;",
                 f"    {state_type}{'[rows(' + expr.carry + '_init)]' if state else ''} {expr.carry} = {expr.carry}_init;",
                 "    for (i in 1:n) {"]
        lines += [f"      real {n} = {n}_seq[i];" for n, _ in sequences]
        lines += [f"      {expr.carry} = {body};", f"      states[i] = {expr.carry}{chr(39) if state else ''};",
                  "    }", "    return states;", "  }"]
        self.functions.append("\n".join(lines))
        init = self.as_real(self.write(expr.init)).text
        args = [init] + [code.text for _, code in sequences] + [self.write(Var(ref)).text for ref in outer]
        return _Code(f"{name}({', '.join(args)})", dims, "real", _ATOM)


    def _flat(self, part: Expr) -> str:
        """A vector as it is; a matrix's elements row by row, as a vector (Stan's
        ``to_vector`` goes column by column, so it is given the transpose)."""
        if len(expr_dims(self.model, part)) == 1:
            return self.as_real(self.write(part)).text
        if isinstance(part, Call) and part.fn == "transpose":
            return f"to_vector({self.as_real(self.write(part.args[0])).text})"
        return f"to_vector({_wrap(self.as_real(self.write(part)), _ATOM)}')"


class _Scoped:
    """The model seen from a scan's body: its nodes, and the body's own names (reals,
    vectors) for the compiler's dims and dtypes."""

    def __init__(self, model: Model, local: dict[str, tuple[str, ...]]) -> None:
        self.model, self.local = model, local
        self.nodes = model.nodes

    def __getitem__(self, name: str):
        if name in self.local:
            return Data(name, "real", self.local[name])
        return self.model[name]


def _argument_type(code: _Code) -> str:
    """A function argument's Stan type for a value of these dims and dtype."""
    if code.dtype == "int":
        return "int" if not code.dims else f"array[{',' * (len(code.dims) - 1)}] int"
    return {0: "real", 1: "vector", 2: "matrix"}[len(code.dims)]


def _wrap(code: _Code, precedence: int) -> str:
    return code.text if code.precedence >= precedence else f"({code.text})"


def _literal(value: float) -> str:
    """Whole numbers as integer literals (as a person writes Stan, and measurably faster in
    distribution arguments); integer division is guarded where `/` is written."""
    if math.isinf(value):
        return "negative_infinity()" if value < 0 else "positive_infinity()"
    if float(value).is_integer() and abs(value) < 2**31:
        return str(int(value))
    return repr(float(value))


def _bounds(lower: float | None, upper: float | None) -> str:
    parts = []
    if lower is not None:
        parts.append(f"lower={_literal(lower)}")
    if upper is not None:
        parts.append(f"upper={_literal(upper)}")
    return f"<{', '.join(parts)}>" if parts else ""


def _int_bounds(lower: float | None, upper: float | None | str) -> str:
    parts = []
    if lower is not None:
        parts.append(f"lower={int(lower)}")
    if upper is not None:
        parts.append(f"upper={upper if isinstance(upper, str) else int(upper)}")
    return f"<{', '.join(parts)}>" if parts else ""


def _declare(name: str, dtype: str, dims: tuple[str, ...], bounds: str) -> str:
    if len(dims) > 2:
        raise SpecError(f"{name!r}: the Stan compiler supports scalars, vectors and matrices (up to two dims)")
    sizes = ", ".join(dim_size_name(d) for d in dims)
    if dtype == "int":
        return f"array[{sizes}] int{bounds} {name}" if dims else f"int{bounds} {name}"
    if len(dims) == 2:
        return f"matrix{bounds}[{sizes}] {name}"
    return f"vector{bounds}[{sizes}] {name}" if dims else f"real{bounds} {name}"


#: Stan's vector types of the flat families on them.
_VECTOR_TYPES = {"flat_ordered": "ordered", "flat_positive_ordered": "positive_ordered", "flat_simplex": "simplex"}
def is_array_of_vectors(param: Param) -> bool:
    """Whether the program declares ``param`` as an array of a vector type
    (``array[J] simplex[K]``): Stan runs its values array element by element, not column by
    column as a matrix's."""
    return param.dist.family in _VECTOR_TYPES and len(param.dims) == 2


#: The bounds Stan declares for the elementwise flat families: (Stan's word, the argument).
_BOUND_ARGS = {"flat_lower": (("lower", "lower"),), "flat_upper": (("upper", "upper"),),
               "flat_interval": (("lower", "lower"), ("upper", "upper")),
               "flat_affine": (("offset", "offset"), ("multiplier", "multiplier"))}


def _param_declaration(writer: _ExprWriter, param: Param) -> str:
    if param.support in ("corr_cholesky", "cholesky_factor_cov", "cov_matrix", "corr_matrix"):
        stan_type = {"corr_cholesky": "cholesky_factor_corr"}.get(param.support, param.support)
        return f"{stan_type}[{dim_size_name(param.dims[0])}] {param.name}"
    if param.dist.family in _VECTOR_TYPES:
        vector = f"{_VECTOR_TYPES[param.dist.family]}[{dim_size_name(param.dims[-1])}] {param.name}"
        return f"array[{dim_size_name(param.dims[0])}] {vector}" if is_array_of_vectors(param) else vector
    if param.dist.family in _BOUND_ARGS:
        kwargs = param.dist.kwargs
        parts = [f"{word}={writer.as_real(writer.write(kwargs[arg])).text}" for word, arg in _BOUND_ARGS[param.dist.family]]
        return _declare(param.name, "real", param.dims, f"<{', '.join(parts)}>")
    return _declare(param.name, "real", param.dims, _bounds(*param.bounds))


_OBSERVED_BOUNDS = {"count": (0, None), "binary": (0, 1)}


def _data_declaration(node: Data | Observed) -> str:
    if isinstance(node, Observed):
        if node.dtype == "int":
            return _declare(node.name, "int", node.dims, _int_bounds(*_OBSERVED_BOUNDS[node.dist.info.support]))
        return _declare(node.name, "real", node.dims, "")
    if node.index_of:
        return _declare(node.name, "int", node.dims, _int_bounds(1, dim_size_name(node.index_of)))
    if node.dtype == "int":
        return _declare(node.name, "int", node.dims, _int_bounds(node.lower, node.upper))
    return _declare(node.name, "real", node.dims, _bounds(node.lower, node.upper))


#: Likelihoods whose linear predictor may be ``X * b + alpha`` -> (Stan's GLM function,
#: position of the linear predictor among the distribution's arguments).
_GLM = {"bernoulli_logit": ("bernoulli_logit_glm", 0), "binomial_logit": ("binomial_logit_glm", 1),
        "poisson_log": ("poisson_log_glm", 0), "normal": ("normal_id_glm", 0)}


def _summands(expr: Expr) -> list[Expr]:
    if isinstance(expr, Binary) and expr.op == "+":
        return _summands(expr.left) + _summands(expr.right)
    return [expr]


def _glm_statement(writer: _ExprWriter, node: Observed) -> str | None:
    """``y ~ family(..., X * b + alpha, ...)`` with ``X`` a data matrix as Stan's GLM
    function of the family (``binomial_logit_glm(trials, X, alpha, b)``): one fused density
    and gradient instead of a matrix product, a sum and the density, as brms writes it."""
    dist = node.dist
    if dist.family not in _GLM or len(node.dims) != 1:
        return None
    function, position = _GLM[dist.family]
    args = [e for _, e in dist.args]
    terms = _summands(args[position])
    for i, term in enumerate(terms):
        if isinstance(term, Call) and term.fn == "matmul" and isinstance(term.args[0], Var) \
                and isinstance(writer.model[term.args[0].name], Data) and len(expr_dims(writer.model, term.args[0])) == 2 \
                and len(expr_dims(writer.model, term.args[1])) == 1:
            break
    else:
        return None
    X, b = (writer.write(a).text for a in terms[i].args)
    rest = terms[:i] + terms[i + 1:]
    alpha = "0" if not rest else writer.as_real(writer.write(_sum(rest))).text
    before = [writer.write(a).text for a in args[:position]]  # trials: an integer array
    after = [writer.as_real(writer.write(a)).text for a in args[position + 1:]]  # sigma
    texts = [*before, X, alpha, b, *after]
    return f"{node.name} ~ {function}({', '.join(texts)});"


def _sum(terms: list[Expr]) -> Expr:
    total = terms[0]
    for term in terms[1:]:
        total = Binary("+", total, term)
    return total


def _statement(writer: _ExprWriter, node: Param | Observed) -> str | None:
    dist = node.dist
    if isinstance(node, Observed):
        glm = _glm_statement(writer, node)
        if glm:
            return glm
    if dist.family in ("flat", "half_flat") or dist.family in CONSTRAINED_FLAT:
        return None  # an improper flat density adds nothing to the target
    # Stan's vectorised densities take vectors: a matrix of independent values goes through to_vector.
    flat = len(node.dims) == 2 and not dist.info.event_dims
    name = f"to_vector({node.name})" if flat else node.name
    kwargs = dist.kwargs
    if dist.family == "normal" and all(isinstance(kwargs[k], Const) for k in ("mu", "sigma")) \
            and (kwargs["mu"].value, kwargs["sigma"].value) == (0.0, 1.0):
        return f"{name} ~ std_normal();"  # no arguments to check or broadcast: faster
    args = [writer.write(e) for _, e in dist.args]
    # Counts must stay integer arrays; everything else may be promoted to a vector.
    int_params = {"binomial": {0}, "binomial_logit": {0}, "beta_binomial": {0}}.get(dist.family, set())
    texts = [a.text if i in int_params else writer.as_real(a).text for i, a in enumerate(args)]
    if flat:
        texts = [f"to_vector({text})" if len(a.dims) == 2 else text for text, a in zip(texts, args)]
    if dist.family in _HALF_LOCATION:
        texts.insert(_HALF_LOCATION[dist.family] - 1, "0")
    return f"{name} ~ {STAN_DISTRIBUTIONS[dist.family]}({', '.join(texts)});"


def stan_program(model: Model) -> str:
    """The Stan program for a model specification, as text."""
    writer = _ExprWriter(model)
    needed = density_dependencies(model)
    data = [f"  int<lower=1> {dim_size_name(d)};" for d in model.dims]
    data += [f"  {_data_declaration(n)};" for n in model.nodes if isinstance(n, (Data, Observed))]
    params = [f"  {_param_declaration(writer, p)};" for p in model.params]
    transformed, body, generated = [], [], []
    for node in model.nodes:
        if isinstance(node, Deterministic):
            line = f"  {_declare(node.name, 'real', node.dims, '')} = {writer.write(node.expr).text};"
            (transformed if node.name in needed else generated).append(line)
        elif isinstance(node, Param):
            statement = _statement(writer, node)
            if statement:
                body.append("  " + statement)
        elif isinstance(node, Factor):
            body.append(f"  target += {writer.write(node.expr).text};  // {node.name}")
        elif isinstance(node, Observed):
            body.append("  " + _statement(writer, node))

    transformed_data = [f"  {_declare(f'{name}_real', 'real', dims, '')} = {_TO_REAL[len(dims)]}({name});"
                        for name, dims in writer.real_data.items()]

    families = {n.dist.family for n in model.nodes if isinstance(n, (Param, Observed))}
    functions = [STAN_FUNCTIONS.strip("\n")] if "beta_binomial" in families else []
    functions += writer.functions

    out = [f"// Model {model.name!r}, generated by polyppl from its specification: do not edit."]
    if model.description:
        out += [f"// {line}" for line in model.description.splitlines()]
    for block, lines in (
        ("functions", functions),
        ("data", data),
        ("transformed data", transformed_data),
        ("parameters", params),
        ("transformed parameters", transformed),
        ("model", body),
        ("generated quantities", generated),
    ):
        if lines or block in ("data", "parameters", "model"):
            out += [block + " {", *lines, "}"]
    return "\n".join(out) + "\n"


def engine_code(program: str) -> str:
    """The program as the engines compile it: its leading comment lines (the model's name
    and description, which name the data file) emptied, so that the same model on other
    data reuses the compiled executable, and kept as lines, so that Stan's messages give
    the line numbers of the program ``polyppl show`` prints."""
    lines = program.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if not line.startswith("//")), len(lines))
    return "//\n" * first + "".join(lines[first:])


def stan_data(model: Model, dataset: Dataset) -> dict:
    """The data dictionary for the program: dim sizes, 1-based indices, plain lists."""
    out: dict = {dim_size_name(d): dataset.size(d) for d in model.dims}
    for node in model.nodes:
        if isinstance(node, (Data, Observed)):
            value = np.asarray(dataset.values[node.name])
            if isinstance(node, Data) and node.index_of:
                value = value + 1
            is_int = node.dtype == "int" or (isinstance(node, Data) and node.index_of)
            value = value.astype(np.int64 if is_int else np.float64)
            out[node.name] = value.tolist()
    return out


def builtin_programs() -> dict[str, str]:
    """The checked-in ``stan_models/*.stan``: each built-in model and parametrization on its
    default scenario. The default parametrization has the plain name."""
    out = {}
    for model in MODELS.values():
        dataset = model.dataset()
        for p in model.parametrizations:
            suffix = "" if p == model.default_parametrization else f"_{p}"
            out[f"{model.name.replace('-', '_')}{suffix}.stan"] = stan_program(model.spec(p, dataset).density_model())
    return out
