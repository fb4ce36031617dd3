"""The ``prunelab`` command line."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from .headline import metric_info, short_headline
from .errors import PrunelabError, printable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible neural-network pruning research on PyTorch.",
)
console = Console()


# ---------------------------------------------------------------- tables that fit the terminal


@dataclass(frozen=True)
class Col:
    """A column of :func:`print_table`.

    ``fit``: ``num`` is never wrapped or cut (numbers, intervals, hashes); ``wrap`` wraps at spaces
    (names); ``cut`` stays on one line and is cut with "…" when narrow (labels of a listing).
    ``drop``: 0 is always shown; on a narrow terminal the columns with the highest ``drop`` are left
    out first. ``width``: the narrowest a ``wrap`` or ``cut`` column is made before columns are left out.
    """

    header: str
    fit: str = "num"
    drop: int = 0
    width: int = 8
    justify: str = "left"


_BOXED_EXTRA = (3, 1)  # rich's default box: 3 characters a column (padding and a rule) + 1
_COMPACT_EXTRA = (2, -2)  # no box, padding collapsed: 2 characters between columns


def _layout(cols: list[Col], cells: list[list[str]], width: int):
    """(indices of the columns shown, their widths, compact?) for a table of ``cells`` in ``width``
    characters: boxed where everything fits whole, else without its box, else without the columns
    of highest ``drop`` until every number fits whole; names then wrap and labels are cut."""
    from rich.cells import cell_len

    n = len(cols)
    longest = [max([cell_len(row[i]) for row in cells], default=0) for i in range(n)]
    header_word = [max(cell_len(w) for w in c.header.split() or [""]) for c in cols]
    word = [max([header_word[i]] + [cell_len(w) for row in cells for w in row[i].split()]) for i in range(n)]
    natural = [max(longest[i], header_word[i]) for i in range(n)]  # whole cells, headers may wrap
    full = [max(longest[i], cell_len(c.header)) for i, c in enumerate(cols)]  # headers on one line too

    def floor(i: int) -> int:
        c = cols[i]
        if c.fit == "num":
            return natural[i]
        if c.fit == "wrap":
            return max(word[i], min(natural[i], c.width))
        return max(cell_len(c.header), min(natural[i], c.width))  # cut: its header whole

    def extra(k: int, compact: bool) -> int:
        per, plus = _COMPACT_EXTRA if compact else _BOXED_EXTRA
        return per * k + plus

    def spread(widths: dict[int, int], spare: int) -> list[int]:
        """Give what is left to names and labels, then to headers of numbers (which wrap meanwhile)."""
        for kinds, goal in ((("wrap", "cut"), natural), (("num",), full)):
            while spare > 0:
                wanting = [i for i in widths if cols[i].fit in kinds and widths[i] < goal[i]]
                if not wanting:
                    break
                for i in wanting[:spare]:
                    widths[i] += 1
                    spare -= 1
        return list(widths.values())

    shown = list(range(n))
    for compact in (False, True):
        if sum(natural) + extra(n, compact) <= width:
            return shown, spread(dict(enumerate(natural)), width - sum(natural) - extra(n, compact)), compact
    floors = {i: floor(i) for i in shown}
    while sum(floors[i] for i in shown) + extra(len(shown), True) > width:
        droppable = [i for i in shown if cols[i].drop > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
    if sum(floors[i] for i in shown) + extra(len(shown), True) > width:  # very narrow: labels to their
        for i in shown:  # headers, long names folded inside words; numbers stay whole
            if cols[i].fit == "cut":
                floors[i] = min(floors[i], max(4, cell_len(cols[i].header)))
            elif cols[i].fit == "wrap":
                floors[i] = min(floors[i], max(4, cols[i].width))
    widths = {i: floors[i] for i in shown}
    return shown, spread(widths, width - sum(widths.values()) - extra(len(shown), True)), True


def print_table(cols: list[Col], rows: list[list[str]], *, title: str | None = None,
                styles: list[str | None] | None = None, out: Console | None = None) -> list[str]:
    """Print rows of plain text (never read as markup) as a table that fits the terminal (see
    :func:`_layout`); returns the headers of the columns left out, after saying which."""
    from rich import box
    from rich.table import Column
    from rich.text import Text

    out = out or console
    shown, widths, compact = _layout(cols, rows, out.width)
    columns = []
    for i, w in zip(shown, widths):
        c = cols[i]
        columns.append(Column(c.header, width=w, justify=c.justify, no_wrap=c.fit == "cut",
                              overflow="ellipsis" if c.fit == "cut" else "fold"))
    table = Table(*columns, title=title, **(dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                                                 collapse_padding=True) if compact else {}))
    for r, row in enumerate(rows):
        table.add_row(*(Text(row[i]) for i in shown), style=(styles or [None] * len(rows))[r])
    out.print(table)
    left_out = [cols[i].header for i in range(len(cols)) if i not in shown]
    if left_out:
        out.print(f"({', '.join(left_out)}: left out to fit {out.width} columns)", style="dim")
    return left_out


@app.callback()
def _options(
    trust: Optional[list[str]] = typer.Option(
        None, "--trust", metavar="MODULE",
        help="allow model, dataset and pruning-method import paths into MODULE that were read from a store "
             "(importing runs its code; names in your own spec or command line are trusted already); give it "
             "before the command: prunelab --trust MODULE verify ... Repeatable."),
) -> None:
    from .registry import trust as trust_modules

    trust_modules(*(trust or []))


@app.command()
def datasets() -> None:
    """List the registered datasets."""
    from .tasks import DATASETS

    table = Table("name", "description", title="datasets (or 'package.module:factory')")
    for entry in DATASETS:
        table.add_row(entry.name, entry.summary)
    console.print(table)


@app.command()
def models() -> None:
    """List the registered models."""
    from .tasks import MODELS

    table = Table("name", "default init", "inputs", "description", title="models (or 'package.module:factory')")
    for entry in MODELS:
        shape = entry.factory.input_shape
        table.add_row(entry.name, entry.factory.default_init, "any" if shape is None else str(shape), entry.summary)
    console.print(table)


@app.command()
def methods() -> None:
    """List the pruning methods: built in, installed (entry point prunelab.methods), and the techniques."""
    from .pruning.method import methods_table
    from .pruning.methods import TECHNIQUES

    table = Table("method", "needs; supports", "description",
                  title="pruning methods (or your own class as 'package.module:Class'; docs/pruning.md)")
    for name, needs, summary in methods_table():
        table.add_row(name, needs, escape(printable(summary)))
    console.print(table)
    techniques = Table("technique", "method", "structure", "scope", title="named techniques (a spec's technique =)")
    for name, settings in TECHNIQUES.items():
        norm = f" (L{settings['norm']})" if "norm" in settings else ""
        techniques.add_row(name, settings["method"], settings["structure"] + norm, settings["scope"])
    console.print(techniques)
    console.print("Any method name is a technique too (unstructured, layer by layer); add pattern = \"2:4\" for N:M "
                  "and calibration = { samples = 128 } for the methods that read data.")


class _Deferred(TyperCommand):
    """A command whose options are built on first use, by ``build()``: ``prunelab train``'s come from
    TrainConfig, whose module imports torch, which listing commands and ``--help`` must not pay for."""

    build = None

    def target(self):
        if getattr(self, "_target", None) is None:
            self._target = type(self).build()
        return self._target

    def get_params(self, ctx):
        return self.target().get_params(ctx)

    def get_help_option_names(self, ctx):
        return self.target().get_help_option_names(ctx)

    def invoke(self, ctx):
        return self.target().invoke(ctx)


class _Train(_Deferred):
    @staticmethod
    def build():
        from .train_cli import command

        return command()


@app.command(cls=_Train)
def train() -> None:
    """Train and evaluate MODEL on DATASET, then print per-class test metrics."""


EXAMPLE_SPEC = """\
# A prunelab study: `prunelab run THIS_FILE`. Every key is checked; see docs/studies.md.

