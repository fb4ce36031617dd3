"""Plug-ins: what a separate package adds through the registries' entry-point groups, the physics package
plugging in the same way, and prunelab without it (docs/architecture.md, "Extending each seam")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch

import prunelab.registry as registry
from prunelab import PrunelabError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _python(code: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -c code`` with this checkout's prunelab first on the path, after ``env``'s PYTHONPATH."""
    env = dict(env or {})
    path = os.pathsep.join(p for p in (env.pop("PYTHONPATH", ""), str(SRC)) if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env, "PYTHONPATH": path}, cwd=ROOT)


# ---------------------------------------------------------------- the physics package plugs in like any other


def test_the_physics_plugins_table_is_its_pyproject_entry_points():
    """The built-in list reads hep's ENTRY_POINTS; an installed prunelab reads pyproject's: the same table."""
    import prunelab.hep

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    hep = {group: points for group, points in declared.items() if any("prunelab.hep" in v for v in points.values())}
    assert hep == prunelab.hep.ENTRY_POINTS
    assert set(prunelab.hep.ENTRY_POINTS) <= {"prunelab.datasets", "prunelab.models", "prunelab.methods",
                                              "prunelab.recipes", "prunelab.commands", "prunelab.report_kinds"}


def test_importing_prunelab_imports_no_plugin_and_the_cli_only_its_command_table():
    out = _python("import sys, prunelab, prunelab.tasks, prunelab.experiment.audit, prunelab.report.html\n"
                  "print(sorted(m for m in sys.modules if m.startswith('prunelab.hep')))\n"
                  "import prunelab.cli\n"
                  "print(sorted(m for m in sys.modules if m.startswith('prunelab.hep')))")
    assert out.returncode == 0, out.stderr[-2000:]
    # the command group is listed at start-up (typer builds the whole command tree); the physics itself
    # (simulator, tasks, GAN) loads when a command or a registry asks for it
    assert out.stdout.split("\n")[:2] == ["[]", "['prunelab.hep', 'prunelab.hep.cli']"]


def test_registries_find_the_physics_plugins_names_on_first_lookup():
    from prunelab.cli import COMMANDS
    from prunelab.experiment.recipes import RECIPES
    from prunelab.report.kinds import REPORT_KINDS
    from prunelab.tasks import DATASETS, MODELS

    assert {"calo_eplus_gamma", "calo_showers_eplus"} <= set(DATASETS.names())
    assert {"calo_densenet", "shower_shape_mlp", "calogan"} <= set(MODELS.names())
    assert {"TrainGAN", "FinetuneGAN"} <= set(RECIPES.names())
    from prunelab.hep.cli import calo_app

    assert COMMANDS.get("calo") is calo_app
    assert "gan" in REPORT_KINDS.names()


# ---------------------------------------------------------------- a separate package, installed


PLUGIN = {
    "labplug/__init__.py": '''
        import typer

        app = typer.Typer(help="the lab's own tools", no_args_is_help=True)


        @app.command()
        def hello(name: str) -> None:
            """Greets."""
            print(f"hello {name} from labplug")
        ''',
    "labplug/data.py": '''
        import numpy as np

        from prunelab.tasks.datasets import DATASETS, RawData


        @DATASETS.register("planted_sign", "label = sign of the first feature (planted)")
        def planted_sign(source=None):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(300, 4)).astype(np.float32)
            y = (x[:, 0] > 0).astype(np.int64)
            return RawData(x[:200], y[:200], x[200:], y[200:], ("neg", "pos"), validation=20)
        ''',
    "labplug/recipes.py": '''
        from dataclasses import dataclass

        from prunelab.experiment.recipes import Recipe


        @dataclass(frozen=True)
        class Halve(Recipe):
            """Every weight halved."""

            def describe(self):
                return "halve"

            def run(self, ctx, parent):
                return parent.evolve(weights={k: v / 2 for k, v in parent.weights.items()})
        ''',
    "labplug/reports.py": '''
        from pathlib import Path

        from prunelab.report.kinds import ReportKind


        def _applies(results):
            return any(name.startswith("lab-") for name in results.store.documents())


        def _build(results, out):
            Path(out).write_text("lab report of " + str(len(results.rows())) + " states")
            return Path(out)


        LAB = ReportKind(applies=_applies, build=_build)
        ''',
}
ENTRY_POINTS = """
[prunelab.datasets]
lab = labplug.data
[prunelab.recipes]
labplug.recipes.Halve = labplug.recipes:Halve
[prunelab.commands]
lab = labplug:app
[prunelab.report_kinds]
lab = labplug.reports:LAB
"""


