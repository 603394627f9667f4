"""Models and datasets as JSON, and their content hashes.

A fit request travels to a child process, or to a worker on another machine, as JSON: the
model as its nodes and expression trees, the dataset as its arrays (compressed bytes, so a
million-row column costs kilobytes, not a million list items). The same canonical form
gives a content hash, which decides whether a finished result may be reused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
from typing import Any

import numpy as np

from polyppl.spec.expr import Binary, Call, Concat, Const, Expr, Index, LogPdf, Scan, Var
from polyppl.spec.families import Dist
from polyppl.spec.model import (
    Conditional,
    Data,
    Dataset,
    Decision,
    Deterministic,
    Factor,
    Model,
    Node,
    Observed,
    Param,
    LooseGradient,
    SourceProgram,
    SpecError,
)

_KINDS: dict[str, type] = {
    "data": Data, "param": Param, "deterministic": Deterministic, "factor": Factor,
    "observed": Observed, "conditional": Conditional, "decision": Decision,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


# --------------------------------------------------------------------------- expressions


def expr_to_json(expr: Expr) -> Any:
    if isinstance(expr, Const):
        value = expr.value
        return {"const": str(value)} if math.isinf(value) or math.isnan(value) else value
    if isinstance(expr, Var):
        return {"var": expr.name}
    if isinstance(expr, Binary):
        return {"op": expr.op, "left": expr_to_json(expr.left), "right": expr_to_json(expr.right)}
    if isinstance(expr, Call):
        return {"call": expr.fn, "args": [expr_to_json(a) for a in expr.args]}
    if isinstance(expr, Index):
        return {"index": expr_to_json(expr.base), "by": expr_to_json(expr.index)}
    if isinstance(expr, Concat):
        return {"concat": [expr_to_json(p) for p in expr.parts], "dim": expr.dim}
    if isinstance(expr, LogPdf):
        return {"lpdf": expr.family, "args": {k: expr_to_json(e) for k, e in expr.args},
                "value": expr_to_json(expr.value)}
    if isinstance(expr, Scan):
        return {"scan": expr.dim, "init": expr_to_json(expr.init), "carry": expr.carry,
                "sequences": [[name, expr_to_json(e)] for name, e in expr.sequences], "body": expr_to_json(expr.body)}
    raise TypeError(f"not an expression: {expr!r}")


def expr_from_json(data: Any) -> Expr:
    if isinstance(data, (int, float)):
        return Const(float(data))
    if "const" in data:
        return Const(float(data["const"]))
    if "var" in data:
        return Var(data["var"])
    if "op" in data:
        return Binary(data["op"], expr_from_json(data["left"]), expr_from_json(data["right"]))
    if "call" in data:
        return Call(data["call"], tuple(expr_from_json(a) for a in data["args"]))
    if "index" in data:
        return Index(expr_from_json(data["index"]), expr_from_json(data["by"]))
    if "lpdf" in data:
        return LogPdf(data["lpdf"], tuple((k, expr_from_json(e)) for k, e in data["args"].items()),
                          expr_from_json(data["value"]))
    if "concat" in data:
        return Concat(data["dim"], tuple(expr_from_json(p) for p in data["concat"]))
    if "scan" in data:
        return Scan(data["scan"], expr_from_json(data["init"]), data["carry"],
                    tuple((name, expr_from_json(e)) for name, e in data["sequences"]), expr_from_json(data["body"]))
    raise SpecError(f"not a serialised expression: {data!r}")


# --------------------------------------------------------------------------- models


def _dist_to_json(dist: Dist) -> dict[str, Any]:
    return {"family": dist.family, "args": {k: expr_to_json(e) for k, e in dist.args}}


def _dist_from_json(data: dict[str, Any]) -> Dist:
    return Dist(data["family"], tuple((k, expr_from_json(e)) for k, e in data["args"].items()))


def node_to_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": _KIND_OF[type(node)], "name": node.name}
    if isinstance(node, Data):
        out.update(dtype=node.dtype, dims=list(node.dims), lower=node.lower, upper=node.upper, index_of=node.index_of)
    elif isinstance(node, (Param, Observed, Conditional)):
        out.update(dist=_dist_to_json(node.dist), dims=list(node.dims))
    elif isinstance(node, Deterministic):
        out.update(expr=expr_to_json(node.expr), dims=list(node.dims))
    elif isinstance(node, Factor):
        out.update(expr=expr_to_json(node.expr))
    elif isinstance(node, Decision):
        out.update(decision=node.kind, expr=expr_to_json(node.expr), dims=list(node.dims), title=node.title)
    return out


def node_from_json(data: dict[str, Any]) -> Node:
    kind, name = data["kind"], data["name"]
    dims = tuple(data.get("dims", ()))
    if kind == "data":
        return Data(name, data["dtype"], dims, data.get("lower"), data.get("upper"), data.get("index_of"))
    if kind in ("param", "observed", "conditional"):
        return _KINDS[kind](name, _dist_from_json(data["dist"]), dims)
    if kind == "deterministic":
        return Deterministic(name, expr_from_json(data["expr"]), dims)
    if kind == "factor":
        return Factor(name, expr_from_json(data["expr"]))
    if kind == "decision":
        return Decision(name, data["decision"], expr_from_json(data["expr"]), dims, data.get("title", ""))
    raise SpecError(f"unknown node kind {kind!r} in a serialised model")


def source_to_json(source: SourceProgram | None) -> dict[str, Any] | None:
    if source is None:
        return None
    out = {"language": source.language, "text": source.text, "data_json": source.data_json,
           "parameters": list(source.parameters), "array_ranks": list(source.array_ranks)}
    if source.loose_gradients:
        out["loose_gradients"] = [{"function": g.function, "rtol": g.rtol, "reason": g.reason}
                                  for g in source.loose_gradients]
    return out


def model_to_json(model: Model) -> dict[str, Any]:
    out = {"name": model.name, "description": model.description, "target_accept": model.target_accept,
           "nodes": [node_to_json(n) for n in model.nodes]}
    if model.source is not None:
        out["source"] = source_to_json(model.source)
    return out


def model_from_json(data: dict[str, Any]) -> Model:
    source = data.get("source")
    return Model(data["name"], tuple(node_from_json(n) for n in data["nodes"]), data.get("description", ""),
                 data.get("target_accept"),
                 SourceProgram(source["language"], source["text"], source["data_json"], tuple(source["parameters"]),
                               tuple(source.get("array_ranks", ())),
                               tuple(LooseGradient(g["function"], g["rtol"], g["reason"])
                                     for g in source.get("loose_gradients", ())))
                 if source else None)


# --------------------------------------------------------------------------- datasets


def array_to_json(value: np.ndarray) -> dict[str, Any]:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise SpecError(f"data arrays must be numbers, not {array.dtype}")
    # The shape of the array itself: ascontiguousarray makes a 0-d array 1-d (a scalar index
    # node of a Stan program, n2_1, came back of shape (1,) in a child process).
    return {"dtype": array.dtype.str, "shape": list(array.shape),
            "zlib_base64": base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 6)).decode("ascii")}


def array_from_json(data: dict[str, Any]) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(data["zlib_base64"]))
    return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).copy()


def _label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def dataset_to_json(dataset: Dataset) -> dict[str, Any]:
    return {
        "source": dataset.source,
        "coords": {dim: [_label(v) for v in labels] for dim, labels in dataset.coords.items()},
        "values": {name: array_to_json(np.asarray(v)) for name, v in dataset.values.items()},
    }


def dataset_from_json(data: dict[str, Any]) -> Dataset:
    return Dataset(
        values={name: array_from_json(v) for name, v in data["values"].items()},
        coords={dim: tuple(labels) for dim, labels in data["coords"].items()},
        source=data.get("source", ""),
    )


# --------------------------------------------------------------------------- hashes


def content_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def model_hash(model: Model) -> str:
    """What the model computes: its nodes (the description is prose and does not count), the
    sampler target it asks for, and the program it was lowered from (text and data), if any."""
    parts: list[Any] = [[node_to_json(n) for n in model.nodes], model.target_accept]
    if model.source is not None:
        parts.append(source_to_json(model.source))
    return content_hash(parts)


def dataset_hash(dataset: Dataset) -> str:
    """The data values and labels, by their bytes; where the data came from does not count."""
    digest = hashlib.sha256()
    for name in sorted(dataset.values):
        array = np.asarray(dataset.values[name])
        # Same numbers, same hash, whatever integer or float width held them.
        array = np.ascontiguousarray(array, dtype=np.int64 if array.dtype.kind in "biu" else np.float64)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps({d: [str(_label(v)) for v in labels] for d, labels in sorted(dataset.coords.items())}).encode())
    return digest.hexdigest()
