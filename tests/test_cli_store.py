import json

import pytest

from .experiment_helpers import small_tree
from .conftest import run_cli_here


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "store"
    exp, root, dense, leaves = small_tree(path, branches=("l1_unstructured",), rounds=1)
    exp.run()
    return path, leaves[0].hash


def test_tree_ls_show(store, tmp_path):
    path, leaf = store
    dot = tmp_path / "tree.dot"
    out = run_cli_here("tree", str(path), "--dot", str(dot))
    assert out.returncode == 0 and "lenet_300_100 on digits" in out.stdout and "rewind" in out.stdout
    assert dot.read_text().startswith("digraph")
    listing = run_cli_here("ls", str(path), "--recipe", "Train", "--tag", "l1_unstructured")
    assert listing.returncode == 0 and leaf[:12] in listing.stdout
    shown = run_cli_here("show", str(path), leaf[:8])
    assert shown.returncode == 0 and "lineage" in shown.stdout and "made with" in shown.stdout
    raw = run_cli_here("show", str(path), leaf[:8], "--json")  # the manifest as stored
    assert raw.returncode == 0 and "environment" in json.loads(raw.stdout)


def test_verify_and_gc_report_problems(store, tmp_path):
    path, leaf = store
    assert run_cli_here("verify", str(path)).returncode == 0
    assert "removed 0" in run_cli_here("gc", str(path)).stdout


def test_verify_exit_1_on_a_corrupted_blob(tmp_path):
    exp, root, dense, _ = small_tree(tmp_path / "s", branches=("l1_unstructured",), rounds=1)
    exp.run()
    blob = exp.store.entry_path(exp.store.manifest(dense.hash)["weights"]["3.weight"])
    blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")
    out = run_cli_here("verify", str(tmp_path / "s"))
    assert out.returncode == 1 and str(blob) in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["show", "/nonexistent/store", "abc"], "not a prunelab store"),
    (["ls", "/nonexistent/store"], "not a prunelab store"),
])
def test_bad_store_paths_exit_2(args, needle):
    out = run_cli_here(*args)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


def test_show_unknown_or_ambiguous_hash(store):
    path, _ = store
    out = run_cli_here("show", str(path), "zzzz")
    assert out.returncode == 2 and "no state 'zzzz'" in out.stderr
    out = run_cli_here("show", str(path), "")
    assert out.returncode == 2 and "give more characters" in out.stderr


def test_reading_a_store_never_imports_torch(store):
    """The CLI and store queries start fast because nothing that only reads imports torch (#13)."""
    import subprocess
    import sys

    path, _ = store
    code = ("import sys, prunelab.cli; from prunelab.experiment import open_store; r = open_store(sys.argv[1]); "
            "r.tree(); r.states(recipe='Train'); assert r.store.verify() == []; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'safetensors', 'sklearn', 'scipy', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_blob_digest_from_bytes_equals_the_tensor_digest(tmp_path):
    import torch

    from safetensors.torch import save_file

    from prunelab.experiment import Store
    from prunelab.experiment.store import blob_file_digest, file_tensor_digests, pack_name, tensor_digest

    store = Store(tmp_path / "s")
    tensors = (torch.randn(3, 4), torch.arange(5), torch.tensor(2.5), torch.zeros(0, 3), torch.ones(4).bool(),
               torch.randn(2, 2).to(torch.bfloat16))
    homes = store._store_tensors({tensor_digest(t): t for t in tensors})  # one pack, keyed by content hash
    (name,) = set(homes.values())
    assert name == pack_name(homes) and file_tensor_digests(store.blob_path(name)) == {d: d for d in homes}
    for tensor in tensors:  # the layout of stores before packs: one tensor a file, under the key "t"
        path = tmp_path / "one.safetensors"
        save_file({"t": tensor.contiguous()}, str(path))
        assert blob_file_digest(path) == tensor_digest(tensor)
        assert torch.equal(store.get_tensor(tensor_digest(tensor), name), tensor)


def test_the_collapsed_tree_does_not_deepen_with_rounds(tmp_path):
    from prunelab.experiment import open_store

    def depth(node):
        return 1 + max((depth(c) for c in node.children), default=0)

    depths = {}
    for rounds in (1, 3):
        exp, *_ = small_tree(tmp_path / f"s{rounds}", branches=("l1_unstructured",), rounds=rounds)
        exp.run()
        results = open_store(tmp_path / f"s{rounds}")
        collapsed, full = results.tree(), results.tree(collapse=False)
        count = lambda node: 1 + sum(count(c) for c in node.children)  # noqa: E731
        assert count(collapsed) == count(full) == len(results) + 1  # every state shown once
        depths[rounds] = (depth(collapsed), depth(full))
    assert depths[1][0] == depths[3][0] and depths[3][1] > depths[1][1]