[study]
name = "lottery"
store = "runs/lottery"          # where states are stored (override with --store)
seeds = [0, 1, 2]               # every number in the summary is a mean over these, with a 95 % CI

[task]
dataset = "digits"              # prunelab datasets: digits, mnist1d, mnist, fashion_mnist, kmnist, cifar10
model = "lenet_300_100"         # prunelab models

[training]                      # one training run (prunelab train's options)
iterations = 600
batch_size = 60
optimizer = "adam"
lr = 1.2e-3
eval_every = 100                # validation curve; early-stopping iteration = its minimum loss
# device = "auto"               # cpu (default), cuda, cuda:N; auto = cuda when a GPU is visible
# vectorize = 8                 # train same-shaped models 8 at a time in one pass (pays off on a GPU)

[branches.ticket]               # iterative magnitude pruning with rewinding to the original init
technique = "l1_unstructured"   # l1/global/random_unstructured, l1/l2/linf/random_structured, snip, synflow,
                                # grasp, wanda, sparsegpt, or your own "module:Class" (prunelab methods)
rate = 0.3                      # of the remaining weights per round
output_rate = 0.15              # the output layer at half the rate (Frankle & Carbin)
rounds = 8
reset = "rewind"                # or "finetune"
rewind_iteration = 0            # k > 0: rewind to iteration k of the dense run

[branches.reinit]               # control: the ticket's masks with a fresh random init
control = "reinit"
of = "ticket"

[branches.random]               # control: random masks with the ticket's per-layer sparsity
control = "random_pruning"
of = "ticket"

