"""The experiment state tree: lazy states, content-addressed store, executors, queries.

Names are imported on first use (PEP 562), so reading a store (``open_store``) does not
import torch: listing and querying stay fast.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "RunSummary": "executors", "Results": "query", "open_store": "query", "ModelSpec": "snapshot",
    "Snapshot": "snapshot", "Store": "store", "StoreError": "store", "Experiment": "tree", "Probe": "tree",
    "State": "tree",
    **{name: "recipes" for name in ("Consensus", "Evaluate", "Finetune", "Init", "Prune", "RandomPruneLike",
                                    "RandomReinit", "Recipe", "Ref", "Rewind", "Train", "Transfer")},
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
