"""The on-disk store: content-addressed tensor blobs, JSON manifests, SQLite index.

Layout::

    STORE/blobs/ab/<sha256>.safetensors   tensors: a state's new tensors in one file (a pack, its
                                          tensors keyed by their content hashes, the file named by
                                          the hash of its keys); stores written before format 3
                                          hold one tensor a file, named by its content hash
    STORE/states/<hash>.json              one manifest per state (written last, atomically)
    STORE/probes/<state>/<probe>.json     results of probes (evaluations) on a state
    STORE/locks/<hash>.lock               per-state file locks (concurrent runs)
    STORE/index.sqlite                    query index, rebuildable from the manifests: the full
                                          rows (``states``) and the listing (``listing``: what ls,
                                          tree and filters read, one short row per state)

A state exists iff its manifest exists with status "done". Blobs are written
before the manifest, each via a temporary file, an fsync and a rename, so an
interrupted run leaves at most unreferenced blobs (``gc`` removes them) and never
a half-written state. Inside :meth:`Store.deferred_publishing` (how runs write)
the fsyncs and renames happen in a thread while the next state computes, in the
same order (see :mod:`..publishing`). Nothing here unpickles: tensors are safetensors, metadata
JSON; every blob is re-hashed when read.

Modules: ``tensors`` (bytes and hashes of tensors), ``packs`` (pack files), ``manifests`` (what a
manifest must be, its digest), ``states`` (writing and loading states), ``records`` (probe
results and documents), ``locks``, ``schema`` (the index's tables and rows), ``index`` (the
SQLite file), ``listing`` (what listings and tables read from it), ``core`` (the Store composing
them). verify, repair and gc are in :mod:`..maintenance`.
"""

from ...errors import PrunelabError, StoreError  # noqa: F401 (StoreError: importable from here as well as from errors)
from ..maintenance import Problem  # noqa: F401 (re-exported: verify's findings)
from .core import Store
from .locks import Flock
from .manifests import (FORMAT, canonical_text, identity_of, manifest_digest, manifest_problem, state_refs,
                        structure_problem, tensor_entries)
from .packs import pack_name
from .records import probe_identity
from .schema import LISTING_COLUMNS, IndexRows, ListingRow, expected_index_rows, file_stamp, index_rows, listing_row
from .tensors import (blob_file_digest, file_tensor_digests, load_file, remembered, safetensors_parts, save_file,
                      tensor_bytes, tensor_digest)

__all__ = ["FORMAT", "LISTING_COLUMNS", "Flock", "IndexRows", "ListingRow", "Problem", "PrunelabError", "Store",
           "StoreError", "blob_file_digest", "canonical_text", "expected_index_rows", "file_stamp",
           "file_tensor_digests", "identity_of", "index_rows", "listing_row", "load_file", "manifest_digest",
           "manifest_problem", "pack_name", "probe_identity", "remembered", "safetensors_parts", "save_file",
           "state_refs", "structure_problem", "tensor_bytes", "tensor_digest", "tensor_entries"]
