"""Name → factory registries with close-match suggestions, import paths and plug-ins.

Everything a user or a domain package adds — datasets, models, pruning methods, recipes, command
groups, report kinds — is a :class:`Registry` looked up by name. Each registry also lists what
plug-ins add (:func:`plugin_entries`): installed packages through the entry-point group named by the
registry (``prunelab.datasets``, ``prunelab.methods``, ...), and prunelab's own plug-ins through
:data:`BUILTIN_PLUGINS`, the one place the core names one. Both are read on a registry's first
lookup, so importing prunelab imports no plug-in. A name of
the form ``package.module:attribute`` is imported instead, so users can plug in
their own factories without registering them — but only from a module the user
trusts: importing a module runs its code, and a name read from a store (a
manifest's model or dataset) is data that anyone who handed the store over could
have edited. A module is trusted when the user's own code or spec names it
(``Experiment.root``, ``prunelab run SPEC``, ``prunelab train``), or explicitly:
:func:`trust`, ``--trust MODULE`` on the CLI, or ``PRUNELAB_TRUST=mod1,mod2``.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from .errors import PrunelabError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    summary: str


class _Lazy:
    """An entry loaded on first use (an installed package's entry point)."""

    def __init__(self, load: Callable[[], object]) -> None:
        self.load = load


# prunelab's own plug-ins: packages that add to the registries exactly as an installed one would, by
# their module-level ENTRY_POINTS (the same table their pyproject.toml entry points declare). Named here
# as strings, imported on a registry's first lookup: an editable install's entry points are only
# refreshed by reinstalling, and a checkout run from source has none.
BUILTIN_PLUGINS: tuple[str, ...] = ("prunelab.hep",)

_PLUGIN_TABLES: dict[str, dict[str, dict[str, str]] | None] = {}  # plug-in → its ENTRY_POINTS (None: missing)


def _plugin_table(module_name: str) -> dict[str, dict[str, str]] | None:
    """A built-in plug-in's ENTRY_POINTS, read once a process; a plug-in that cannot be imported is
    warned about once and left out (prunelab runs without it)."""
    if module_name not in _PLUGIN_TABLES:
        try:
            table = getattr(importlib.import_module(module_name), "ENTRY_POINTS", {})
        except ImportError as exc:
            import warnings

            warnings.warn(f"built-in plug-in {module_name} is not available ({exc}); prunelab runs without the "
                          "datasets, models, recipes and commands it adds", stacklevel=3)
            table = None
        _PLUGIN_TABLES[module_name] = table
    return _PLUGIN_TABLES[module_name]


def plugin_entries(group: str) -> list[tuple[str, str]]:
    """(name, ``module`` or ``module:attr``) for every plug-in entry of ``group``: the built-in plug-ins'
    first, then installed packages' entry points (a name already given is not given twice)."""
    out: dict[str, str] = {}
    for module_name in BUILTIN_PLUGINS:
        for name, value in ((_plugin_table(module_name) or {}).get(group) or {}).items():
            out.setdefault(name, value)
    for point in _installed_entry_points().select(group=group):
        out.setdefault(point.name, point.value)
    return list(out.items())


_INSTALLED: list = []


def _installed_entry_points():
    """Every installed package's entry points, read once a process: each read scans every installed
    distribution's metadata, and the CLI's start-up pays for the first."""
    if not _INSTALLED:
        from importlib.metadata import entry_points

        _INSTALLED.append(entry_points())
    return _INSTALLED[0]


def load_plugins(registry: "Registry") -> None:
    """Add ``registry``'s plug-in entries: ``name = "module:attr"`` becomes an entry loaded on first use;
    ``name = "module"`` imports the module, which registers its own entries (a package adding many
    names at once, e.g. one dataset per particle pair). The user installed (or prunelab ships) these
    packages: trusted like a module they import."""
    for name, value in plugin_entries(registry.group):
        if ":" in value:
            if name not in registry._entries:
                registry.lazy(name, lambda value=value: import_object(value, registry.kind), f"from {value}")
            continue
        try:
            importlib.import_module(value)
        except Exception as exc:  # one broken package must not take the others (or the built-ins) down
            import warnings

            warnings.warn(f"{registry.kind}s from {value!r} ({registry.group} {name!r}) could not be loaded: "
                          f"{exc}", stacklevel=4)


class Registry(Generic[T]):
    """A small, typed name → factory table. ``kind`` words the errors. ``group``, when given, is the
    entry-point group whose plug-in entries (:func:`load_plugins`) are added on the first lookup;
    ``discover(registry)``, when given, is called then too, to add entries found elsewhere.
    ``alternatives``: what else a name may be, for the message naming an unknown one."""

    def __init__(self, kind: str, discover: Callable[["Registry"], None] | None = None, *,
                 group: str | None = None, alternatives: str = "'package.module:factory'") -> None:
        self.kind = kind
        self.group = group
        self.alternatives = alternatives
        self._entries: dict[str, Entry[T]] = {}
        self._discover = discover
        self._plugins_pending = group is not None

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, factory, summary)
            return factory

        return decorator

    def lazy(self, name: str, load: Callable[[], T], summary: str = "") -> None:
        """Register ``name`` to be loaded by ``load()`` when first asked for."""
        self._entries.setdefault(name, Entry(name, _Lazy(load), summary))

    def _ensure(self) -> None:
        if self._plugins_pending:
            self._plugins_pending = False
            load_plugins(self)
        if self._discover is not None:
            discover, self._discover = self._discover, None
            try:
                discover(self)
            except Exception as exc:  # a broken installed package must not break the built-ins
                import warnings

                warnings.warn(f"could not list installed {self.kind}s: {exc}", stacklevel=2)

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._ensure()
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry.factory, _Lazy):
                try:
                    loaded = entry.factory.load()
                except Exception as exc:
                    raise PrunelabError(f"{self.kind} {name!r} ({entry.summary}) could not be loaded: {exc}") from None
                entry = self._entries[name] = Entry(name, loaded, entry.summary)
            return entry.factory
        if ":" in name:
            check_trusted(name, self.kind)
            return import_object(name, self.kind)
        raise PrunelabError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}{hint} "
            f"(known: {', '.join(self.names())}; or give {self.alternatives})"
        )


