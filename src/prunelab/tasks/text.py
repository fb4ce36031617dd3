"""Character-level text tasks for language models.

A text task is a :class:`~prunelab.tasks.datasets.Dataset` with ``task = "language"``: each
split holds fixed-length blocks of token ids, ``x[i]`` a block and ``y[i]`` the same block
shifted by one character (the next character at every position). The class names are the
vocabulary, one character each, so the per-class machinery (recall per class, "who pays")
reads as "which characters the model loses".
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PrunelabError
from .datasets import DATASETS, Dataset, Split
from .download import DataSource, RemoteFile, open_maybe_compressed

TINY_SHAKESPEARE = RemoteFile(
    "input.txt",
    "6fb458f1232090904fb40fe944165e91",  # the 1,115,394-character text of karpathy's char-rnn repository
    ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
    raw_md5="6fb458f1232090904fb40fe944165e91",  # accepts input.txt.xz / .bz2 / .gz mirrors of the same text
)
TRAIN_FRACTION = 0.9  # nanoGPT's shakespeare_char split: the first 90 % trains
MAX_BLOCK = 4096


def char_vocabulary(text: str) -> tuple[str, ...]:
    """The sorted set of characters of ``text`` (nanoGPT's shakespeare_char vocabulary: 65 for Tiny
    Shakespeare)."""
    return tuple(sorted(set(text)))


def blocks(ids: np.ndarray, block: int) -> Split:
    """Non-overlapping blocks of ``block`` + 1 ids: inputs the first ``block``, targets the last."""
    n = (len(ids) - 1) // block
    if n < 1:
        raise PrunelabError(f"a text of {len(ids)} characters holds no block of {block} (+1) characters")
    x = torch.from_numpy(ids[: n * block].reshape(n, block).astype(np.int64))
    y = torch.from_numpy(ids[1 : n * block + 1].reshape(n, block).astype(np.int64))
    return Split(x.contiguous(), y.contiguous())


def char_dataset(name: str, text: str, block: int = 64) -> Dataset:
    """A character-level task from one text: the first 90 % trains (as nanoGPT does), the next 5 %
    validates (early stopping, curves) and the last 5 % is the held-out test split."""
    if not 1 <= block <= MAX_BLOCK:
        raise PrunelabError(f"dataset {name!r}: block {block} must be 1..{MAX_BLOCK} characters")
    vocabulary = char_vocabulary(text)
    lookup = {c: i for i, c in enumerate(vocabulary)}
    ids = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    first, second = int(len(ids) * TRAIN_FRACTION), int(len(ids) * (1 + TRAIN_FRACTION) / 2)
    return Dataset(name=name, train=blocks(ids[:first], block), validation=blocks(ids[first:second], block),
                   test=blocks(ids[second:], block), class_names=vocabulary, task="language")


def read_text(path) -> str:
    with open_maybe_compressed(path) as fh:
        return fh.read().decode("utf-8")


@DATASETS.register("tinyshakespeare", "Tiny Shakespeare (char-rnn), character-level language modelling, 65 "
                   "characters; option block=N (default 64) (download or mirror, MD5-checked)")
def tinyshakespeare(source: DataSource, block: int = 64) -> Dataset:
    path = source.fetch("tinyshakespeare", TINY_SHAKESPEARE, ("tiny_shakespeare", "shakespeare_char", "shakespeare"))
    return char_dataset("tinyshakespeare" if block == 64 else f"tinyshakespeare[block={block}]", read_text(path),
                        block)