# Claims written before the run, tested after it as one family (Holm; docs/analysis.md).
[[hypotheses]]
claim = "ticket > reinit"       # per seed, ticket minus reinit averaged over the rounds in range
remaining_at_most = 15          # percent of weights remaining (or rounds = [6, 7, 8])
"""


@app.command()
def init(path: Path = typer.Argument(Path("study.toml"), help="where to write the example spec")) -> None:
    """Write a commented example study spec."""
    if path.exists():
        raise PrunelabError(f"{path} already exists; not overwriting it")
    path.write_text(EXAMPLE_SPEC)
    console.print(f"wrote {path}; run it with: prunelab run {path}")


@app.command()
def run(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="study spec (TOML)"),
    store: Optional[Path] = typer.Option(None, help="store directory (overrides [study].store)"),
    executor: str = typer.Option("serial", help="serial, local, a Dask scheduler address (tcp://host:8786), an "
                                                "installed executor, or your own as 'package.module:Class'"),
    workers: Optional[int] = typer.Option(None, help="worker processes for --executor local"),
    fallback: bool = typer.Option(True, help="--executor local: run in this process when a cluster cannot gain "
                                             "(no two tasks can run at once, or too little work for its start-up)"),
    threads: int = typer.Option(1, help="torch threads per task (results are bitwise reproducible per value)"),
    csv: Optional[Path] = typer.Option(None, help="also write the summary table here"),
    interval: str = typer.Option("auto", help="intervals over seeds: auto (t below 30 seeds, bootstrap from 30), "
                                              "t, or bootstrap"),
    device: Optional[str] = typer.Option(None, help="train on auto, cpu, cuda or cuda:N (overrides [training] "
                                                    "device; cpu and cuda states have different hashes)"),
) -> None:
    """Run a study: validate SPEC, show the plan, run what is missing, print the summary."""
    from .experiment.executors import is_import_path, make_executor
    from .experiment.planning import plan
    from .registry import trust_names
    from .spec import load_spec, with_device
    from .study import build_study, check_interval, comparison_pairs, hypothesis_results, summarize

    if is_import_path(executor):
        trust_names(executor)  # typed on your command line: your own name, trusted like a spec's
    runner = make_executor(executor)  # an unknown executor fails before the spec is even read
    spec = load_spec(spec_path)
    if device is not None:
        spec = with_device(spec, device)
    check_interval(interval)  # a bad --interval fails before anything runs
    folder = Path(store if store is not None else spec.study.store)
    new_store = not folder.exists()
    try:
        try:
            tree = build_study(spec, store)
        except PrunelabError as exc:
            raise PrunelabError(f"{spec_path}: {exc}") from None
        for note in tree.notes:
            console.print(note, style="yellow")
        tasks, total, done = plan(tree.experiment)
        pending = sum(len(t.states) + len(t.probes) for t in tasks)
        console.print(f"[bold]{spec.study.name}[/]: {len(tree.experiment.states)} states, {len(done)} already stored, "
                      f"{pending} to run on {executor} → {tree.experiment.store.root}")
        summary = tree.experiment.run(runner, workers=workers, threads=threads, fallback=fallback)
    except PrunelabError:
        if new_store:
            _remove_if_nothing_stored(folder)
        raise
    console.print(str(summary))
    rows = summarize(tree, interval=interval)
    swept = any(r.config is not None for r in rows)
    binary = bool(rows) and all(r.auc is not None for r in rows)  # two-class task: the ROC AUC beside the accuracy
    metric = "test " + metric_info(rows[0].metric if rows else "accuracy").label
    early = any(r.early_stopping is not None for r in rows)  # a validation curve was recorded
    cols = [*([Col("configuration", "wrap", width=14)] if swept else []), Col("branch", "wrap"), Col("round"),
            Col("weights remaining"), Col(f"{metric} (mean ± 95% CI)"),
            *([Col("ROC AUC (mean ± 95% CI)", drop=2)] if binary else []),
            *([Col("early-stop iteration", drop=1)] if early else []), Col("seeds", drop=3)]
    table = []
    for r in rows:
        ci = _interval(r.mean, r.ci_low, r.ci_high, r.n)
        auc = [f"{r.auc[0]:.4f}" + _interval(*r.auc, r.n)] if binary else []
        stop = []
        if early:
            e = r.early_stopping
            stop = ["" if e is None else f"{e[0]:.0f}" + ("" if r.n < 2 else f" ± {(e[2] - e[1]) / 2:.0f}")]
        table.append([*([printable(r.config)] if swept else []), printable(r.branch), str(r.round),
                      f"{r.remaining:.1f} %", f"{r.mean:.4f}{ci}", *auc, *stop, str(r.n)])
    print_table(cols, table, title=f"{spec.study.name}: {metric} over seeds")
    _print_paired_effects(rows, comparison_pairs(spec), metric)
    if any(h.population for h in spec.hypotheses):  # claims about populations read the stored models
        from .analysis.tables import headline_metric, study_points

        results = _open(Path(tree.experiment.store.root))
        key = headline_metric(results)
        _print_hypotheses(study_points(results, key, study=spec.study.name), key, results)
    elif spec.hypotheses:
        _hypothesis_table(hypothesis_results(spec, rows), metric)
    if spec.instability is not None:
        _print_instability(tree, interval)
    if swept:
        _print_variation(rows, spec.study.name)
    if csv is not None:
        import csv as csv_module

        with open(csv, "w", newline="") as fh:
            writer = csv_module.writer(fh)
            writer.writerow(["config", "branch", "round", "remaining_percent", "n", "mean", "ci_low", "ci_high",
                             "values", "seeds", "early_stopping_mean"])
            for r in rows:
                writer.writerow([r.config or "", r.branch, r.round, f"{r.remaining:.4f}", r.n, r.mean, r.ci_low,
                                 r.ci_high, " ".join(f"{v:.6f}" for v in r.values), " ".join(map(str, r.seeds)),
                                 "" if r.early_stopping is None else f"{r.early_stopping[0]:.1f}"])
    if not summary.ok:
        raise typer.Exit(1)


def _remove_if_nothing_stored(folder: Path) -> None:
    """A store this command created and stopped before storing anything (a bad option found after
    planning) is removed: an empty folder left behind looks like a study that ran."""
    import shutil

    states, blobs = folder / "states", folder / "blobs"
    stored = any(states.glob("*.json")) if states.is_dir() else False
    stored = stored or (blobs.is_dir() and any(p.is_file() for p in blobs.rglob("*")))
    if not stored and folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def _interval(mean: float, low: float, high: float, n: int) -> str:
    """`` ± half-width``, or `` [low, high]`` where the interval was clipped to the metric's range."""
    if n < 2:
        return ""
    if abs((high - mean) - (mean - low)) > 1e-9:
        return f" [{low:.4f}, {high:.4f}]"
    return f" ± {(high - low) / 2:.4f}"


def _print_instability(tree, interval: str) -> None:
    from .study import instability

    rows = instability(tree, interval=interval)
    if not rows:
        return
    swept = any(r.config is not None for r in rows)
    cols = [*([Col("configuration", "wrap", width=14)] if swept else []), Col("copies from iteration"),
            Col("seeds", drop=1), Col("error barrier (mean ± 95% CI)"), Col("endpoint error", drop=2)]
    table = []
    for r in rows:
        ci = "" if r.n < 2 else f" ± {(r.ci_high - r.ci_low) / 2:.4f}"
        table.append([*([printable(r.config or "")] if swept else []), str(r.iteration), str(r.n),
                      f"{r.mean:.4f}{ci}", f"{r.endpoint_error:.4f}"])
    print_table(cols, table,
                title="instability: test-error barrier between two copies trained with different data orders")
    console.print("barrier: the highest test error on the straight line between the copies minus the mean of their "
                  "own errors (Frankle et al. 2020); near 0: stable to the data order from that iteration.")


def _print_paired_effects(rows, pairs, metric: str) -> None:
    from .study import paired_effects

    effects = paired_effects(rows, pairs)
    if not effects:
        return
    swept = any(e.config is not None for e in effects)
    seeds = _seeds(e.n for e in effects)
    cols = [*([Col("configuration", "wrap", width=14)] if swept else []), Col("A", "wrap"), Col("B", "wrap"),
            Col("round"), Col("weights remaining", drop=1), *([] if seeds else [Col("seeds", drop=3)]),
            Col("A − B (mean, 95% CI)"), Col("d_z", drop=2)]
    table = []
    for e in effects:
        ci = "" if e.n < 2 else f" [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"
        table.append([*([printable(e.config or "")] if swept else []), printable(e.a), printable(e.b), str(e.round),
                      f"{e.remaining:.1f} %", *([] if seeds else [str(e.n)]), f"{e.mean:+.4f}{ci}",
                      "" if e.effect_size != e.effect_size else f"{e.effect_size:+.2f}"])
    print_table(cols, table, styles=["bold" if e.excludes_zero else None for e in effects],
                title=f"paired by seed{f' ({seeds})' if seeds else ''}: {metric} of A minus B (bold: the interval "
                      "excludes 0)")
    console.print("d_z: mean paired difference / SD of the differences. Intervals are per row (not corrected "
                  "for the number of rows); `prunelab compare` gives p-values with a multiple-comparison correction.")


