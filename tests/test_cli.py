import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from .conftest import run_cli_here


def run_cli(*args, env=None):
    """``python -m prunelab.cli ARGS`` in a new process (~1-2 s of starting Python and torch a call).

    For what needs a real process: the ``python -m`` entry itself, an environment of the whole process
    read at import, signals, a process beside another, discovery done once a process. Everything else
    runs through the same entry point in this process: :func:`tests.conftest.run_cli_here`.
    """
    full_env = {**os.environ, "CI": "1", "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "prunelab.cli", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def test_train_prints_per_class_table_and_writes_outputs(tmp_path):
    weights, metrics = tmp_path / "w.safetensors", tmp_path / "m.json"
    proc = run_cli_here("train", "--dataset", "digits", "--model", "lenet_300_100", "--iterations", "150",
                   "--save", str(weights), "--json", str(metrics))
    assert proc.returncode == 0, proc.stderr
    assert "precision" in proc.stdout and "recall" in proc.stdout and "test accuracy" in proc.stdout
    data = json.loads(metrics.read_text())
    assert len(data["test"]["per_class"]) == 10 and data["config"]["iterations"] == 150
    tensors = load_file(str(weights))
    assert tensors["1.weight"].shape == (300, 64)


def test_listing_commands():
    assert "mnist1d" in run_cli("datasets").stdout  # a subprocess: `python -m prunelab.cli` itself
    assert "resnet20" in run_cli_here("models").stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--dataset", "digitz", "--model", "lenet5"], "unknown dataset 'digitz'; did you mean 'digits'?"),
        (["--dataset", "digits", "--model", "lenet"], "unknown model 'lenet'"),
        (["--dataset", "digits", "--model", "lenet5", "--iterations", "0"], "iterations: Input should be greater than 0 (got 0)"),
        (["--dataset", "digits", "--model", "lenet5", "--lr", "-0.1"], "lr: Input should be greater than 0 (got -0.1)"),
        (["--dataset", "digits", "--model", "lenet5", "--model-option", "width"], "must look like key=value"),
        (["--dataset", "mnist1d", "--model", "conv4", "--iterations", "10", "--model-option", "depth=3"], "has no option 'depth'"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args, needle):
    proc = run_cli_here("train", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_missing_dataset_offline_is_exit_2(tmp_path):
    proc = run_cli_here("train", "--dataset", "kmnist", "--model", "lenet5", "--iterations", "10", "--no-download",
                        "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "PRUNELAB_DATA_MIRROR" in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_named_on_the_command_line_is_yours_and_a_wrong_factory_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))\n"
        "def wrong(x):\n"
        "    return nn.Linear(1, 1)\n"
        "def not_a_module(input_shape, num_classes):\n"
        "    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would, for this test only
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    ok = run_cli_here("train", "--dataset", "digits", "--model", "mymodels:build", "--iterations", "20")
    assert ok.returncode == 0 and "test accuracy" in ok.stdout, ok.stderr
    for factory, message in (("wrong", "must accept input_shape and num_classes"),
                             ("not_a_module", "returned int, not a torch.nn.Module")):
        out = run_cli_here("train", "--dataset", "digits", "--model", f"mymodels:{factory}", "--iterations", "20")
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    sys.modules.pop("mymodels", None)  # a module of this tmp_path: no later test finds it


def test_a_run_stopped_by_a_bad_option_leaves_no_store_behind(tmp_path):
    from .test_study import write_spec

    spec = write_spec(tmp_path, "[study]\nname = 's'\nstore = 'STORE'\nseeds = [0]\n[task]\ndataset = 'digits'\n"
                                "model = 'lenet_300_100'\n[training]\niterations = 10\n[branches.b]\nrounds = 1\n")
    out = run_cli_here("run", str(spec), "--executor", "local", "--workers", "0")
    assert out.returncode == 2 and "workers must be at least 1" in out.stderr
    assert not (tmp_path / "store").exists()
