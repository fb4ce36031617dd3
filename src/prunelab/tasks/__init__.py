"""The task layer: datasets, models, deterministic training and evaluation."""

from .datasets import DATASETS, Dataset, RawData, Split, build_dataset, load_dataset
from .download import DataSource, RemoteFile
from .evaluation import Evaluation, confusion_matrix, evaluate, predict
from .models import MODELS, build_model, initialize
from .training import TrainConfig, TrainingDiverged, TrainResult, train
from . import gpt as _gpt, text as _text  # noqa: E402,F401  (register the language task and model)

__all__ = [
    "DATASETS", "MODELS", "DataSource", "Dataset", "Evaluation", "RawData", "RemoteFile", "Split",
    "TrainConfig", "TrainResult", "TrainingDiverged", "build_dataset", "build_model", "confusion_matrix",
    "evaluate", "initialize", "load_dataset", "predict", "train",
]
