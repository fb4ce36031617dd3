"""Command-line commands for Hugging Face models (registered by :mod:`prunelab.cli`).

``prunelab export-hf STORE STATE OUTPUT_DIR`` writes a state's model, masks applied, as a directory
that ``transformers.AutoModelForCausalLM.from_pretrained`` loads; ``prunelab hf-fingerprint DIR``
prints the content hash to pin an ``hf:`` model with (model option ``sha256``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .errors import PrunelabError


def export_hf(
    store: Path = typer.Argument(..., help="store directory"),
    state: str = typer.Argument(..., help="state hash or a unique prefix of it"),
    output: Path = typer.Argument(..., help="directory to write (new, or empty)"),
    vocabulary: bool = typer.Option(True, help="write the task's vocabulary (vocab.json and a character tokenizer) "
                                               "where the model brings no tokenizer of its own"),
) -> None:
    """Export a state's language model (masks applied: pruned weights are zeros) in the Hugging Face
    layout (config.json + model.safetensors): the built-in gpt as GPT2LMHeadModel, an hf: model as
    its own architecture (with its tokenizer files). An hf: model's directory is named by the store:
    give prunelab --trust hf export-hf ... to let it be read."""
    from . import __version__
    from .experiment import open_store
    from .tasks.hf import check_trusted, is_hf_name, save_pretrained

    results = open_store(store)
    for path, why in results.damaged.items():
        print(f"warning: damaged, left out: {path}: {why}", file=sys.stderr)
    manifest = results.get(state)
    snapshot = results.snapshot(manifest["hash"])
    if is_hf_name(snapshot.spec.model):
        check_trusted(snapshot.spec.model)  # named by the store: read only when you trust hf (before anything else)
    elif snapshot.spec.model != "gpt":
        raise PrunelabError(f"state {manifest['hash'][:12]} is a {snapshot.spec.model!r} model: only hf: models and the "
                            f"built-in 'gpt' export to the Hugging Face layout")
    names = None
    if vocabulary:
        names = _vocabulary(snapshot.dataset)
    sparsity = (manifest.get("metrics") or {}).get("sparsity")
    provenance = {"prunelab": __version__, "state": manifest["hash"], "store": str(Path(store).resolve()),
                  "model": snapshot.spec.model, "model_options": dict(snapshot.spec.options),
                  "dataset": snapshot.dataset, "sparsity": sparsity, "masked_tensors": sorted(snapshot.masks)}
    out = save_pretrained(snapshot, output, vocabulary=names, provenance=provenance)
    pruned = sum(int((~m).sum()) for m in snapshot.masks.values())
    total = sum(m.numel() for m in snapshot.masks.values())
    share = f"{pruned:,} of {total:,} masked weights are zeros" if total else "no masks: the dense model"
    print(f"wrote {out} ({share}); load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")


def _vocabulary(dataset: str):
    """The task's tokens (its class names) when the task is a language task in the mirror or the
    cache (a store never makes prunelab download); None otherwise, with a note."""
    from .experiment.context import dataset_cache

    try:
        data = dataset_cache(dataset, download=False)
    except PrunelabError as exc:
        print(f"note: no vocabulary written ({exc})", file=sys.stderr)
        return None
    return tuple(data.class_names) if getattr(data, "task", None) == "language" else None


def hf_fingerprint(
    directory: Path = typer.Argument(..., help="a model directory (config.json + *.safetensors)"),
) -> None:
    """Print the sha256 of a model directory's content (config.json, the safetensors index and
    files): the value of the model option sha256 that pins an hf: model in a spec."""
    from .tasks.hf import fingerprint

    print(fingerprint(directory))
