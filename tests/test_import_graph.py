"""Layers import downward only, and the physics package is a plug-in (docs/architecture.md, "Layers and
what may import what").

Every module under src/prunelab is parsed with ``ast`` (nothing is imported or executed) and each import
statement, wherever it stands (module level, inside a function, under ``TYPE_CHECKING``), is an arrow of
the graph: a function-level import is a dependency all the same, only a later one.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

SRC = Path(os.environ.get("PRUNELAB_GRAPH_SRC", Path(__file__).resolve().parents[1] / "src")) / "prunelab"

# Bottom to top; a module may import its own layer and those below it. "hep" is a plug-in: above the
# core, imported by nobody but the one list of built-in plug-ins.
LAYERS = (
    ("base", ("errors", "registry", "_lazy", "files", "headline", "progress", "caches")),
    ("tasks", ("tasks",)),
    ("pruning", ("pruning",)),
    ("experiment", ("experiment",)),
    ("spec", ("labels", "spec")),
    ("analysis", ("analysis",)),
    ("study", ("study",)),
    ("report", ("report",)),
    ("cli", ("cli", "train_cli", "hf_cli", "__init__")),
    ("plug-ins", ("hep",)),
)
PLUGIN_LIST = "prunelab.registry"  # the one module allowed to name a built-in plug-in (as a string, lazily)
PLUGINS = ("prunelab.hep",)


def layer_of(module: str) -> int:
    head = module.split(".")[1] if module.count(".") else "__init__"
    for rank, (_, members) in enumerate(LAYERS):
        if head in members:
            return rank
    raise AssertionError(f"module {module} belongs to no layer: add it to LAYERS and docs/architecture.md")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """(prunelab module imported, line) for every import statement of the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "prunelab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "prunelab":
                continue
            # `from . import x` / `from .pkg import mod`: the submodule is what is imported when it is one
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                candidate = root.parent / Path(*sub.split("."))
                found.append((sub if candidate.with_suffix(".py").is_file() or candidate.is_dir() else target,
                              node.lineno))
    return found


def graph(root: Path = SRC) -> dict[str, list[tuple[str, int, Path]]]:
    out: dict[str, list[tuple[str, int, Path]]] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        out[name] = [(target, line, path) for target, line in imports(path, root)]
    return out


def violations(root: Path = SRC) -> list[str]:
    problems = []
    for source, edges in graph(root).items():
        for target, line, path in edges:
            where = f"{path.relative_to(root.parent.parent)}:{line}"
            in_plugin = any(source == p or source.startswith(p + ".") for p in PLUGINS)
            to_plugin = any(target == p or target.startswith(p + ".") for p in PLUGINS)
            if to_plugin and not in_plugin:
                problems.append(f"{where}: {source} imports the plug-in {target} (only {PLUGIN_LIST} names "
                                "built-in plug-ins, as strings loaded on first lookup)")
                continue
            low, high = layer_of(target), layer_of(source)
            if low > high:
                problems.append(f"{where}: {source} (layer {LAYERS[high][0]}) imports {target} (layer "
                                f"{LAYERS[low][0]}, above it)")
    return problems


# Circles inside one package that remain, in modules other work owns: a module registering the built-ins
# of a registry its neighbour defines (executors / dask_executors, method / builtin_methods, models / gpt),
# the tree and the run it starts, the store and its maintenance, effects and population claims, the command
# line and its train command (built on first use). Each is a function-level import one way. New ones fail
# the test.
KNOWN_CIRCLES = {
    ("prunelab.cli", "prunelab.train_cli"),
    ("prunelab.analysis.effects", "prunelab.analysis.population"),
    ("prunelab.experiment.dask_executors", "prunelab.experiment.executors"),
    ("prunelab.experiment.executors", "prunelab.experiment.tree"),
    ("prunelab.experiment.runner", "prunelab.experiment.tree"),
    ("prunelab.experiment.maintenance", "prunelab.experiment.store"),
    ("prunelab.pruning.builtin_methods", "prunelab.pruning.method"),
    ("prunelab.tasks.gpt", "prunelab.tasks.models"),
}


def cycles(root: Path = SRC) -> list[str]:
    """Pairs of modules that import each other (directly), with where."""
    edges = graph(root)
    seen, out = set(), []
    for source, targets in edges.items():
        for target, line, path in targets:
            back = [(ln, p) for t, ln, p in edges.get(target, []) if t == source]
            pair = tuple(sorted((source, target)))
            if back and source != target and pair not in seen and pair not in KNOWN_CIRCLES:
                seen.add(pair)
                out.append(f"{path.relative_to(root.parent.parent)}:{line} {source} → {target} and "
                           f"{back[0][1].relative_to(root.parent.parent)}:{back[0][0]} back")
    return out


def private_imports(root: Path = SRC) -> list[str]:
    """``from other_package.module import _name``: a private name taken across packages."""
    out = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package.split(".")
            target = (".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            if target.split(".")[0] != "prunelab" or target.split(".")[:2] == name.split(".")[:2]:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{path.relative_to(root.parent.parent)}:{node.lineno}: {alias.name} from {target}")
    return out


def test_every_module_belongs_to_a_layer():
    for name in graph():
        layer_of(name)


def test_layers_import_downward_only_and_nobody_imports_the_physics_plugin():
    problems = violations()
    assert not problems, "imports against docs/architecture.md's layers:\n" + "\n".join(problems)


def test_no_two_modules_import_each_other():
    found = cycles()
    assert not found, "import circles:\n" + "\n".join(found)


def test_no_private_name_is_imported_across_packages():
    found = private_imports()
    assert not found, "private names imported from another package (make them public where they belong):\n" + \
        "\n".join(found)


def test_the_checker_sees_upward_imports_and_circles(tmp_path):
    """Planted: a task module reaching up into pruning and into hep, and a pair importing each other,
    written three ways (absolute, relative, inside a function)."""
    pkg = tmp_path / "src" / "prunelab"
    for sub in ("tasks", "pruning", "hep"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text("BUILTIN = ('prunelab.hep',)\n")
    (pkg / "pruning" / "masks.py").write_text("from ..tasks import models\n")
    (pkg / "tasks" / "models.py").write_text("import prunelab.pruning.masks\n\n\ndef f():\n"
                                             "    from ..hep import gan\n")
    (pkg / "hep" / "gan.py").write_text("from .tasks import X\n")
    (pkg / "hep" / "tasks.py").write_text("from prunelab.hep import gan\nfrom ..tasks.models import _mlp\n")
    problems = violations(pkg)
    assert any("src/prunelab/tasks/models.py:1" in p and "prunelab.pruning.masks" in p and "above it" in p
               for p in problems), problems
    assert any("src/prunelab/tasks/models.py:5" in p and "plug-in prunelab.hep" in p for p in problems), problems
    assert len(problems) == 2, problems  # registry's string and hep's own imports are allowed
    found = cycles(pkg)
    assert len(found) == 2, found  # masks ↔ models, and hep.gan ↔ hep.tasks
    assert any("prunelab.hep.gan" in c and "prunelab.hep.tasks" in c for c in found)
    assert private_imports(pkg) == ["src/prunelab/hep/tasks.py:2: _mlp from prunelab.tasks.models"]
