"""What a manifest must be: its format, its digest (canonical JSON), the identity its recipe gives,
and every structure readers act on (names that are hashes, dtypes, shapes, metrics that are
numbers). Pure functions over parsed JSON: no files, no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

from ..containment import TORCH_DTYPE_NAMES, is_hash

# 2: manifests carry a digest of their own content (format-1 manifests, without it, are still read:
# their identity is checked, their content cannot be).
# 3: a state's new tensors go into one pack file; a tensor entry names its pack ("pack") besides its
# own content hash ("blob"). Entries without "pack" (formats 1-2, and tensors stored by them) are
# one-tensor files. Writing one file a state instead of ~20 is what makes small states cheap: creating,
# fsyncing and renaming each file has a fixed cost (docs/benchmarks/state_write.md).
FORMAT = 3


def manifest_digest(manifest: dict) -> str:
    """sha256 of a manifest's content without its ``digest`` field (sorted keys, exact floats)."""
    return hashlib.sha256(canonical_text({k: v for k, v in manifest.items() if k != "digest"}).encode()).hexdigest()


def canonical_text(value) -> str:
    """``value`` as the canonical JSON manifests are hashed and written in (sorted keys, exact floats)."""
    return _CANONICAL.encode(value)


# what json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True) builds on every call
# (json.dumps makes a new encoder for any non-default argument: ~40 calls a state)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=True)


@functools.lru_cache(maxsize=256)
def json_key(key: str) -> str:
    """A manifest's top-level key as JSON (the same twenty-odd keys in every manifest)."""
    return _CANONICAL.encode(key)


def identity_of(manifest: dict) -> str:
    """The state hash a manifest's parent, recipe, version and parameters give (what ``hash`` must be)."""
    from ..hashing import canonical_json, sha256_hex

    recipe = manifest["recipe"]
    return sha256_hex(canonical_json({"parent": manifest.get("parent"), "recipe": recipe["type"],
                                      "version": recipe["version"], "params": recipe["params"]}))


def manifest_problem(path: Path, manifest) -> str | None:
    """Why a manifest read from ``path`` cannot be trusted, or None: not an object, fields missing,
    a name that is not its hash, an identity that its recipe does not give, no digest or content
    that does not match it (edited or corrupted), or a structure prunelab never writes (names that
    are not hashes, which would make paths outside the store; dtypes, shapes and counts that
    loading would choke on)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    recipe = manifest.get("recipe")
    if not isinstance(manifest.get("hash"), str) or not isinstance(recipe, dict) or \
            not isinstance(recipe.get("type"), str) or not isinstance(recipe.get("params"), dict) or \
            "version" not in recipe:
        return "fields hash/recipe missing or malformed"
    if manifest["hash"] != path.stem:
        return f"names state {manifest['hash'][:12]} but is stored as {path.stem[:12]}"
    if not is_hash(manifest["hash"]):
        return "its hash is not 64 hexadecimal characters"
    try:
        identity = identity_of(manifest)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"recipe parameters cannot be hashed ({exc})"
    if identity != manifest["hash"]:
        return "its parent, recipe and parameters do not give its hash (edited)"
    # Every manifest since store format 2 carries its digest; one without it is either older than
    # that format or had it removed (with its format set back), which must not be a way around the
    # check.
    if "digest" not in manifest:
        return "digest missing (a manifest without one is either older than store format 2 or edited)"
    if manifest_digest(manifest) != manifest["digest"]:
        return "content does not match its digest (edited or corrupted)"
    return structure_problem(manifest)


def structure_problem(m: dict) -> str | None:
    """What in a (digest-valid) manifest prunelab never writes and readers must not act on, or None."""
    if type(m.get("format")) is not int or not 2 <= m["format"] <= FORMAT:
        return f"format {str(m.get('format'))[:20]!r} is not one this version reads (2 to {FORMAT})"
    parent = m.get("parent")
    if parent is not None and not is_hash(parent):
        return "its parent is not a state hash"
    if type(m["recipe"]["version"]) is not int:
        return "its recipe version is not an integer"
    try:
        refs = state_refs(m["recipe"]["params"])
    except (TypeError, AttributeError):
        return "its references to other states are malformed"
    if not all(is_hash(r) for r in refs):
        return "it refers to a state by something other than a state hash"
    if m.get("status") not in ("done", "failed"):
        return f"status {str(m.get('status'))[:20]!r} is neither done nor failed"
    if not isinstance(m.get("tags", []), list) or not all(isinstance(t, str) for t in m.get("tags", [])):
        return "tags must be a list of strings"
    why = _record_problem(m)
    if why:
        return why
    if m["status"] != "done":
        if any(m.get(group) for group in ("weights", "masks", "optimizer")):
            return "a failed state holds no tensors"
        return None
    if type(m.get("iteration")) is not int or m["iteration"] < 0:
        return "its iteration is not a non-negative integer"
    if not isinstance(m.get("dataset"), str) or not isinstance(m.get("spec"), dict):
        return "dataset or model spec missing"
    groups = [("weights", m.get("weights")), ("masks", m.get("masks"))]
    optimizer = m.get("optimizer")
    if optimizer is not None:
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("tensors"), dict) or \
                not isinstance(optimizer.get("values"), dict) or not isinstance(optimizer.get("param_groups"), list):
            return "its optimizer state is malformed"
        groups.append(("optimizer", optimizer["tensors"]))
        for key, value in list(optimizer["tensors"].items()) + list(optimizer["values"].items()):
            index, dot, name = key.partition(".")
            if not dot or not index.isdigit() or not name:
                return f"optimizer key {key[:40]!r} is not <parameter index>.<name>"
        for key, value in optimizer["values"].items():
            if isinstance(value, dict) and (set(value) != {"scalar", "dtype"} or value["dtype"] not in TORCH_DTYPE_NAMES
                                            or not isinstance(value["scalar"], (int, float, bool))):
                return f"optimizer value {key[:40]!r} is malformed"
    for group, entries in groups:
        if not isinstance(entries, dict):
            return f"its {group} are not a table of tensors"
        for key, entry in entries.items():
            why = _entry_problem(entry, mask=group == "masks")
            if why:
                return f"{group} entry {key[:40]!r}: {why}"
    return None


def _number(value) -> bool:
    """A JSON number a reader can compute with and SQLite can hold (integers within 64 bits)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, float) or (isinstance(value, int) and -2**63 <= value < 2**63)