def _install(tmp_path: Path) -> Path:
    """labplug as pip would leave it: its modules and a dist-info with its entry points."""
    site = tmp_path / "site"
    for name, text in PLUGIN.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(textwrap.dedent(text))
    info = site / "labplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def test_an_installed_package_adds_a_dataset_a_recipe_a_command_and_a_report_kind(tmp_path):
    site = _install(tmp_path)
    env = {"PYTHONPATH": str(site), "PRUNELAB_DATA": str(tmp_path / "data")}
    code = textwrap.dedent(f"""
        import sys, json
        import prunelab
        assert "labplug" not in sys.modules  # nothing is imported before a registry is asked
        from prunelab import load_dataset
        from prunelab.experiment import Experiment, open_store
        from prunelab.experiment.audit import recompute
        from prunelab.report import build_report
        data = load_dataset("planted_sign")
        x, y = data.test.x, data.test.y  # standardised: the label is still a threshold on the first feature
        from labplug.recipes import Halve
        exp = Experiment({str(tmp_path / 'store')!r})
        halved = exp.root(dataset="planted_sign", model="lenet_300_100", seed=0).then(Halve())
        exp.documents["lab-run"] = {{"what": "planted"}}
        exp.run()
        store = open_store({str(tmp_path / 'store')!r})
        again = recompute(store.store, halved.hash)  # an installed recipe: no --trust needed
        out = build_report(store, {str(tmp_path / 'report.html')!r})
        print(json.dumps({{"test": int(len(y)), "agree": bool(x[y == 1, 0].min() > x[y == 0, 0].max()),
                           "identical": again.identical, "recipe": store.get(halved.hash)["recipe"]["type"],
                           "report": open(out).read()}}))
    """)
    out = _python(code, env)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer == {"test": 100, "agree": True, "identical": True, "recipe": "labplug.recipes.Halve",
                      "report": "lab report of 2 states"}
    cli = subprocess.run([sys.executable, "-m", "prunelab.cli", "lab", "hello", "world"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{SRC}"})
    assert cli.returncode == 0 and "hello world from labplug" in cli.stdout, cli.stderr[-2000:]


def test_a_broken_plugin_is_warned_about_and_the_rest_works(tmp_path):
    site = _install(tmp_path)
    (site / "labplug" / "data.py").write_text("raise RuntimeError('the lab data server is down')\n")
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from prunelab.tasks import DATASETS\n"
            "print('digits' in DATASETS, 'planted_sign' in DATASETS)")
    out = _python(code, {"PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True False"
    assert "labplug.data" in out.stderr and "the lab data server is down" in out.stderr


# ---------------------------------------------------------------- a user's recipe in a module they trust


USER_RECIPE = '''
from dataclasses import dataclass

from prunelab.experiment.recipes import Recipe


@dataclass(frozen=True)
class Negate(Recipe):
    """Every weight's sign flipped."""

    def describe(self):
        return "negate"

    def run(self, ctx, parent):
        return parent.evolve(weights={k: -v for k, v in parent.weights.items()})
'''


def test_verify_recomputes_a_users_recipe_only_once_its_module_is_trusted(tmp_path, monkeypatch):
    from prunelab.experiment import Experiment, open_store
    from prunelab.experiment.audit import recompute, recomputable

    (tmp_path / "labrecipes.py").write_text(USER_RECIPE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "labrecipes", raising=False)
    monkeypatch.setattr(registry, "_TRUSTED", set())
    monkeypatch.delenv(registry.TRUST_ENV, raising=False)
    import labrecipes

    exp = Experiment(tmp_path / "store")
    root = exp.root(dataset="digits", model="lenet_300_100", seed=0)
    negated = root.then(labrecipes.Negate())
    exp.run()
    store = open_store(tmp_path / "store").store
    stored = store.load(negated.hash)
    assert store.manifest(negated.hash)["recipe"]["type"] == "labrecipes.Negate"
    assert all(torch.equal(w, -store.load(root.hash).weights[k]) for k, w in stored.weights.items())

    sys.modules.pop("labrecipes")  # as a new process has it
    why = recomputable(store, negated.hash)
    assert why is not None and "not trusted" in why and "--trust labrecipes" in why
    with pytest.raises(PrunelabError, match="not trusted"):
        recompute(store, negated.hash)
    assert "labrecipes" not in sys.modules  # refused before anything was imported

    registry.trust("labrecipes")
    assert recomputable(store, negated.hash) is None
    assert recompute(store, negated.hash).identical


# ---------------------------------------------------------------- prunelab without the physics package

# Non-physics tests that cover the registries' users, chosen to run in about a minute of CPU together:
# datasets (names, variants, errors listing the known ones), models (unknown names, import paths),
# evaluation (two-class ROC now in tasks/), pruning methods (built in, by import path, installed), the
# store's reading commands (which must not import torch), the report through the CLI (report kinds asked
# first), and the import graph.
WITHOUT_HEP = ("tests/test_datasets.py", "tests/test_evaluation.py", "tests/test_method_plugins.py",
               "tests/test_cli_store.py", "tests/test_import_graph.py",
               "tests/test_models.py::test_bad_model_requests_are_clear_errors",
               "tests/test_models.py::test_user_model_by_import_path", "tests/test_report.py::test_cli_report")


def test_prunelab_runs_without_the_physics_package(tmp_path):
    """The non-physics tests pass with prunelab.hep unimportable (sys.modules entry None, as for a package
    that is not there), and the missing plug-in is warned about, not silent."""
    code = textwrap.dedent(f"""
        import sys, warnings
        sys.modules["prunelab.hep"] = None
        import pytest
        from prunelab.tasks import DATASETS
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = DATASETS.names()
        assert not [n for n in names if n.startswith("calo")], names
        print("WARNED", [str(w.message) for w in caught])
        sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *{list(WITHOUT_HEP)!r}]))
    """)
    out = _python(code, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    warned = next(line for line in out.stdout.splitlines() if line.startswith("WARNED"))
    assert "built-in plug-in prunelab.hep is not available" in warned
    assert " passed" in out.stdout and " failed" not in out.stdout
    cli = _python("import sys; sys.modules['prunelab.hep'] = None\n"
                  "from prunelab.cli import main; sys.argv = ['prunelab', '--help']; main()")
    assert cli.returncode == 0 and " calo " not in cli.stdout and " ls " in cli.stdout, cli.stdout + cli.stderr
    assert "prunelab.hep is not available" in cli.stderr
