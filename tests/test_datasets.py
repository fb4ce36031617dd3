import gzip
import io
import random
import tarfile

import numpy as np
import pytest
import torch

from prunelab import ChecksumError, DataSource, DataUnavailableError, PrunelabError, load_dataset
from prunelab.tasks import datasets as ds
from prunelab.tasks.download import RemoteFile, md5sum
from prunelab.tasks.formats import read_cifar10_binary, read_idx, write_idx

from .conftest import SHARED_DATA


def test_digits_splits_are_disjoint_deterministic_and_standardised(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.train.x, again.train.x) and torch.equal(digits.validation.y, again.validation.y)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.train) + len(digits.validation) + len(digits.test) == 1797
    # no example appears in two splits
    rows = lambda s: {tuple(r) for r in s.x.reshape(len(s), -1).numpy().round(4)}
    assert not (rows(digits.train) & rows(digits.test))
    # standardised on the training portion
    assert abs(digits.train.x.mean().item()) < 1e-4 and digits.train.x.std().item() == pytest.approx(1, abs=1e-3)


def test_mnist1d_is_generated_locally_cached_and_restores_global_rng(tmp_path):
    np.random.seed(7)
    random.seed(7)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    source = DataSource(data_dir=tmp_path, download=False)
    data = load_dataset("mnist1d", source=source)
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert data.input_shape == (1, 40) and data.num_classes == 10
    assert len(data.train) + len(data.validation) == 4000 and len(data.test) == 1000
    cached = list((tmp_path / "mnist1d").glob("*.npz"))
    assert len(cached) == 1
    again = load_dataset("mnist1d", source=source)  # from the cache
    assert torch.equal(data.test.x, again.test.x)


def test_validation_override_and_bad_values(digits):
    assert len(load_dataset("digits", validation=100).validation) == 100
    assert len(load_dataset("digits", validation=0.5).validation) == round(0.5 * 1438)
    with pytest.raises(PrunelabError, match="validation fraction"):
        load_dataset("digits", validation=1.5)
    with pytest.raises(PrunelabError, match="leaves no training data"):
        load_dataset("digits", validation=5000)


def test_unknown_dataset_suggests_closest():
    with pytest.raises(PrunelabError, match="did you mean 'mnist'"):
        load_dataset("mnits")


# ---------------------------------------------------------------- IDX / MNIST