# the numbers of an evaluation that listings, tables and reports compute with
_EVALUATION_NUMBERS = ("accuracy", "loss", "rmse", "resolution", "bias", "macro_f1", "balanced_accuracy", "roc_auc",
                       "mae", "r2", "perplexity", "bits_per_token")


def _record_problem(m: dict) -> str | None:
    """What in a manifest's bookkeeping and metrics the readers (listings, tables, reports, show)
    could not use: types and ranges prunelab never writes."""
    if type(m.get("depth", 0)) is not int or not 0 <= m.get("depth", 0) <= 10**6:
        return "its depth is not an integer in 0..1,000,000"
    if not isinstance(m["recipe"].get("label", ""), str):
        return "its recipe label is not text"
    timings = m.get("timings")
    if timings is not None and (not isinstance(timings, dict) or
                                not all(v is None or _number(v) for v in timings.values())):
        return "its timings are not a table of numbers"
    error = m.get("error")
    if error is not None and (not isinstance(error, dict) or not all(isinstance(error.get(k, ""), str)
                                                                     for k in ("message", "traceback"))):
        return "its error is not a message and a traceback"
    if m.get("torch_threads") is not None and (type(m["torch_threads"]) is not int or not 0 < m["torch_threads"] < 4096):
        return "its torch thread count is not a small positive integer"
    metrics = m.get("metrics")
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        return "its metrics are not a table"
    if metrics.get("sparsity") is not None and not _number(metrics["sparsity"]):
        return "metrics.sparsity is not a number"
    for split in ("train", "validation", "test"):
        ev = metrics.get(split)
        if ev is None:
            continue
        if not isinstance(ev, dict):
            return f"metrics.{split} is not a table"
        for key in _EVALUATION_NUMBERS:
            if ev.get(key) is not None and not _number(ev[key]):
                return f"metrics.{split}.{key} is not a number"
        if not isinstance(ev.get("task", ""), str) or not isinstance(ev.get("class_names", []), list) or \
                not all(isinstance(c, str) for c in ev.get("class_names", [])):
            return f"metrics.{split}: task or class names are not text"
        for table in ("per_class", "per_bin"):
            rows = ev.get(table, [])
            if not isinstance(rows, list) or not all(
                    isinstance(r, dict) and all(v is None or isinstance(v, (int, float, str)) for v in r.values())
                    for r in rows):
                return f"metrics.{split}.{table} is not a list of rows of numbers"
        confusion = ev.get("confusion", [])
        if not isinstance(confusion, list) or not all(isinstance(r, list) and all(_number(v) for v in r)
                                                      for r in confusion):
            return f"metrics.{split}.confusion is not a table of numbers"
    curve = metrics.get("curve")
    if curve is not None and not isinstance(curve, list):
        return "metrics.curve is not a list"
    return None


def _entry_problem(entry, mask: bool) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    if not is_hash(entry.get("blob")):
        return "its blob is not a content hash (a path outside the store?)"
    if "pack" in entry and not is_hash(entry["pack"]):
        return "its pack is not a content hash (a path outside the store?)"
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 8 or not all(type(d) is int and d >= 0 for d in shape):
        return "malformed shape"
    if mask:
        if entry.get("packed") is not True or type(entry.get("kept")) is not int or \
                not 0 <= entry["kept"] <= math.prod(shape):
            return "malformed mask entry"
    elif entry.get("dtype") not in TORCH_DTYPE_NAMES:
        return f"unknown dtype {str(entry.get('dtype'))[:20]!r}"
    return None


def damage_reason(path: Path, exc: Exception) -> str:
    """Why a manifest is damaged, for a ``damaged`` record (path → why): the StoreError's
    message without its path and its advice."""
    return str(exc).removeprefix(f"{path}: damaged manifest: ").split("; `prunelab")[0]


def state_refs(params: dict) -> list[str]:
    """The states a recipe's parameters reference (``{"$state": hash}`` items, alone or in lists)."""
    return [item["$state"] for v in params.values() for item in (v if isinstance(v, list) else [v])
            if isinstance(item, dict) and "$state" in item]


def tensor_entries(manifest: dict) -> list:
    """Every tensor entry of a manifest: weights, masks and the optimizer state's tensors."""
    entries = list((manifest.get("weights") or {}).values()) + list((manifest.get("masks") or {}).values())
    if manifest.get("optimizer"):
        entries += list(manifest["optimizer"]["tensors"].values())
    return entries

