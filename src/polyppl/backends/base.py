"""The backend contract.

A backend is a front end compiler (spec -> the library's model) with one or more engines
that run inference methods on the compiled model. Each backend declares, as data, what
each engine can do (methods, chain methods, inits, options); a request it cannot serve is
refused here, before any process starts or any heavy library is imported, with a message
naming what it does offer. Compiling imports the library:

    compiled = get_backend("stan").compile(model, dataset, engine="cmdstanpy")
    draws = compiled.run("nuts", SamplerSettings(seed=1))
    density = compiled.log_density()

Nothing outside a backend's own package knows the library's names for anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

from polyppl.errors import UserError
from polyppl.inference.draws import Draws, LogDensity
from polyppl.inference.methods import SamplerSettings, VariationalSettings, get_method
from polyppl.spec import Dataset, Model


@dataclass(frozen=True)
class Engine:
    """One way a backend runs its compiled model: its methods and how chains can run."""

    name: str
    description: str
    methods: tuple[str, ...] = ("nuts",)
    chain_methods: tuple[str, ...] = ("auto", "sequential", "parallel")
    inits: tuple[str, ...] = ("default", "uniform")
    #: Python distributions whose versions a record lists.
    packages: tuple[str, ...] = ()
    #: Why the engine cannot run here (None where it can): checked before a run.
    unavailable: Callable[[], str | None] = lambda: None
    #: Versions of what the engine runs that are not Python packages (CmdStan, its C++ compiler).
    tools: Callable[[], dict[str, str]] = dict
    #: The chain method that keeps a multi-chain run on about one core (a grid runs one fit per core).
    single_core_chains: str = "sequential"
    #: Optional packages a method (or an init of that name) needs beyond ``packages``:
    #: method -> (distribution, why it is optional).
    optional: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def missing_for(self, method: str, init: str | None = None) -> str | None:
        """Why ``method`` (started from ``init``) cannot run here for want of an optional
        package; None where it can."""
        for wanted in (method, init):
            if wanted in self.optional:
                package, why = self.optional[wanted]
                try:
                    importlib.metadata.version(package)
                except importlib.metadata.PackageNotFoundError:
                    return f"{wanted} needs {package}, which is not installed ({why}): pip install {package}"
        return None


class CompiledModel(Protocol):
    """A model compiled once by a backend; methods run on it."""

    engine: str
    compile_seconds: float
    compile_cached: bool

    def run(self, method: str, settings: SamplerSettings | VariationalSettings) -> Draws: ...

    def log_density(self) -> LogDensity: ...

    def with_data(self, dataset: Dataset) -> CompiledModel:
        """The same model on another dataset of the same shapes, reusing what was compiled
        (a grid of fits compiles a model once per worker)."""
        ...


@dataclass(frozen=True)
class Backend:
    """What a backend can do, declared without importing its library."""

    name: str
    engines: tuple[Engine, ...]
    #: Module with ``compile(model, dataset, engine, options) -> CompiledModel``, imported
    #: only when something is compiled.
    compiler: str
    #: Backend-only options (not shared settings), name -> allowed values, first the default.
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Picks the engine for "auto" (default: the first engine).
    choose_auto: Callable[[], str] | None = None
    #: Set-up of a long-lived process that runs many fits beside other such processes (a
    #: worker of a grid), called before the library is imported, with a directory that is
    #: the process's alone while it lives (e.g. for the library's compile cache).
    prepare_worker: Callable[[Path], None] | None = None

    @property
    def engine_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.engines)

    def engine(self, name: str | None = None) -> Engine:
        """The engine called ``name`` (``None`` or ``auto``: the backend's choice here)."""
        if name in (None, "auto"):
            name = self.choose_auto() if self.choose_auto else self.engines[0].name
        for engine in self.engines:
            if engine.name == name:
                return engine
        raise UserError(f"backend {self.name!r} has no engine {name!r}; it offers: {', '.join(self.engine_names)}")

    def check(self, engine: str | None, method: str, settings: SamplerSettings | VariationalSettings,
              options: Mapping[str, str] | None = None) -> Engine:
        """Refuse what this backend cannot do, naming what it offers; the resolved engine."""
        chosen = self.engine(engine)
        get_method(method)
        where = f"{self.name} (engine {chosen.name})"
        if method not in chosen.methods:
            raise UserError(f"{where} has no method {method!r}; it offers: {', '.join(chosen.methods)}")
        if isinstance(settings, SamplerSettings):
            if settings.chain_method not in chosen.chain_methods:
                raise UserError(f"{where} cannot run chains {settings.chain_method!r}; "
                                f"it offers: {', '.join(chosen.chain_methods)}")
            if settings.init not in chosen.inits:
                raise UserError(f"{where} cannot initialise with init={settings.init!r}; "
                                f"it offers: {', '.join(chosen.inits)}")
        for key, value in (options or {}).items():
            if key not in self.options:
                raise UserError(f"backend {self.name!r} has no option {key!r}"
                                + (f"; it has: {', '.join(self.options)}" if self.options else ""))
            if value not in self.options[key]:
                raise UserError(f"{self.name} option {key} must be one of {', '.join(self.options[key])}, got {value!r}")
        reason = chosen.unavailable() or chosen.missing_for(
            method, settings.init if isinstance(settings, SamplerSettings) else None)
        if reason:
            raise UserError(f"{where} cannot run here: {reason}")
        return chosen

    def compile(self, model: Model, dataset: Dataset, engine: str | None = None,
                options: Mapping[str, str] | None = None) -> CompiledModel:
        """Compile the part of ``model`` a sampler sees (conditional draws and decisions are
        computed from the draws afterwards, the same way for every backend)."""
        chosen = self.engine(engine)
        options = {key: values[0] for key, values in self.options.items()} | dict(options or {})
        compiler = importlib.import_module(self.compiler)
        return compiler.compile(model.density_model(), dataset, chosen.name, options)

    def versions(self, engine: str | None = None) -> dict[str, str]:
        """Versions of the packages (and tools, e.g. CmdStan) the engine runs on, read
        without importing them: a request's content hash includes them."""
        chosen = self.engine(engine)
        out = {}
        for package in chosen.packages:
            try:
                out[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                pass
        return {**out, **chosen.tools()}