def _print_variation(rows, name: str) -> None:
    """Seed spread beside systematic (sweep) spread, per branch and round."""
    import pandas as pd

    from .analysis.variation import seed_vs_systematic

    frame = pd.DataFrame([{"config": r.config, "branch": r.branch, "round": r.round, "state": h, "accuracy": v}
                          for r in rows for v, h in zip(r.values, r.states)])
    table = seed_vs_systematic(frame, "accuracy")
    if table.empty:
        return
    cols = [Col("branch", "wrap"), Col("round"), Col("configs", drop=2), Col("seed SD"),
            Col("SD of config means", drop=1), Col("systematic SD"), Col("ANOVA p"),
            Col("best configuration", "wrap", width=16)]
    out = []
    for t in table.itertuples():
        p = "" if t.anova_p != t.anova_p else f"{t.anova_p:.3g}"
        out.append([printable(t.branch), str(t.round), str(t.configs), f"{t.seed_sd:.4f}", f"{t.config_sd:.4f}",
                    f"{t.systematic_sd:.4f}", p, printable(f"{t.best_config} ({t.best_mean:.4f})")])
    print_table(cols, out, title=f"{name}: seed variation vs systematic variation (test accuracy)")
    console.print("systematic SD: the spread of the configuration means with the seed noise they carry removed "
                  "(one-way random effects); ANOVA p: do the configurations differ more than seeds explain?")


def _open(store: Path):
    from .experiment import open_store

    results = open_store(store)
    _OPENED.append(results)
    _warn_damaged(results.damaged)
    return results


# What reading commands opened, and the damaged files already reported: a reading command goes on
# with the rest of the store and exits with status 2 when it met any (tests/test_adversarial.py).
_OPENED: list = []
_WARNED: set = set()


def _warn_damaged(damaged: dict) -> None:
    for path, why in damaged.items():
        if path in _WARNED:
            continue
        _WARNED.add(path)
        console.print(f"warning: {printable(path)}: damaged, left out ({printable(why)}); `prunelab verify` lists "
                      "every problem and "
                      "`prunelab verify --repair` moves them aside", style="yellow", soft_wrap=True, markup=False)


def _damage_seen() -> bool:
    """Report damage met after the first warnings (while reading summaries, probes); any at all?"""
    for results in _OPENED:
        _warn_damaged(results.damaged)
    return bool(_WARNED)


@app.command()
def tree(
    store: Path = typer.Argument(..., help="store directory"),
    dot: Optional[Path] = typer.Option(None, help="also write Graphviz DOT here"),
    full: bool = typer.Option(False, help="nest every state under its parent (default: each chain at one level, "
                                          "side branches nested)"),
) -> None:
    """Show the experiment tree of STORE (IMP chains collapsed to one level; --full nests everything)."""
    results = _open(store)
    if console.is_terminal:  # with colours, line by line
        for line in results.tree_lines(collapse=not full):
            console.print(line, soft_wrap=True, highlight=False)
    else:  # to a file or a pipe: plain text, written at once (100,000 states in seconds)
        sys.stdout.write("".join(line + "\n" for line in results.tree_lines(collapse=not full, markup=False)))
    if dot is not None:
        dot.write_text(results.dot())
        console.print(f"DOT written to {dot}")


@app.command("ls")
def list_states(
    store: Path = typer.Argument(..., help="store directory"),
    tag: Optional[str] = typer.Option(None, help="only states with this tag"),
    recipe: Optional[str] = typer.Option(None, help="only states made by this recipe (Train, Prune, ...)"),
    depth: Optional[int] = typer.Option(None, help="only states at this depth"),
    status: Optional[str] = typer.Option(None, help="done or failed"),
    limit: int = typer.Option(200, help="show at most this many rows (0: all)"),
) -> None:
    """List the states of STORE as a table."""
    from .experiment.query import list_states as query_states

    shown, total, damaged = query_states(store, tag=tag, recipe=recipe, depth=depth, status=status, limit=limit)
    _warn_damaged(damaged)
    all_done = all(r["status"] == "done" for r in shown)
    cols = [Col("hash"), Col("depth", drop=3, justify="right"), Col("recipe", "cut", width=24),
            Col("status", drop=5 if all_done else 0), Col("tags", "cut", drop=1, width=13), Col("test"),
            Col("sparsity", drop=2, justify="right"), Col("seconds", drop=4, justify="right")]
    rows = [[r["hash"][:HASH_CHARS], str(r["depth"] or 0), printable(r["label"]), printable(r["status"] or "?"),
             printable(",".join(r["tags"])), printable(r["headline"] or ""),
             "" if r["sparsity"] is None else f"{r['sparsity']:.3f}", f"{r['seconds'] or 0:.2f}"] for r in shown]
    print_table(cols, rows)
    if len(shown) < total:
        console.print(f"{len(shown):,} of {total:,} states shown (--limit 0 lists all; --tag, --recipe, "
                      "--depth and --status filter)")


HASH_CHARS = 12  # of a hash in listings: unique in any store (show takes any unique prefix)


@app.command()
def show(
    store: Path = typer.Argument(..., help="store directory"),
    state: str = typer.Argument(..., help="state hash or a unique prefix of it"),
    json_out: bool = typer.Option(False, "--json", help="print the state's manifest as stored (JSON): every "
                                                        "metric, tensor entry, timing and a failure's traceback"),
    all_steps: bool = typer.Option(False, "--lineage", help="list every step of the lineage (default: the root "
                                                             "and the last steps)"),
) -> None:
    """Show one state: what it is, its lineage, metrics, sparsity, timings and where its tensors are
    (--json: its whole manifest)."""
    results = _open(store)
    m = results.get(state)
    if json_out:  # the manifest as stored (verified), escaped to ASCII: no control code reaches a terminal
        sys.stdout.write(json.dumps(m, indent=2, ensure_ascii=True) + "\n")
        return
    _show_state(results, m, all_steps)


LINEAGE_STEPS = 8  # a longer lineage shows its root, "⋮", and its last steps (--lineage: all)


