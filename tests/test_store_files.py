"""Files a store creates follow the umask, and an unreadable index is rebuilt from the manifests."""

import os
import stat

import pytest

from prunelab.experiment import Experiment, Train

from .experiment_helpers import CONFIG
from .test_cli import run_cli


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_store_files_follow_the_umask(tmp_path, digits, umask_027):
    exp = Experiment(tmp_path / "s")
    exp.root(dataset="digits", model="lenet_300_100", seed=0).then(Train(CONFIG))
    assert exp.run().ok
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")]
    assert files
    for path in files:  # 0666 & ~027 = 0640: group-readable, as any file the user creates
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_data_cache_files_follow_the_umask(tmp_path, umask_027):
    import numpy as np

    from prunelab.tasks.datasets import _atomic_savez

    target = tmp_path / "cache" / "x.npz"
    _atomic_savez(target, {"x": np.zeros(3)})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_garbage_index_is_moved_aside_and_rebuilt(tmp_path, digits):
    exp = Experiment(tmp_path / "s")
    exp.root(dataset="digits", model="lenet_300_100", seed=0).then(Train(CONFIG))
    assert exp.run().ok
    index = tmp_path / "s" / "index.sqlite"
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "s" / extra).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    out = run_cli("ls", str(tmp_path / "s"))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    from prunelab.experiment import Store

    store = Store(tmp_path / "s")
    assert len(store.rows()) == 2  # the root and its training, from the manifests
    aside = list((tmp_path / "s").glob("index.sqlite.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
