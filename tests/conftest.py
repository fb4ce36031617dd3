import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def isolated_data_dir(tmp_path_factory):
    """Every test run gets its own cache; downloads are never attempted."""
    cache = tmp_path_factory.mktemp("prunelab-data")
    old = os.environ.get("PRUNELAB_DATA")
    os.environ["PRUNELAB_DATA"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("PRUNELAB_DATA", None)
    else:
        os.environ["PRUNELAB_DATA"] = old


@pytest.fixture(scope="session", autouse=True)
def shared_mirror():
    """The real MNIST in ../shared/data (where it exists) is the data mirror of every test, so the
    tests on real files run instead of skipping. A mirror the caller set is left alone."""
    if "PRUNELAB_DATA_MIRROR" in os.environ or not SHARED_DATA.is_dir():
        yield os.environ.get("PRUNELAB_DATA_MIRROR")
        return
    os.environ["PRUNELAB_DATA_MIRROR"] = str(SHARED_DATA)
    yield str(SHARED_DATA)
    os.environ.pop("PRUNELAB_DATA_MIRROR", None)


@pytest.fixture(scope="session")
def digits():
    from prunelab import load_dataset

    return load_dataset("digits")