def import_object(path: str, kind: str = "object"):
    """Import ``package.module:attr.sub`` and return the attribute."""
    module_name, _, attr_path = path.partition(":")
    if not module_name or not attr_path:
        raise PrunelabError(f"{kind} import path {path!r} must look like 'package.module:factory'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        hint = (f" (is the folder holding {module_name.split('.')[0]} on the path? e.g. PYTHONPATH=. for a file "
                "beside you)") if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0] else ""
        raise PrunelabError(f"cannot import module {module_name!r} for {kind} {path!r}: {exc}{hint}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PrunelabError(f"module {module_name!r} has no attribute {attr_path!r} ({kind} {path!r})") from exc
    return obj


_TRUSTED: set[str] = set()
TRUST_ENV = "PRUNELAB_TRUST"


def trust(*modules: str) -> None:
    """Allow import paths into these modules (and their submodules) in this process."""
    for module in modules:
        module = module.partition(":")[0].strip()
        if module:
            _TRUSTED.add(module)


def trust_names(*names: str | None) -> None:
    """Trust the modules of the import paths among ``names`` (model/dataset names the user gave)."""
    trust(*(n.partition(":")[0] for n in names if n and ":" in n))


def trusted_modules() -> tuple[str, ...]:
    env = {m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()}
    return tuple(sorted(_TRUSTED | env))


def check_trusted(path: str, kind: str = "object") -> None:
    module = path.partition(":")[0]
    trusted = trusted_modules()
    if any(module == t or module.startswith(t + ".") for t in trusted):
        return
    raise PrunelabError(
        f"refusing to import module {module!r} for {kind} {path!r}: importing runs its code, and this name did not "
        f"come from you (it was read from a store or a file). If you trust it: prunelab --trust {module} COMMAND ..., "
        f"prunelab.trust({module!r}) in Python, or {TRUST_ENV}={module}")
