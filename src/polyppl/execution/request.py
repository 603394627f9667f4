"""A fit request: everything that determines a fit, as frozen data with a JSON round trip.

The model and the dataset travel inside the request (not a model's name), so a child
process or a worker on another machine runs any model. The content hash covers every input
of the result: the model's nodes, the data values and labels, the backend, engine and its
options, the method, the settings, the versions of every package the engine runs on and a digest
of polyppl's own code that fits run (``code_digest``). A
finished result is reused only when the hash is the same; ``differences`` says which part
changed when it is not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from polyppl import __version__
from polyppl.backends import get_backend
from polyppl.errors import UserError
from polyppl.inference.methods import SamplerSettings, VariationalSettings, get_method
from polyppl.models.base import Labels
from polyppl.spec import Dataset, Model, check_dataset
from polyppl.spec.serialize import (
    content_hash,
    dataset_from_json,
    dataset_hash,
    dataset_to_json,
    model_from_json,
    model_hash,
    model_to_json,
)


@dataclass(frozen=True)
class FitRequest:
    model: Model
    dataset: Dataset
    backend: str
    engine: str  # resolved: never "auto"
    method: str = "nuts"
    #: The method's own settings class (``SamplerSettings`` for nuts, ``VariationalSettings``
    #: for the approximations).
    settings: SamplerSettings | VariationalSettings = field(default_factory=SamplerSettings)
    options: tuple[tuple[str, str], ...] = ()
    labels: Labels | None = None
    #: Versions of polyppl, Python and the engine's packages, read when the request is made.
    versions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(cls, model: Model, dataset: Dataset, backend: str, engine: str | None = None, method: str = "nuts",
             settings: SamplerSettings | VariationalSettings | None = None, options: Mapping[str, str] | None = None,
             labels: Labels | None = None) -> FitRequest:
        """Check everything a run would need (model against data, the backend's engine,
        method, settings of the method's own class, and options) and resolve the engine,
        before anything runs."""
        expected = get_method(method).settings
        settings = settings if settings is not None else expected()
        if not isinstance(settings, expected):
            raise UserError(f"method {method!r} takes {expected.__name__}, not {type(settings).__name__}")
        if isinstance(settings, SamplerSettings):
            settings = settings.for_model(model)  # the record names the target that ran
        check_dataset(model, dataset)
        spec = get_backend(backend)
        chosen = spec.check(engine, method, settings, options)
        # ArviZ and xarray hold and summarise every backend's draws: a result of another
        # version is not reused.
        versions = {"polyppl": __version__, "polyppl-code": code_digest(), "python": platform.python_version(),
                    **_versions("arviz", "xarray"), **spec.versions(chosen.name)}
        return cls(model, dataset, backend, chosen.name, method, settings, tuple(sorted((options or {}).items())),
                   labels or Labels(model.name), tuple(sorted(versions.items())))

    @property
    def column(self) -> str:
        return f"{self.backend}:{self.engine}"

    def hash_parts(self) -> dict[str, str]:
        """A hash per input, so that a change can be named."""
        return {
            "model": model_hash(self.model),
            "data": dataset_hash(self.dataset),
            "backend": content_hash([self.backend, self.engine, list(self.options)]),
            "method": content_hash([self.method, self.settings.as_dict()]),
            "versions": content_hash(list(self.versions)),
        }

    def content_hash(self) -> str:
        return content_hash(self.hash_parts())

    def to_json(self) -> dict[str, Any]:
        labels = self.labels or Labels(self.model.name)
        return {
            "model": model_to_json(self.model),
            "dataset": dataset_to_json(self.dataset),
            "backend": self.backend,
            "engine": self.engine,
            "method": self.method,
            "settings": self.settings.as_dict(),
            "options": dict(self.options),
            "labels": {"model": labels.model, "scenario": labels.scenario, "parametrization": labels.parametrization},
            "versions": dict(self.versions),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FitRequest:
        return cls(
            model=model_from_json(data["model"]),
            dataset=dataset_from_json(data["dataset"]),
            backend=data["backend"],
            engine=data["engine"],
            method=data["method"],
            settings=get_method(data["method"]).settings.from_dict(data["settings"]),
            options=tuple(sorted(data.get("options", {}).items())),
            labels=Labels(**data["labels"]),
            versions=tuple(sorted(data.get("versions", {}).items())),
        )


#: Words for each hash part, for "re-running: the data changed".
PART_WORDS = {
    "model": "the model", "data": "the data", "backend": "the backend or engine",
    "method": "the method or its settings", "versions": "package versions or polyppl's fitting code",
}


def differences(old_parts: Mapping[str, str], new_parts: Mapping[str, str]) -> list[str]:
    """Which inputs differ between two requests, in words."""
    return [PART_WORDS.get(k, k) for k in new_parts if old_parts.get(k) != new_parts[k]]


#: The parts of polyppl that turn a request into draws: the spec, the backends' compilers and
#: the inference layer. A result is not reused across a change of them even where polyppl's
#: version number stayed the same (a compiler fix between releases, a checkout's edits).
FIT_CODE = ("spec", "backends", "inference")


def code_digest(root: Path | None = None) -> str:
    """A short digest of the Python sources in :data:`FIT_CODE` under ``root`` (default: this
    installed polyppl, read once per process)."""
    return _installed_digest() if root is None else _digest(root)


@functools.cache
def _installed_digest() -> str:
    return _digest(Path(__file__).resolve().parents[1])


def _digest(root: Path) -> str:
    files = sorted(f for part in FIT_CODE for f in (root / part).rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _versions(*packages: str) -> dict[str, str]:
    return {package: importlib.metadata.version(package) for package in packages}
