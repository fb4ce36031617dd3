"""``prunelab train`` (registered by :mod:`prunelab.cli`): one model trained and evaluated.

Its training options are made from ``TrainConfig``'s fields — name as ``--kebab-case``, type,
default, choices and description — so the command and a spec's ``[training]`` cannot drift apart;
only the options that are not training settings (task, seed, files) are written here. An option
left out on the command line is left out of the config too, so every default is TrainConfig's own.
This module imports torch (TrainConfig's module does): the CLI builds the command on first use.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .errors import PrunelabError

TRAINING_PANEL = r"Training (a spec's \[training] keys)"


def _train(dataset, model, seed, init, model_option, data_dir, mirror, download, save, json_out, ctx, **given):
    """Train and evaluate MODEL on DATASET, then print per-class test metrics."""
    from .cli import console
    from .registry import trust_names
    from .tasks import DATASETS, MODELS, DataSource, TrainConfig, build_model, evaluate, load_dataset
    from .tasks import train as run_training
    from .tasks.datasets import parse_variant

    trust_names(dataset, model)  # typed on your command line: your own names, trusted like a spec's
    DATASETS.get(parse_variant(dataset)[0])  # unknown names fail before any work
    if not model.startswith("hf:"):  # a Hugging Face directory is checked when it is opened
        MODELS.get(model)
    options = _parse_options(model_option)
    config = TrainConfig.parse(training_values(ctx, given), where="")  # with neither --iterations nor --epochs: says so
    data = load_dataset(dataset, source=DataSource(data_dir, mirror, download))
    net = build_model(model, data.input_shape, data.num_classes, seed=seed, init=init, **options)
    n_params = sum(p.numel() for p in net.parameters())
    console.print(
        f"[bold]{model}[/] on [bold]{dataset}[/]: {n_params:,} parameters, input {data.input_shape}, "
        f"{'a regression target' if data.task == 'regression' else f'{data.num_classes} classes'}, "
        f"{len(data.train)}/{len(data.validation)}/{len(data.test)} train/val/test"
    )
    from .progress import running

    with running(f"{model} on {dataset}, seed {seed}"):  # the bar's name, not the model's class
        result = run_training(net, data, config, seed=seed)
    net.to("cpu")  # evaluated and saved from the CPU, wherever it trained
    test = evaluate(net, data.test, data.class_names)
    per_k = 1000 * result.seconds / max(1, result.iterations)
    timing = (f"{result.seconds:.1f} s training ({per_k:.2f} s / 1000 iterations); "
              f"early-stopping iteration {result.early_stopping_iteration}")
    if data.task == "regression":
        _print_regression(test, f"test set after {result.iterations} iterations")
        console.print(f"test RMSE [bold]{test.rmse:.4g}[/], R² {test.r2:.4f}, bias {test.bias:+.4f}, resolution "
                      f"{test.resolution:.4f}; {timing}")
    elif data.task == "language":
        console.print(f"test perplexity [bold]{test.perplexity:.3f}[/] ({test.loss:.4f} nats, {test.bits_per_token:.3f} "
                      f"bits per token), next-token accuracy {test.accuracy:.4f}; {timing}")
    else:
        _print_evaluation(test, f"test set after {result.iterations} iterations")
        console.print(f"test accuracy [bold]{test.accuracy:.4f}[/], loss {test.loss:.4f}, balanced accuracy "
                      f"{test.balanced_accuracy:.4f}; {timing}")
    if save is not None:
        from .tasks.checkpoint import save_weights

        save_weights(net, save, {"dataset": dataset, "model": model, "seed": seed, "config": config.model_dump()})
        console.print(f"weights written to {save}")
    if json_out is not None:
        payload = {
            "dataset": dataset, "model": model, "seed": seed, "parameters": n_params,
            "config": config.model_dump(), "train_seconds": result.seconds, "curve": result.curve,
            "early_stopping_iteration": result.early_stopping_iteration, "test": test.to_dict(),
        }
        json_out.write_text(json.dumps(payload, indent=2))


def _parse_options(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse, else strings."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise PrunelabError(f"--model-option {pair!r} must look like key=value")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


# The options of `prunelab train` that are not TrainConfig fields (what to train, where its files are).
EXTRAS = [
    ("dataset", str, typer.Option(..., "--dataset", "-d", help="dataset name (see `prunelab datasets`)")),
    ("model", str, typer.Option(..., "--model", "-m", help="model name (see `prunelab models`)")),
    ("seed", int, typer.Option(0, help="seed for init and data order")),
    ("init", Optional[str], typer.Option(None, help="default, glorot_normal or kaiming_normal")),
    ("model_option", list[str], typer.Option([], "--model-option", help="model keyword, key=value (repeatable)")),
    ("data_dir", Optional[Path], typer.Option(None, help="cache directory (default $PRUNELAB_DATA)")),
    ("mirror", Optional[Path], typer.Option(None, help="local mirror of dataset files (default "
                                                       "$PRUNELAB_DATA_MIRROR)")),
    ("download", bool, typer.Option(True, help="allow downloads when files are not mirrored or cached")),
    ("save", Optional[Path], typer.Option(None, help="write the trained weights here (.safetensors)")),
    ("json_out", Optional[Path], typer.Option(None, "--json", help="write metrics here as JSON")),
]


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def training_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, as typer reads a command's options: ``None``
    types stay optional, a ``Literal`` lists its choices, a bool is ``--flag/--no-flag``, a tuple is
    comma-separated text (read back by :func:`training_values`)."""
    from .tasks.training import TrainConfig

    out = []
    for name, info in TrainConfig.model_fields.items():
        annotation, default, extra = info.annotation, info.default, {"show_default": info.default is not None}
        help = info.description
        if typing.get_origin(annotation) is typing.Literal:  # choices in the help: a wide metavar squeezes it
            help += f" ({' | '.join(typing.get_args(annotation))})"
            extra["metavar"] = "<choice>"
        if typing.get_origin(annotation) is tuple:
            annotation, default = str, ",".join(str(v) for v in default)
            extra = {"metavar": "N,N,...", "show_default": bool(default)}
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):  # int | None
            annotation = Optional[next(a for a in typing.get_args(annotation) if a is not type(None))]
        flag = option_name(name)
        if annotation is bool:
            flag += f"/--no-{flag[2:]}"
        option = typer.Option(default, flag, help=help, rich_help_panel=TRAINING_PANEL, **extra)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return out


