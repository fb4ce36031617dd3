import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file


def run_cli(*args, env=None):
    full_env = {**os.environ, "CI": "1", "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "prunelab.cli", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def test_train_prints_per_class_table_and_writes_outputs(tmp_path):
    weights, metrics = tmp_path / "w.safetensors", tmp_path / "m.json"
    proc = run_cli("train", "--dataset", "digits", "--model", "lenet_300_100", "--iterations", "150",
                   "--save", str(weights), "--json", str(metrics))
    assert proc.returncode == 0, proc.stderr
    assert "precision" in proc.stdout and "recall" in proc.stdout and "test accuracy" in proc.stdout
    data = json.loads(metrics.read_text())
    assert len(data["test"]["per_class"]) == 10 and data["config"]["iterations"] == 150
    tensors = load_file(str(weights))
    assert tensors["1.weight"].shape == (300, 64)


def test_listing_commands():
    assert "mnist1d" in run_cli("datasets").stdout
    assert "resnet20" in run_cli("models").stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--dataset", "digitz", "--model", "lenet5"], "unknown dataset 'digitz'; did you mean 'digits'?"),
        (["--dataset", "digits", "--model", "lenet"], "unknown model 'lenet'"),
        (["--dataset", "digits", "--model", "lenet5", "--iterations", "0"], "iterations: Input should be greater than 0 (got 0)"),
        (["--dataset", "digits", "--model", "lenet5", "--lr", "-0.1"], "lr: Input should be greater than 0 (got -0.1)"),
        (["--dataset", "digits", "--model", "lenet5", "--model-option", "width"], "must look like key=value"),
        (["--dataset", "mnist1d", "--model", "conv4", "--model-option", "depth=3"], "has no option 'depth'"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args, needle):
    proc = run_cli("train", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_missing_dataset_offline_is_exit_2(tmp_path):
    proc = run_cli("train", "--dataset", "kmnist", "--model", "lenet5", "--no-download", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "PRUNELAB_DATA_MIRROR" in proc.stderr and "Traceback" not in proc.stderr
