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


@pytest.fixture(scope="session")
def digits():
    from prunelab import load_dataset

    return load_dataset("digits")
