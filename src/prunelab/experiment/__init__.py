"""The experiment state tree: lazy states, content-addressed store, executors, queries.

Names are imported on first use (PEP 562), so reading a store (``open_store``) does not
import torch: listing and querying stay fast.
"""

from __future__ import annotations

from .._lazy import lazy_names

_WHERE = {
    "RunSummary": "runner", "Results": "query", "open_store": "query", "ModelSpec": "snapshot",
    "Snapshot": "snapshot", "Store": "store", "StoreError": "store", "Experiment": "tree", "Probe": "tree",
    "State": "tree",
    **{name: "recipes" for name in ("Consensus", "Evaluate", "Finetune", "Init", "Prune", "RandomPruneLike",
                                    "RandomReinit", "Recipe", "Ref", "Rewind", "Train", "Transfer")},
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
