"""The summary of a state that tables of a whole study read: its scalar metrics, its per-class
table and how much of it is kept. Light (no torch): kept in the index beside the listing row, so a
report on 100,000 states reads one SQLite table instead of every manifest."""

from __future__ import annotations

import math
from typing import Any

SUMMARY_VERSION = 4  # bump when state_summary changes: older rows are then recomputed from the manifests
_PER_CLASS = ("recall", "precision", "f1")
SUMMARY_KEYS = frozenset({"version", "status", "scalars", *_PER_CLASS, "class_names", "remaining", "kept",
                          "iteration", "dataset", "curve_points", "per_bin"})  # a row lacking one is remade


def flatten(data: Any, prefix: str = "", out: dict | None = None) -> dict:
    """Nested dicts → dotted keys; scalars only (lists and tables are left out)."""
    out = {} if out is None else out
    if isinstance(data, dict):
        for key, value in data.items():
            flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(data, (int, float, str, bool)) or data is None:
        out[prefix] = data
    return out


# Token and position embeddings and the output head of language models (GPT-2's and Hugging Face's
# names): 2-D weights that no pruning method of the field counts; the papers' "50 % sparsity" is of the
# Linear layers of the attention and MLP blocks.
EMBEDDINGS = ("wte.weight", "wpe.weight", "embed_tokens.weight", "embed_positions.weight",
              "word_embeddings.weight", "position_embeddings.weight", "lm_head.weight")


def remaining_percent(manifest: dict) -> float:
    """Percent of prunable weights kept: masked tensors by their masks, and every
    other Linear/Conv weight (ndim >= 2, embeddings excepted) in full — e.g. a layer a transfer
    re-initialised."""
    masks = manifest.get("masks") or {}
    kept = total = 0
    for name, entry in (manifest.get("weights") or {}).items():
        if name in masks:
            kept += masks[name]["kept"]
            total += math.prod(masks[name]["shape"])
        elif name.endswith("weight") and len(entry["shape"]) >= 2 and not name.endswith(EMBEDDINGS):
            kept += math.prod(entry["shape"])
            total += math.prod(entry["shape"])
    return 100.0 * kept / total if total else 100.0


def state_summary(manifest: dict) -> dict:
    """What study tables need of one verified manifest: ``scalars`` (every scalar metric, dotted, as
    :func:`flatten` gives them; curves and per-layer tables left out), the test split's per-class
    ``recall``/``precision``/``f1`` lists and ``class_names``, ``remaining`` (percent kept),
    ``kept`` (weights kept by masks; None without masks), ``iteration``, ``dataset``, ``status``
    ``curve_points`` (the length of the training curve) and, for a regression, the test split's
    ``per_bin`` table (bias and resolution per bin of the target)."""
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    per_class = test.get("per_class") if isinstance(test.get("per_class"), list) else []
    return {"version": SUMMARY_VERSION, "status": manifest.get("status"),
            "scalars": {k: v for k, v in flatten(metrics).items() if not k.startswith(("curve", "layers"))},
            **{k: [c.get(k) for c in per_class] for k in _PER_CLASS},
            "class_names": list(test.get("class_names", [])), "remaining": remaining_percent(manifest),
            "kept": sum(e["kept"] for e in masks.values()) if (masks := manifest.get("masks")) else None,
            "iteration": manifest.get("iteration"), "dataset": manifest.get("dataset"),
            "curve_points": len(metrics.get("curve") or ()),
            "per_bin": test.get("per_bin") if isinstance(test.get("per_bin"), list) else []}
