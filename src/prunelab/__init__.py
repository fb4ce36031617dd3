"""prunelab: reproducible neural-network pruning research on PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from .errors import ChecksumError, DataUnavailableError, PrunelabError
from .registry import trust
from .tasks import (
    DATASETS, MODELS, DataSource, Dataset, Evaluation, RawData, Split, TrainConfig, TrainResult,
    build_dataset, build_model, evaluate, load_dataset, train,
)

try:
    __version__ = version("prunelab")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = [
    "DATASETS", "MODELS", "ChecksumError", "DataSource", "DataUnavailableError", "Dataset", "Evaluation",
    "PrunelabError", "RawData", "Split", "TrainConfig", "TrainResult", "build_dataset", "build_model",
    "evaluate", "load_dataset", "train", "trust", "__version__",
]