def test_idx_round_trip_and_corruptions(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-idx3-ubyte.gz"
    write_idx(path, array)
    np.testing.assert_array_equal(read_idx(path), array)
    raw = gzip.decompress(path.read_bytes())
    truncated = tmp_path / "t-idx3-ubyte.gz"
    truncated.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(PrunelabError, match="payload is 19 bytes"):
        read_idx(truncated)
    bad_magic = tmp_path / "m-idx3-ubyte.gz"
    bad_magic.write_bytes(gzip.compress(b"\x01" + raw[1:]))
    with pytest.raises(PrunelabError, match="bad magic"):
        read_idx(bad_magic)


def make_fake_mnist(folder, n_train=120, n_test=30, seed=0):
    """Small IDX files in MNIST's layout; returns checksums to accept them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return {name: md5sum(folder / name) for name in arrays}, arrays


@pytest.fixture
def fake_mnist_spec(monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    md5s, arrays = make_fake_mnist(mirror / "MNIST" / "raw")  # torchvision layout
    spec = ds.IDX_DATASETS["mnist"]
    files = {k: RemoteFile(f.filename, md5s[f.filename], f.urls) for k, f in spec.files.items()}
    monkeypatch.setitem(ds.IDX_DATASETS, "mnist", ds.IdxSpec(files, spec.class_names, spec.aliases))
    return mirror, arrays


def test_mnist_from_mirror_parses_idx(fake_mnist_spec, tmp_path):
    mirror, arrays = fake_mnist_spec
    data = load_dataset("mnist", source=DataSource(data_dir=tmp_path / "cache", mirror=mirror, download=False),
                        validation=20)
    assert data.input_shape == (1, 28, 28)
    assert len(data.train) == 100 and len(data.validation) == 20 and len(data.test) == 30
    np.testing.assert_array_equal(data.test.y.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    # standardisation is monotone per image: pixel order is preserved
    first = arrays["t10k-images-idx3-ubyte.gz"][0].ravel()
    assert np.array_equal(np.argsort(data.test.x[0].ravel().numpy(), kind="stable"), np.argsort(first, kind="stable"))


def test_corrupt_mirror_file_is_a_checksum_error_naming_the_file(fake_mnist_spec, tmp_path):
    mirror, _ = fake_mnist_spec
    victim = mirror / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_dataset("mnist", source=DataSource(data_dir=tmp_path / "c", mirror=mirror, download=False))


def test_real_checksums_reject_a_fake_file(tmp_path):
    """With the published MD5s, a file that is not the original is refused."""
    mirror = tmp_path / "mirror"
    make_fake_mnist(mirror)
    with pytest.raises(ChecksumError, match="expected md5 f68b3c2dcbeaaa9fbdd348bbdeb94873 as published"):
        load_dataset("mnist", source=DataSource(data_dir=tmp_path / "c", mirror=mirror, download=False))


def test_offline_without_mirror_names_files_and_settings(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("fashion_mnist", source=DataSource(data_dir=tmp_path, download=False))
    message = str(info.value)
    for needle in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "PRUNELAB_DATA_MIRROR", "PRUNELAB_DATA="):
        assert needle in message


def test_failed_download_leaves_nothing_behind(tmp_path):
    remote = RemoteFile("x.gz", "0" * 32, ("http://127.0.0.1:9/x.gz",))  # closed port on loopback
    with pytest.raises(DataUnavailableError):
        DataSource(data_dir=tmp_path, timeout=2).fetch("fake", remote)
    folder = tmp_path / "fake"
    assert not folder.exists() or not any(folder.iterdir())


def test_download_verifies_then_renames(tmp_path, monkeypatch):
    payload = b"hello mnist"
    import hashlib
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    good = RemoteFile("ok.bin", hashlib.md5(payload).hexdigest(), ("http://example.invalid/ok.bin",))
    path = DataSource(data_dir=tmp_path).fetch("fake", good)
    assert path.read_bytes() == payload
    bad = RemoteFile("bad.bin", "0" * 32, ("http://example.invalid/bad.bin",))
    with pytest.raises(ChecksumError):
        DataSource(data_dir=tmp_path).fetch("fake", bad)
    assert sorted(p.name for p in (tmp_path / "fake").iterdir()) == ["ok.bin"]


# ---------------------------------------------------------------- CIFAR-10


def make_fake_cifar(path, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    records = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            labels = rng.integers(0, 10, per_batch).astype(np.uint8)
            pixels = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
            data = np.concatenate([labels[:, None], pixels], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            records[name] = (labels, pixels)
    return records


def test_cifar10_binary_parser(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    records = make_fake_cifar(archive)
    x_train, y_train, x_test, y_test = read_cifar10_binary(archive)
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    labels, pixels = records["test_batch.bin"]
    np.testing.assert_array_equal(y_test, labels)
    # first 1024 bytes are the red plane in row-major order
    np.testing.assert_array_equal(x_test[1, 0], pixels[1, :1024].reshape(32, 32))
    np.testing.assert_array_equal(x_test[1, 2], pixels[1, 2048:].reshape(32, 32))


def test_cifar10_from_mirror(tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_fake_cifar(archive)
    monkeypatch.setattr(ds, "CIFAR10_FILE", RemoteFile(archive.name, md5sum(archive), ()))
    data = load_dataset("cifar10", source=DataSource(data_dir=tmp_path / "c", mirror=tmp_path, download=False),
                        validation=5)
    assert data.input_shape == (3, 32, 32) and data.class_names[0] == "airplane"
    assert len(data.train) == 15 and len(data.test) == 4


# ---------------------------------------------------------------- user datasets


def user_factory():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 4)), np.arange(50) % 3, rng.normal(size=(10, 4)), np.arange(10) % 3


def bad_user_factory():
    return "not data"


def test_user_dataset_by_import_path():
    data = load_dataset("tests.test_datasets:user_factory", validation=5)
    assert data.input_shape == (4,) and data.num_classes == 3 and len(data.train) == 45


def test_user_dataset_wrong_return_type():
    with pytest.raises(PrunelabError, match="returned str"):
        load_dataset("tests.test_datasets:bad_user_factory")
    with pytest.raises(PrunelabError, match="no attribute"):
        load_dataset("tests.test_datasets:nothing_here")


# ---------------------------------------------------------------- shared mirror


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data mirror not present")
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_shared_mirror_datasets_load(name, tmp_path):
    try:
        data = load_dataset(name, source=DataSource(data_dir=tmp_path, mirror=SHARED_DATA, download=False))
    except DataUnavailableError:
        pytest.skip(f"{name} not in the shared mirror")
    assert data.input_shape == (1, 28, 28)
    assert len(data.train) == 55_000 and len(data.validation) == 5_000 and len(data.test) == 10_000


def _race_writer(path, seed):
    from prunelab.tasks.datasets import atomic_savez

    for _ in range(30):
        atomic_savez(path, {"x": np.full(200_000, seed, dtype=np.float32)})


def test_concurrent_cache_writers_never_fail_or_leave_partial_files(tmp_path):
    """Two processes filling the same dataset cache at once (two studies starting together)."""
    import multiprocessing

    path = tmp_path / "cache" / "d.npz"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_race_writer, args=(path, s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with np.load(path) as data:
        assert data["x"].shape == (200_000,) and len(set(data["x"][:10].tolist())) == 1
    assert [p.name for p in path.parent.iterdir()] == ["d.npz"]


def test_a_class_can_be_under_represented_by_name(tmp_path):
    """keep=3:0.1 keeps 10 % of class 3's training examples (seeded, the same every time), nothing else
    changes, and the test split is untouched; longtail follows ρ^(c/(C−1))."""
    from prunelab.tasks.datasets import sampling_options

    source = DataSource(data_dir=tmp_path)
    full = load_dataset("digits", source=source, validation=0)
    thin = load_dataset("digits[keep=3:0.1]", source=source, validation=0)
    again = load_dataset("digits[keep=3:0.1]", source=source, validation=0)
    counts_full = np.bincount(full.train.y.numpy(), minlength=10)
    counts = np.bincount(thin.train.y.numpy(), minlength=10)
    assert counts[3] == round(0.1 * counts_full[3])
    assert (np.delete(counts, 3) == np.delete(counts_full, 3)).all()
    assert torch.equal(thin.test.y, full.test.y) and thin.test.x.shape == full.test.x.shape
    assert torch.equal(thin.train.y, again.train.y) and torch.equal(thin.train.x, again.train.x)
    two = load_dataset("digits[keep=3:0.1+7:0.5]", source=source, validation=0)
    a, b = two.train.x[two.train.y == 3], thin.train.x[thin.train.y == 3]  # class 3's draw is its own
    assert torch.allclose((a - a.mean()) / a.std(), (b - b.mean()) / b.std(), atol=1e-5)  # (scaled differently)
    tail = load_dataset("digits[longtail=0.1]", source=source, validation=0)
    tail_counts = np.bincount(tail.train.y.numpy(), minlength=10)
    expected = [max(1, round(counts_full[c] * 0.1 ** (c / 9))) for c in range(10)]
    assert tail_counts.tolist() == expected
    assert sampling_options("mnist[resize=14x14,keep=1:0.5]") == {"keep": {1: 0.5}}
    for bad in ("digits[keep=3]", "digits[keep=3:1.5]", "digits[keep=12:0.5]", "digits[longtail=0]",
                "digits[keep=1:0.5,longtail=0.1]"):
        with pytest.raises(PrunelabError, match="keep|longtail"):
            load_dataset(bad, source=source)