def _show_state(results, m: dict, all_steps: bool) -> None:
    """The human summary of one state (``show``)."""
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(key: str, *lines: str, style: str | None = None) -> None:
        grid.add_row(key, Text("\n".join(printable(line) for line in lines), style=style or ""))

    recipe = m.get("recipe") or {}
    status = printable(m.get("status"))
    row("state", m["hash"])
    label, kind = recipe.get("label") or recipe.get("type"), f"{recipe.get('type')}, version {recipe.get('version')}"
    row("recipe", kind if label == recipe.get("type") else f"{label} · {kind}")
    row("status", status, style=None if status == "done" else "red")
    error = m.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        row("error", str(message), "the traceback: prunelab show STORE HASH --json", style="red")
    row("tags", ", ".join(m.get("tags") or []) or "-")
    chain = results.lineage(m["hash"])
    row("lineage", *_lineage_lines(chain, all_steps))
    params = _param_text(recipe.get("params") or {})
    if params:
        row("parameters", " · ".join(params))
    metrics = m.get("metrics") if isinstance(m.get("metrics"), dict) else {}
    shown = set()
    for split, lines in _evaluations(metrics):
        row(split, *lines)
        shown.add(split)
    sparsity = _sparsity_lines(m, metrics)
    if sparsity:
        row("sparsity", *sparsity)
        shown |= {"sparsity", "layers"}
    training = []
    if m.get("iteration") is not None:
        training.append(f"iteration {m['iteration']}")
    if isinstance(metrics.get("early_stopping_iteration"), (int, float)):
        training.append(f"early stopping at {metrics['early_stopping_iteration']:g} (lowest validation loss)")
    if isinstance(metrics.get("curve"), list) and metrics["curve"]:
        points = len(metrics["curve"])
        training.append(f"{points} validation point{'s' if points > 1 else ''} (--json: the curve)")
    if training:
        row("training", "; ".join(training))
    shown |= {"early_stopping_iteration", "curve", "train_seconds"}
    other = _other_metrics(metrics, shown)
    if other:
        row("other", " · ".join(other))
    row("time", *_time_lines(m.get("timings"), metrics.get("train_seconds")))
    env = m.get("environment") if isinstance(m.get("environment"), dict) else {}
    row("made with", _environment(env, m.get("torch_threads")))
    console.print(grid)
    _print_tensors(results, m, chain)
    for probe in results.probes(m["hash"]):
        measured = []
        for k, v in (probe.get("result") or {}).items():
            try:
                if isinstance(v, dict):
                    measured.append(f"{k} {short_headline(v)}")
            except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
                continue  # not an evaluation
        console.print(f"probe {printable(probe.get('label'))}: " + ", ".join(map(printable, measured)), markup=False)
    console.print("(prunelab show STORE HASH --json: the whole manifest)", style="dim")


def _lineage_lines(chain: list[dict], all_steps: bool) -> list[str]:
    """``depth hash label · headline`` from the root to the state; a long one shortened."""
    def line(step: dict) -> str:
        recipe = step.get("recipe") or {}
        text = f"{step.get('depth', 0):>2} {step['hash'][:HASH_CHARS]} {recipe.get('label') or recipe.get('type')}"
        test = (step.get("metrics") or {}).get("test") if isinstance(step.get("metrics"), dict) else None
        try:
            if isinstance(test, dict):
                text += f" · {short_headline(test)}"
        except (KeyError, TypeError, ValueError):
            pass
        return text

    if all_steps or len(chain) <= LINEAGE_STEPS + 2:  # hiding one or two steps would save nothing
        return [line(step) for step in chain]
    tail = LINEAGE_STEPS - 2
    return [line(chain[0]), f"   ⋮ {len(chain) - 1 - tail} steps (--lineage lists them)"] + \
        [line(step) for step in chain[-tail:]]


def _param_text(params: dict, prefix: str = "") -> list[str]:
    """A recipe's parameters as ``key value``: nested keys dotted (a training's ``config.`` left
    out), references to states as short hashes, empty and unset values left out."""
    out = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "$state" in value:
            out.append(f"{name} {str(value['$state'])[:HASH_CHARS]}")
        elif isinstance(value, dict):
            out += _param_text(value, "" if name == "config" else f"{name}.")
        elif value is None or value is False or value == [] or value == "":
            continue
        elif isinstance(value, list):
            items = [str(v["$state"])[:HASH_CHARS] if isinstance(v, dict) and "$state" in v else _number(v)
                     for v in value]
            out.append(f"{name} {','.join(items)}")
        else:
            out.append(f"{name} {_number(value)}")
    return out


def _number(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (int, float)):
        text = str(value)
        return text[:HASH_CHARS] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return f"{value:.4g}"


def _evaluations(metrics: dict) -> list[tuple[str, list[str]]]:
    """Each evaluation among the metrics (test first): its headline, which way is better, the
    other scores, and the class of lowest recall."""
    from .headline import METRICS, headline, metric_info

    found = []
    for split in sorted(metrics, key=lambda k: (k != "test", k != "validation", k)):
        ev = metrics[split]
        if not isinstance(ev, dict):
            continue
        try:
            name, value = headline(ev)
            value = float(value)
        except (KeyError, TypeError, ValueError):
            continue
        info = metric_info(name)
        first = f"{info.label} {value:.4f} ({'higher' if info.higher_is_better else 'lower'} is better)"
        scores = [(k, v) for k, v in ev.items() if k != name and isinstance(v, (int, float))
                  and not isinstance(v, bool)]
        scores.sort(key=lambda kv: (kv[0] not in METRICS, list(METRICS).index(kv[0]) if kv[0] in METRICS else 0,
                                    kv[0]))
        lines = [first]
        if scores:
            lines.append(" · ".join(f"{metric_info(k).label} {_number(v)}" for k, v in scores))
        per_class = ev.get("per_class")
        if isinstance(per_class, list) and len(per_class) > 1:
            try:
                worst = min(per_class, key=lambda c: float(c["recall"]))
                lines.append(f"lowest recall: class {worst['class']} ({float(worst['recall']):.3f}; "
                             f"{len(per_class)} classes, --json: all)")
            except (KeyError, TypeError, ValueError):
                pass
        found.append((split, lines))
    return found


