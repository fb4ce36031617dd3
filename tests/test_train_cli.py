"""`prunelab train`'s options are TrainConfig's fields: same names, defaults, choices and help."""

import json
import subprocess
import sys
import typing

from prunelab.tasks.training import TrainConfig
from prunelab.train_cli import EXTRAS, command

from .conftest import run_cli_here


def options():
    return {p.name: p for p in command().params if p.name != "help"}


def test_the_options_are_the_config_fields_and_the_documented_extras():
    fields = TrainConfig.model_fields
    assert set(options()) == set(fields) | {name for name, _, _ in EXTRAS}
    for name, info in fields.items():
        option = options()[name]
        assert option.opts == ["--" + name.replace("_", "-")]
        assert info.description and info.description in option.help
        kind = info.annotation
        if kind is bool:
            assert option.secondary_opts == ["--no-" + name.replace("_", "-")] and option.default is info.default
        elif typing.get_origin(kind) is tuple:  # comma-separated on the command line
            assert option.default == ",".join(map(str, info.default))
        else:
            assert option.default == info.default
        if typing.get_origin(kind) is typing.Literal:
            choices = typing.get_args(kind)
            assert all(c in option.help for c in choices)
            for choice in choices:  # each is accepted as it is written
                ctx = command().make_context("train", ["-d", "digits", "-m", "lenet5", option.opts[0], choice])
                assert ctx.params[name] == choice


def test_defaults_come_from_trainconfig_and_every_option_reaches_it(tmp_path):
    """Given only a length, the command trains TrainConfig's defaults; given non-default values (each
    different from its default), exactly those reach the config that is reported."""
    out = tmp_path / "m.json"
    proc = run_cli_here("train", "-d", "digits", "-m", "lenet_300_100", "--iterations", "2", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["config"] == TrainConfig(iterations=2).model_dump(mode="json")
    given = dict(optimizer="momentum", nesterov=True, lr=0.05, momentum=0.8, weight_decay=1e-4, batch_size=16,
                 iterations=4, schedule="step", milestones=(1, 3), gamma=0.5, warmup_iterations=1, eval_every=2,
                 grad_clip=1.0)
    assert all(given[k] != TrainConfig.model_fields[k].default for k in given)
    args = []
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, ",".join(map(str, value)) if isinstance(value, tuple) else value]
    proc = run_cli_here("train", "-d", "digits", "-m", "lenet_300_100", *args, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["config"] == TrainConfig(**given).model_dump(mode="json")


def test_the_training_length_and_bad_values_are_one_line():
    for args, needle in ((["--lr", "0.1"], "give exactly one of 'iterations' or 'epochs'"),
                         (["--iterations", "5", "--milestones", "1,x"], "--milestones '1,x' must be comma-separated "
                                                                        "integers"),
                         (["--iterations", "5", "--lr-floor", "2"], "lr_floor: Input should be less than or equal to 1")):
        proc = run_cli_here("train", "-d", "digits", "-m", "lenet_300_100", *args)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_cli_here("train", "-d", "digits", "-m", "lenet_300_100", "--iterations", "5", "--optimizer", "nag")
    assert proc.returncode == 2 and "'nag' is not one of" in proc.stderr


def test_help_fits_80_columns_and_names_every_option_whole():
    proc = run_cli_here("train", "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in proc.stdout
    for option in options().values():
        assert any(option.opts[0] in line.split() for line in lines), option.opts[0]
        if option.secondary_opts:
            assert option.secondary_opts[0] in proc.stdout


def test_listing_the_commands_does_not_build_the_train_options():
    """Its options come from TrainConfig, whose module imports torch: `prunelab --help` must not."""
    code = ("import sys; from typer.testing import CliRunner; from prunelab.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert 'train' in r.output; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stdout + out.stderr