def training_values(ctx: typer.Context, given: dict) -> dict:
    """The TrainConfig fields given on the command line, as TrainConfig reads them (defaults left out)."""
    from .tasks.training import TrainConfig

    fields = TrainConfig.model_fields
    values = {name: value for name, value in given.items()
              if ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}
    for name, value in list(values.items()):
        if typing.get_origin(fields[name].annotation) is tuple:
            kind = typing.get_args(fields[name].annotation)[0]
            try:
                values[name] = tuple(kind(v) for v in str(value).split(",") if v.strip())
            except ValueError:
                raise PrunelabError(f"{option_name(name)} {value!r} must be comma-separated "
                                    f"{'integers' if kind is int else 'numbers'}") from None
    return values


def command():
    """``prunelab train`` as a typer command: the extras written above, then TrainConfig's fields."""
    def train(**values):
        return _train(**values)

    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, kind, option in EXTRAS]
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    train.__signature__ = inspect.Signature(params + training_parameters())
    train.__doc__ = _train.__doc__
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("train")(train)
    return typer.main.get_command(app)


def _print_regression(ev, title: str) -> None:
    from .cli import console

    table = Table("target bin", "events", "bias (mean pred/target − 1)", "resolution (SD of pred/target)", title=title)
    for row in ev.per_bin:
        table.add_row(row["bin"], str(row["events"]), f"{row['bias']:+.4f}", f"{row['resolution']:.4f}")
    console.print(table)


def _print_evaluation(ev, title: str) -> None:
    from .cli import console

    table = Table("class", "precision", "recall", "f1", "support", title=title)
    worst = int(ev.recall.argmin())
    for i, row in enumerate(ev.per_class()):
        style = "red" if i == worst else None
        table.add_row(
            row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
            str(row["support"]), style=style,
        )
    console.print(table)
