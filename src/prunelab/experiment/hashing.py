"""Canonical JSON and the hashes derived from it.

Identity must not depend on dict order, whitespace or float formatting, and
must change with any parameter. JSON with sorted keys, no spaces, and Python's
shortest round-trip float repr (exact for every finite double) gives that;
NaN/inf are rejected so a hash is never built from an unrepresentable value.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


class Canonical(dict):
    """A dict already in canonical form (string keys, lists, JSON scalars), e.g. a cached config
    dump shared by thousands of identities: hashing takes it as it is instead of walking it."""


def canonical(obj: Any) -> Canonical:
    return Canonical(_normalise(obj))


def _normalise(obj: Any) -> Any:
    if type(obj) is Canonical:
        return obj
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot hash a value of type {type(obj).__name__}: {obj!r}")


def sha256_hex(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def state_seed(state_hash: str) -> int:
    """A 63-bit seed derived from a state's hash (for its stochastic steps)."""
    return int(state_hash[:16], 16) & 0x7FFFFFFFFFFFFFFF


def layer_seed(seed: int, name: str) -> int:
    """A 63-bit seed for one tensor's random draw in a state: a function of the state's seed and the
    tensor's name alone, so a draw never depends on which tensors were drawn before it (the order of
    a mask dict differs between a state made in memory and one loaded from the store)."""
    return int(sha256_hex(f"{seed}|{name}")[:16], 16) & 0x7FFFFFFFFFFFFFFF
