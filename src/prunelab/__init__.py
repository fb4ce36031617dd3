"""prunelab: reproducible neural-network pruning research on PyTorch.

The task layer's names (datasets, models, training) are imported on first use, so the
command line and store queries start without importing torch.
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import ChecksumError, DataUnavailableError, PrunelabError
from .registry import trust

try:
    __version__ = version("prunelab")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

_TASKS = ("DATASETS", "MODELS", "DataSource", "Dataset", "Evaluation", "RawData", "Split", "TrainConfig",
          "TrainResult", "build_dataset", "build_model", "evaluate", "load_dataset", "train")

__all__ = ["ChecksumError", "DataSource", "DataUnavailableError", "Dataset", "DATASETS", "Evaluation", "MODELS",
           "PrunelabError", "RawData", "Split", "TrainConfig", "TrainResult", "__version__", "build_dataset",
           "build_model", "evaluate", "load_dataset", "train", "trust"]


def __getattr__(name: str):
    if name in _TASKS:
        from . import tasks

        value = getattr(tasks, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunelab' has no attribute {name!r}")