def _sparsity_lines(m: dict, metrics: dict) -> list[str]:
    from .experiment.summary import remaining_percent

    masks = m.get("masks") or {}
    try:
        remaining = remaining_percent(m)
    except (KeyError, TypeError, ValueError):
        remaining = None
    sparsity = metrics.get("sparsity")
    if not masks and not isinstance(sparsity, (int, float)):
        return ["none: no masks (dense)"] if m.get("weights") else []
    lines = []
    head = []
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool):
        head.append(f"{100 * sparsity:.1f} % of the prunable weights pruned")
    if remaining is not None:
        head.append(f"{remaining:.1f} % remain")
    head.append(f"{len(masks)} masked tensors")
    lines.append(", ".join(head))
    layers = metrics.get("layers")
    if isinstance(layers, dict) and layers:
        parts = [f"{name} {100 * v:.1f}%" for name, v in list(layers.items())[:8] if isinstance(v, (int, float))]
        more = len(layers) - 8
        lines.append("pruned per layer: " + ", ".join(parts) + (f" and {more} more" if more > 0 else ""))
    return lines


def _other_metrics(metrics: dict, shown: set) -> list[str]:
    out = []
    for key, value in metrics.items():
        if key in shown or isinstance(value, (dict, list)) or value is None:
            continue
        out.append(f"{key.replace('_', ' ')} {_number(value)}")
    for key, value in metrics.items():  # small records (a device, a vectorised group): flat
        if key not in shown and isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values()) \
                and len(value) <= 6 and not _evaluation_like(value):
            out.append(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {_number(v)}" for k, v in value.items()))
    return out


def _evaluation_like(value: dict) -> bool:
    return "accuracy" in value or "task" in value


def _when(stamp) -> str:
    """A Unix time as local date and time, with how long ago."""
    import datetime

    try:
        moment = datetime.datetime.fromtimestamp(float(stamp)).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return str(stamp)
    ago = (datetime.datetime.now().astimezone() - moment).total_seconds()
    when = moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return f"{when} ({_duration(ago)} ago)" if ago >= 0 else when


def _duration(seconds) -> str:
    """``"0.42 s"``, ``"4.0 s"``, ``"2 min 05 s"``, ``"3 h 12 min"``, ``"2 days 4 h"``."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if s != s:
        return "?"
    if s < 1:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    s = int(round(s))
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} days {s % 86400 // 3600} h"


def _time_lines(timings, train_seconds) -> list[str]:
    if not isinstance(timings, dict):
        return ["not recorded"]
    took = f"took {_duration(timings.get('seconds'))}"
    if isinstance(train_seconds, (int, float)) and not isinstance(train_seconds, bool):
        took += f" ({_duration(train_seconds)} of it training)"
    lines = [took]
    if timings.get("finished") is not None:
        lines.append(f"finished {_when(timings['finished'])}")
    return lines


def _environment(env: dict, threads) -> str:
    parts = [f"{name} {env[key]}" for key, name in (("prunelab", "prunelab"), ("torch", "torch"),
                                                    ("python", "Python")) if env.get(key)]
    if threads:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    if env.get("git_commit"):
        parts.append(f"git {str(env['git_commit'])[:HASH_CHARS]}" + (" (uncommitted changes)" if env.get("git_dirty")
                                                                      else ""))
    if env.get("platform"):
        parts.append(str(env["platform"]))
    return " · ".join(parts) or "not recorded"


def _print_tensors(results, m: dict, chain: list[dict]) -> None:
    """Where the state's tensors are: each pack file, how many of them it holds, and whether this
    state wrote it or an ancestor did."""
    import os

    from .experiment.store import StoreError, tensor_entries

    kinds = {"weights": len(m.get("weights") or {}), "masks": len(m.get("masks") or {}),
             "optimizer tensors": len(((m.get("optimizer") or {}).get("tensors")) or {})}
    packs: dict[str, int] = {}
    for entry in tensor_entries(m):
        name = entry.get("pack") or entry.get("blob")
        packs[name] = packs.get(name, 0) + 1
    if not packs:
        return
    inherited = set()
    if len(chain) > 1:
        inherited = {e.get("pack") or e.get("blob") for e in tensor_entries(chain[-2])}
    what = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    console.print(f"[bold]{'tensors':<12}[/]{what}, in {len(packs)} pack file{'s' if len(packs) > 1 else ''}:",
                  highlight=False)
    for name, count in packs.items():
        try:
            path = results.store.blob_path(name)
            info = os.lstat(path)
            size = f"{info.st_size / 1e3:,.0f} kB" if info.st_size < 1e7 else f"{info.st_size / 1e6:,.1f} MB"
        except (StoreError, OSError):
            path, size = name, "missing"
        origin = "from an ancestor" if name in inherited else "written by this state"
        console.print(f"  {printable(str(path))}", soft_wrap=True, markup=False, highlight=False)
        console.print(f"    {count} tensor{'s' if count > 1 else ''}, {size}, {origin}", markup=False, highlight=False)


@app.command()
def report(
    store: Path = typer.Argument(..., help="store directory of a study"),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write"),
    csv_dir: Optional[Path] = typer.Option(None, "--csv-dir", help="also write every table as CSV here"),
    config: Optional[str] = typer.Option(None, help="swept studies: the configuration the main sections show "
                                                      "(default: the first label)"),
    groups: Optional[Path] = typer.Option(None, help="CSV (with a header) holding a sensitive attribute per test "
                                                      "example, in the test split's order: adds group fairness"),
    group_column: Optional[str] = typer.Option(None, help="the column of --groups to use (default: the first)"),
    interval: str = typer.Option("auto", help="intervals over seeds: auto (t below 30 seeds, bootstrap from 30), "
                                              "t, or bootstrap"),
    efficiency: str = typer.Option("sparsity", help="the Pareto section's efficiency axis: sparsity, flops_removed "
                                                    "or params_removed"),
    tensor_seeds: int = typer.Option(30, min=0, help="the sections that read stored tensors (group fairness, mask "
                                                     "similarity, structure, stability) read the first N seeds; "
                                                     "0: every seed"),
) -> None:
    """Write a self-contained HTML report (plots and tables) of a study store."""
    from .report import build_report

    path = build_report(_open(store), output, csv_dir, config=config, groups=groups, group_column=group_column,
                        interval=interval, efficiency=efficiency, tensor_seeds=tensor_seeds)
    console.print(f"report written to {path} ({path.stat().st_size / 1e6:.2f} MB)")


@app.command()
def compare(
    store: Path = typer.Argument(..., help="store directory of a study"),
    metric: Optional[str] = typer.Option(None, help="dotted metric of trained states, e.g. test.macro_f1 (default: "
                                                  "the study's headline: test.accuracy, test.perplexity for a "
                                                  "language model)"),
    test: str = typer.Option("permutation", help="permutation (exact sign-flip), wilcoxon (signed-rank) or t "
                                                 "(paired Student t)"),
    family: str = typer.Option("pair", help="Holm correction within: pair (the levels of one planned comparison), "
                                            "level (the comparisons at one round), table (every row), or none"),
    exploratory: bool = typer.Option(False, help="also compare every other pair of rows at equal rounds "
                                                 "(labelled exploratory, corrected apart)"),
    config: Optional[str] = typer.Option(None, help="swept studies: only this configuration (default: all)"),
    study: Optional[str] = typer.Option(None, help="the study's name, when several studies share the store"),
    csv: Optional[Path] = typer.Option(None, help="also write the table here"),
) -> None:
    """Paired effects of the study's planned comparisons over seeds, and its declared hypotheses."""
    from .analysis.effects import FAMILIES, TESTS, compare_points, power_note
    from .analysis.tables import headline_metric, study_points

    if test not in TESTS:
        raise PrunelabError(f"--test {test!r} must be one of {', '.join(TESTS)}")
    if family not in FAMILIES:
        raise PrunelabError(f"--family {family!r} must be one of {', '.join(FAMILIES)}")
    results = _open(store)
    metric = metric or headline_metric(results)
    points = study_points(results, metric, config, study=study)
    _print_hypotheses(points, metric, results)
    table = compare_points(points, metric, test=test, family=family, exploratory=exploratory)
    swept = table["config"].notna().any()
    for planned, part in table.groupby("planned", sort=False):
        kind = "planned comparisons" if planned else "exploratory comparisons (not planned; corrected apart)"
        seeds = _seeds(part["seeds"])
        cols = [*([Col("configuration", "wrap", width=14)] if swept else []), Col("A", "wrap"), Col("B", "wrap"),
                Col("round"), Col("remaining A", drop=1), *([] if seeds else [Col("seeds", drop=4)]),
                Col("A − B (mean, 95% CI)"), Col("d_z", drop=2), Col("p", drop=3), Col(f"p (Holm, {family})")]
        rows = []
        for r in part.itertuples():
            ci = "" if r.seeds < 2 else f" [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
            rows.append([*([printable(r.config or "")] if swept else []), printable(r.a), printable(r.b),
                         str(r.round), f"{r.remaining_a:.1f} %", *([] if seeds else [str(r.seeds)]),
                         f"{r.difference:+.4f}{ci}", "" if r.d_z != r.d_z else f"{r.d_z:+.2f}",
                         "" if r.p != r.p else f"{r.p:.3g}",
                         "" if r.p_adjusted != r.p_adjusted else f"{r.p_adjusted:.3g}"])
        print_table(cols, rows, styles=["bold" if r.p_adjusted < 0.05 else None for r in part.itertuples()],
                    title=f"{metric}: {kind}, paired over {seeds or 'seeds'} ({test} test; bold: adjusted "
                          "p < 0.05)")
    console.print(f"family ({family}): Holm within {FAMILIES[family]}. d_z: mean paired difference / SD of the "
                  "differences. Intervals are per row (Student t over seeds).")
    note = power_note(table, test)
    if note:
        console.print(escape(note), style="yellow")
    if csv is not None:
        table.to_csv(csv, index=False)


def _print_hypotheses(points, metric: str, store_results=None) -> list:
    """The study's declared hypotheses, tested as one family; returns the results."""
    from .analysis.effects import evaluate_hypotheses
    from .analysis.population import Populations, needs_predictions

    declared = points.attrs.get("hypotheses") or []
    if not declared:
        return []
    populations = (Populations(store_results, points) if store_results is not None and needs_predictions(declared)
                   else None)
    results = evaluate_hypotheses(points, declared, value=metric, populations=populations)
    _hypothesis_table(results, metric)
    return results


def _hypothesis_table(results, metric: str) -> None:
    swept = any(r.config for r in results)
    seeds = _seeds(r.n for r in results)
    levels = [_levels(r) for r in results]
    same = len(set(levels)) == 1  # the title says which rounds, as it says how many seeds
    cols = [Col("claim", "wrap", width=10), *([Col("configuration", "wrap", width=14)] if swept else []),
            *([] if same else [Col("rounds (remaining)", drop=1)]), *([] if seeds else [Col("seeds", drop=3)]),
            Col("A − B (mean, 95% CI)"), Col("p (one-sided)", drop=2), Col("p (Holm)"),
            Col("verdict", "wrap", width=13)]
    rows, styles = [], []
    for r, level in zip(results, levels):
        ci = "" if r.n < 2 else f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        rows.append([printable(r.claim), *([printable(r.config or "")] if swept else []), *([] if same else [level]),
                     *([] if seeds else [str(r.n)]), "" if r.mean != r.mean else f"{r.mean:+.3f}{ci}",
                     "" if r.p != r.p else f"{r.p:.3g} ({r.test})",
                     "" if r.p_adjusted != r.p_adjusted else f"{r.p_adjusted:.3g}", printable(r.verdict)])
        styles.append("green" if r.supported else ("yellow" if r.verdict.startswith("not testable") else None))
    over = ", ".join(([f"rounds {levels[0]}"] if same and results else []) + ([seeds] if seeds else []))
    print_table(cols, rows, styles=styles, title=f"declared hypotheses ({metric}; {over + ', ' if over else ''}"
                                                 "one family, Holm)")


def _levels(r) -> str:
    """A hypothesis's rounds and what they keep: ``"3–5 (13.3–3.7 %)"``."""
    if not r.rounds:
        return "-"
    span = f"{r.rounds[0]}" if len(r.rounds) == 1 else f"{r.rounds[0]}–{r.rounds[-1]}"
    rem = f"{r.remaining[0]:g}" if len(r.remaining) == 1 else f"{r.remaining[0]:g}–{r.remaining[-1]:g}"
    return f"{span} ({rem} %)"


def _seeds(counts) -> str:
    """"N seeds" where every row has N seeds (a title says so; no column), else ""."""
    found = {int(n) for n in counts}
    return f"{found.pop()} seeds" if len(found) == 1 else ""


@app.command()
def gc(
    store: Path = typer.Argument(..., help="store directory"),
    dry_run: bool = typer.Option(False, help="only report what would be removed"),
) -> None:
    """Remove blobs no manifest references (left by interrupted runs); waits for runs writing to STORE."""
    from .experiment import open_store

    files, size = open_store(store, writable=True).store.gc(
        dry_run=dry_run, on_wait=lambda: console.print("waiting for the runs writing to this store to finish …"))
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {files} unreferenced files ({size / 1e6:.2f} MB)")


@app.command()
def verify(
    store: Path = typer.Argument(..., help="store directory"),
    repair: bool = typer.Option(False, help="move everything damaged into STORE/quarantine/<time>/ and rebuild "
                                            "the index; the next `prunelab run` recomputes exactly that"),
    recompute: int = typer.Option(0, min=0, help="also re-execute this many randomly chosen finished states and "
                                                 "check each is bit-identical to what is stored (nothing is written)"),
    state: Optional[list[str]] = typer.Option(None, help="re-execute this state (hash or prefix; repeatable)"),
    seed: int = typer.Option(0, help="seed of the random choice of --recompute"),
) -> None:
    """Check every file that can change what prunelab prints (manifests, packs, documents, probes, the
    index) and that nothing in STORE is a link; optionally re-execute states to audit that the store is
    what its recipes compute. Exit status 1 when anything is wrong or could not be checked."""
    from .experiment import open_store

    results = open_store(store, writable=repair, maintenance=True)
    problems = results.store.verify()
    for problem in problems:  # full paths, never wrapped or truncated
        console.print(problem.message, style="red", soft_wrap=True, markup=False)
    states = len(results) + len(results.damaged)
    unaudited = []
    if recompute or state:
        found, unaudited = _recompute(results, recompute, state or [], seed)
        for problem in found:
            console.print(problem.message, style="red", soft_wrap=True, markup=False)
        problems = problems + found
    unchecked = (f"; {len(unaudited)} states could not be recomputed, so they are not audited (see the table)"
                 if unaudited else "")
    if not repair:
        console.print(f"{states} manifests checked, {len(problems)} problems{unchecked}"
                      + ("; `prunelab verify --repair` moves them aside" if problems else ""), soft_wrap=True)
        if problems or unaudited:
            raise typer.Exit(1)
        return
    folder, moved = results.store.repair(problems)
    lost = sum(1 for path in moved if path.parent.name == "states" and path.suffix == ".json")
    console.print(f"{states} manifests checked, {len(problems)} problems{unchecked}; "
                  + (f"moved {len(moved)} files to {folder}; {lost} states will be recomputed by the next "
                     "`prunelab run`; " if moved else "") + "index rebuilt", soft_wrap=True)
    if unaudited:
        raise typer.Exit(1)


def _recompute(results, count: int, chosen: list[str], seed: int) -> tuple[list, list[str]]:
    """Re-execute states and compare them bit for bit: (the mismatches as verify problems, which
    moves them and every state computed from them on --repair; the states that could not be
    recomputed, which are not audited and make verify fail)."""
    import random

    from .experiment.audit import recompute, recomputable
    from .experiment.maintenance import Problem

    hashes = [results.get(prefix)["hash"] for prefix in chosen]
    candidates = sorted(r["hash"] for r in results.rows(status="done") if r["hash"] not in hashes)
    hashes += random.Random(seed).sample(candidates, min(count, len(candidates)))
    table = Table("state", "recipe", "seconds", "result", title="recomputed (nothing written)")
    problems, unaudited = [], []
    for h in hashes:
        why = recomputable(results.store, h)
        try:
            if why:
                raise PrunelabError(why)
            outcome = recompute(results.store, h)
        except PrunelabError as exc:
            table.add_row(h[:12], "", "", f"could not recompute: {exc}", style="yellow")
            unaudited.append(h)
            continue
        verdict = "bit-identical" if outcome.identical else "; ".join(outcome.differences[:4])
        table.add_row(h[:12], escape(outcome.recipe), f"{outcome.seconds:.2f}", verdict,
                      style=None if outcome.identical else "red")
        if not outcome.identical:
            path = results.store.manifest_path(h)
            problems.append(Problem((h,), f"{path}: recomputed result differs from the store "
                                          f"({'; '.join(outcome.differences)}); --repair moves it and every state "
                                          "computed from it", (path,), below=True))
    console.print(table)
    return problems, unaudited


from .registry import Registry  # noqa: E402

# Command groups plug-ins add (`prunelab calo ...` is the physics plug-in's), a typer app each. Listed
# at start-up, so a plug-in's command module should import little at its top.
COMMANDS: Registry[typer.Typer] = Registry("command group", group="prunelab.commands")


def _attach_command_groups() -> None:
    for entry in COMMANDS:
        try:
            group = COMMANDS.get(entry.name)
        except PrunelabError as exc:  # a broken plug-in costs its own commands, not everyone's
            import warnings

            warnings.warn(str(exc), stacklevel=1)
            continue
        app.add_typer(group, name=entry.name)


_attach_command_groups()

from .hf_cli import export_hf, hf_fingerprint  # noqa: E402

app.command("export-hf")(export_hf)
app.command("hf-fingerprint")(hf_fingerprint)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2.

    typer's standalone mode already reports usage errors (exit 2); anything
    that is not a PrunelabError is a bug and keeps its traceback.
    """
    try:
        app()
    except SystemExit as exc:
        if exc.code in (0, None) and _damage_seen():
            sys.exit(2)  # the rest of the store was read; what was damaged is listed above
        raise
    except PrunelabError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # a full disk is the machine's state, not a bug: one line too
        from .files import disk_full

        if disk_full(exc) or "disk is full" in str(exc):
            print(f"error: disk full ({exc}); free space and rerun — what finished is kept", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
