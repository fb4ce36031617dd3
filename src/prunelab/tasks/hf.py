"""Your own causal language model from a local Hugging Face directory, and pruned models back out.

``build_model("hf:/path/to/dir", (T,), vocabulary)`` loads a directory that ``save_pretrained``
wrote (``config.json`` + ``*.safetensors``) with ``transformers.AutoModelForCausalLM`` and wraps it
as a prunelab language model: ``forward(ids)`` gives logits ``(B, T, vocabulary)``.

Loading is data only:

* ``local_files_only=True`` and an existing directory: never the network, never the hub's cache
  (a name that is not a directory, such as ``hf:facebook/opt-125m``, is refused);
* safetensors only (``use_safetensors=True``): a directory with only ``pytorch_model.bin`` (a pickle,
  which runs code when loaded) is refused before any file is opened;
* no remote code (``trust_remote_code=False``); a ``config.json`` asking for code (``auto_map``) or
  for quantized weights (``quantization_config``) is refused; the attention is torch's own (sdpa,
  or eager where a model lacks it), never a kernel a config names.

**Trust.** An ``hf:`` name goes through the trust of import paths (:mod:`prunelab.registry`): its
"module" is ``hf``. Naming an ``hf:`` model yourself (a spec you run, ``Experiment.root``,
:func:`~prunelab.tasks.models.build_model`) trusts it, as naming
``package.module:factory`` trusts that module; a name only read from a store is refused unless
you trust ``hf`` (``prunelab --trust hf COMMAND``, ``prunelab.trust("hf")``, ``PRUNELAB_TRUST=hf``).
As for a module, the trust is per process and covers every ``hf:`` directory.

**Identity.** A state's identity holds the model's name and options, not the directory's content.
So a model built for an experiment (``build_model(..., trust_import=False)``: what every state and
the planning check do) must pin the content with the model option ``sha256`` (what
:func:`fingerprint` gives: sha256 of ``config.json``, the safetensors index and every safetensors
file). The pin is part of the identity, and every rebuild checks it: a changed checkpoint makes new
states (a new pin) or fails loudly (the old one), never reuses results of the old weights.

**What is pruned.** The attention and MLP projections, exactly: GPT-2's ``Conv1D`` modules (a
transposed Linear) become ``nn.Linear`` at load (and ``Conv1D`` again at export), and the LM head is
a small module applying ``F.linear`` (the embedding's weight when tied), not an ``nn.Linear``, so
:func:`prunelab.pruning.targets.select` picks the projections and never the embeddings, norms or
the head.

**Export.** :func:`save_pretrained` writes a (pruned) model — an ``hf:`` model or the built-in
``gpt``, mapped onto ``GPT2LMHeadModel`` — in the Hugging Face layout, masks applied.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..caches import CACHES
from ..errors import PrunelabError

PREFIX = "hf:"
TRUST_NAME = "hf"  # the "module" an hf: name is trusted under (registry.trust)
PIN_OPTION = "sha256"
MIN_PIN = 16  # hex characters of a pin (64 bits)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json", "generation_config.json")
INSTALL_HINT = "pip install 'prunelab[hf]' (transformers)"


def is_hf_name(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise PrunelabError(f"hf: models need the transformers package: {INSTALL_HINT}") from None
    return transformers


# --------------------------------------------------------------------------- trust and content


def check_trusted(name: str) -> None:
    """Refuse ``name`` unless ``hf`` is trusted in this process (see the module's docstring)."""
    from ..registry import TRUST_ENV, trusted_modules

    if TRUST_NAME in trusted_modules():
        return
    raise PrunelabError(
        f"refusing to load the model directory of {name!r}: this name did not come from you (it was read from a "
        f"store or a file), and a store must not make prunelab read a model directory. If you trust it: prunelab "
        f"--trust {TRUST_NAME} COMMAND ..., prunelab.trust({TRUST_NAME!r}) in Python, or {TRUST_ENV}={TRUST_NAME}")


def directory_of(name: str) -> Path:
    """The directory an ``hf:`` name names (``~`` expanded): it must exist."""
    raw = name[len(PREFIX):]
    if not raw:
        raise PrunelabError(f"model {name!r}: give a directory, hf:/path/to/model (what save_pretrained wrote)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise PrunelabError(f"model {name!r}: {str(path)!r} is not a directory (hf: names a local directory that "
                            f"save_pretrained or `huggingface-cli download --local-dir` wrote; prunelab never "
                            f"downloads)")
    return path


def _weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix == ".safetensors" and p.is_file())


def content_files(path: Path) -> list[Path]:
    """What :func:`fingerprint` hashes: ``config.json``, the safetensors index, the safetensors files."""
    index = [p for p in (path / "model.safetensors.index.json",) if p.is_file()]
    return [path / "config.json", *index, *_weight_files(path)]


def fingerprint(directory: str | Path) -> str:
    """sha256 of a model directory's content: ``config.json``, ``model.safetensors.index.json`` (if
    any) and every ``*.safetensors`` file, each framed by its name and size. Once per process for
    unchanged files (same size, modification time and inode)."""
    path = Path(str(directory).removeprefix(PREFIX)).expanduser()
    files = content_files(path)
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise PrunelabError(f"model directory {str(path)!r} has no {missing[0]}")
    stats = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for p in files)
    fingerprints = CACHES.model_fingerprints
    if stats not in fingerprints:
        outer = hashlib.sha256(b"prunelab hf model directory v1\n")
        for p in files:
            inner = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    inner.update(chunk)
            outer.update(f"{p.name}\t{p.stat().st_size}\t{inner.hexdigest()}\n".encode())
        fingerprints[stats] = outer.hexdigest()
    return fingerprints[stats]


def _check_directory(name: str, path: Path) -> dict:
    """Refuse what prunelab does not load (pickles, remote code, quantized weights); the config."""
    if not _weight_files(path):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLES)
        if pickles:
            raise PrunelabError(
                f"refusing model {name!r}: it holds only pickled weights ({', '.join(pickles[:3])}), which run code when "
                f"loaded; prunelab loads safetensors only: convert it once yourself where you trust the file "
                f"(AutoModelForCausalLM.from_pretrained(dir).save_pretrained(new_dir))")
        raise PrunelabError(f"model {name!r}: no *.safetensors weights in {str(path)!r}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise PrunelabError(f"model {name!r}: no config.json in {str(path)!r}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrunelabError(f"model {name!r}: config.json cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise PrunelabError(f"model {name!r}: config.json is not a JSON object")
    if config.get("auto_map"):
        raise PrunelabError(f"refusing model {name!r}: its config.json asks for the directory's own code (auto_map); "
                            f"prunelab never runs remote code (only the architectures transformers ships)")
    if config.get("quantization_config"):
        raise PrunelabError(f"refusing model {name!r}: its weights are quantized (quantization_config); prunelab "
                            f"prunes floating-point weights")
    return config


def _check_pin(name: str, path: Path, pin: Any, required: bool) -> str | None:
    if pin is None:
        if required:
            raise PrunelabError(
                f"model {name!r}: a model in an experiment pins its directory's content, so that a changed checkpoint "
                f"makes new states instead of reusing old results: add the model option {PIN_OPTION} = "
                f"\"{fingerprint(path)}\" (its content now; a prefix of {MIN_PIN}+ characters will do)")
        return None
    pin = str(pin).lower()
    if len(pin) < MIN_PIN or len(pin) > 64 or any(c not in "0123456789abcdef" for c in pin):
        raise PrunelabError(f"model {name!r}: option {PIN_OPTION}={pin!r} must be {MIN_PIN} to 64 hexadecimal "
                            f"characters (prunelab.tasks.hf.fingerprint(dir))")
    now = fingerprint(path)
    if not now.startswith(pin):
        raise PrunelabError(f"model {name!r}: the directory's content changed: its sha256 is {now}, the experiment pinned "
                            f"{pin}. States of the old content stay valid for it; to study the new content, pin "
                            f"{PIN_OPTION} = \"{now}\" (new states)")
    return now


# --------------------------------------------------------------------------- the wrapper


class TiedHead(nn.Module):
    """The LM head tied to the token embedding: ``F.linear`` with the embedding's weight. Not an
    ``nn.Linear`` (never selected for pruning) and holding no tensor of its own (one state-dict key)."""

    def __init__(self, embedding: nn.Module, bias: torch.Tensor | None = None):
        super().__init__()
        self._embedding = [embedding]  # a list: not a submodule (its weight is the embedding's key alone)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._embedding[0].weight, self.bias)


class Head(nn.Module):
    """An untied LM head (LLaMA's ``lm_head``): ``F.linear`` with its own weight, not an ``nn.Linear``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class HFCausalLM(nn.Module):
    """A transformers causal LM as a prunelab language model: token ids ``(B, T)`` → logits
    ``(B, T, vocabulary)``. ``hf`` is the transformers model (its parameters are named
    ``hf.<transformers' names>``); ``conv1d`` the modules converted from GPT-2's ``Conv1D``."""

    takes_tokens = True

    def __init__(self, model: nn.Module, source: str, conv1d: Sequence[str] = (), tied: bool = True):
        super().__init__()
        self.hf = model
        self.source = source
        self.conv1d = tuple(conv1d)
        self.tied = tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=ids, use_cache=False).logits


def _conv1d_to_linear(model: nn.Module) -> list[str]:
    """Replace every transformers ``Conv1D`` (``y = x @ W + b``, W ``(in, out)``) with the equal
    ``nn.Linear`` (W transposed); the names replaced."""
    from transformers.pytorch_utils import Conv1D

    names = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    for name in names:
        conv = model.get_submodule(name)
        parent, _, child = name.rpartition(".")
        w = conv.weight.detach()
        linear = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w.t())
            if conv.bias is not None:
                linear.bias.copy_(conv.bias.detach())
        setattr(model.get_submodule(parent) if parent else model, child, linear)
    return names


def _replace_head(model: nn.Module) -> bool:
    """The LM head as :class:`TiedHead` or :class:`Head`; whether it is tied."""
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    if not isinstance(head, nn.Linear) or embedding is None:
        raise PrunelabError(f"{type(model).__name__}: prunelab needs an nn.Linear LM head and token embeddings "
                            f"(found {type(head).__name__})")
    tied = head.weight is embedding.weight or head.weight.data_ptr() == embedding.weight.data_ptr()
    model.set_output_embeddings(TiedHead(embedding, head.bias) if tied else Head(head.weight, head.bias))
    return tied


@contextmanager
def _no_progress_bars():
    """transformers' progress bars off while prunelab loads or saves (its warnings stay)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _from_pretrained(name: str, path: Path, dtype: torch.dtype) -> nn.Module:
    transformers = _transformers()
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kwargs = dict(local_files_only=True, use_safetensors=True, trust_remote_code=False, output_loading_info=True)
    kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dtype
    loaded = error = None
    with _no_progress_bars():
        for attention in ("sdpa", "eager"):  # torch's attention; eager for an architecture without sdpa
            try:
                loaded = transformers.AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=attention,
                                                                           **kwargs)
                break
            except (OSError, KeyError, RuntimeError, ValueError) as exc:
                error = exc
                about_sdpa = any(w in str(exc) for w in ("sdpa", "scaled_dot_product_attention", "attn_implementation"))
                if not (attention == "sdpa" and isinstance(exc, ValueError) and about_sdpa):
                    break
    if loaded is None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PrunelabError(f"model {name!r}: transformers cannot load {str(path)!r}: {first}")
    model, info = loaded
    broken = sorted(info.get("missing_keys") or ()) + sorted(info.get("mismatched_keys") or ())
    if broken:
        raise PrunelabError(f"model {name!r}: the checkpoint lacks or misshapes {len(broken)} tensors of its "
                            f"architecture ({', '.join(map(str, broken[:3]))}): transformers would draw them at random")
    return model


OPTIONS = (PIN_OPTION, "dtype")


def build_hf_model(name: str, input_shape: Sequence[int], num_classes: int, *, init: str | None = None,
                   pin_required: bool = False, **options) -> HFCausalLM:
    """The model of ``name`` (``hf:/dir``) for blocks of ``input_shape = (T,)`` token ids and
    ``num_classes`` = the model's vocabulary. ``pin_required``: built for a store (see the module's
    docstring): the option ``sha256`` must pin the directory's content. Option ``dtype``: float32
    (default), bfloat16 or float16. The weights are the directory's: no seed or ``init`` applies."""
    check_trusted(name)  # before the file system is touched
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise PrunelabError(f"model {name!r} has no option {unknown[0]!r} (options: {', '.join(OPTIONS)})")
    sha256, dtype = options.get(PIN_OPTION), options.get("dtype", "float32")
    _transformers()
    path = directory_of(name)
    if init not in (None, "default"):
        raise PrunelabError(f"model {name!r}: its weights are the directory's; init {init!r} does not apply")
    if dtype not in DTYPES:
        raise PrunelabError(f"model {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 1:
        raise PrunelabError(f"model {name!r} takes blocks of token ids (T,), got inputs of shape {input_shape}")
    config = _check_directory(name, path)
    pinned = _check_pin(name, path, sha256, pin_required)
    vocabulary = config.get("vocab_size")
    if isinstance(vocabulary, int) and vocabulary != num_classes:
        raise PrunelabError(f"model {name!r} has a vocabulary of {vocabulary} tokens, the task {num_classes}: the task "
                            f"must be tokenized with this model's tokenizer")
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if isinstance(positions, int) and input_shape[0] > positions:
        raise PrunelabError(f"model {name!r}: blocks of {input_shape[0]} tokens are longer than its {positions} positions")
    model = _from_pretrained(name, path, DTYPES[dtype])
    conv1d = _conv1d_to_linear(model)
    tied = _replace_head(model)
    wrapper = HFCausalLM(model, name, conv1d, tied)
    wrapper.sha256 = pinned  # (plain attributes: what the model was built from, never stored)
    with torch.no_grad():
        wrapper.eval()
        out = wrapper(torch.zeros(1, min(input_shape[0], 2), dtype=torch.long))
    if out.shape[-1] != num_classes:
        raise PrunelabError(f"model {name!r} gives {out.shape[-1]} logits per position, the task has {num_classes} tokens")
    wrapper.train()
    return wrapper


# --------------------------------------------------------------------------- export


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every mask applied (``weight = weight_orig * weight_mask``)."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key.removesuffix("_orig")
            out[base] = (value * state[base + "_mask"].to(value.dtype)).detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


def gpt2_config(model: nn.Module):
    """The ``GPT2Config`` of a built-in ``gpt`` model (no dropout: the built-in has none)."""
    transformers = _transformers()
    width = model.wte.embedding_dim
    return transformers.GPT2Config(
        vocab_size=model.wte.num_embeddings, n_positions=model.context, n_embd=width, n_layer=len(model.blocks),
        n_head=model.blocks[0].attn.heads, n_inner=model.blocks[0].mlp.c_fc.out_features,
        activation_function="gelu_new", layer_norm_epsilon=model.ln_f.eps, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def gpt_to_hf(model: nn.Module):
    """A ``transformers.GPT2LMHeadModel`` computing what the built-in ``gpt`` ``model`` computes
    (masks applied). GPT-2 has biases everywhere: a model built with ``bias=False`` gets zeros."""
    transformers = _transformers()
    state = effective_state_dict(model)
    config = gpt2_config(model)
    hf = transformers.GPT2LMHeadModel(config).to(model.wte.weight.dtype)
    mapped: dict[str, torch.Tensor] = {"transformer.wte.weight": state["wte.weight"],
                                       "transformer.wpe.weight": state["wpe.weight"]}
    def norm(src: str, dst: str) -> None:
        mapped[f"{dst}.weight"] = state[f"{src}.weight"]
        mapped[f"{dst}.bias"] = state.get(f"{src}.bias", torch.zeros_like(state[f"{src}.weight"]))

    for i in range(config.n_layer):
        norm(f"blocks.{i}.ln_1", f"transformer.h.{i}.ln_1")
        norm(f"blocks.{i}.ln_2", f"transformer.h.{i}.ln_2")
        for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            w = state[f"blocks.{i}.{part}.weight"]  # Linear (out, in) → Conv1D (in, out)
            mapped[f"transformer.h.{i}.{part}.weight"] = w.t().contiguous()
            mapped[f"transformer.h.{i}.{part}.bias"] = state.get(f"blocks.{i}.{part}.bias", w.new_zeros(w.shape[0]))
    norm("ln_f", "transformer.ln_f")
    _load_exact(hf, mapped)
    return hf


def _load_exact(hf: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``hf``: every tensor it has, except the LM head where tied."""
    missing, unexpected = hf.load_state_dict(state, strict=False)
    head = hf.get_output_embeddings()
    tied = head is not None and head.weight is hf.get_input_embeddings().weight
    missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
    buffers = {name for name, _ in hf.named_buffers()}
    missing = [k for k in missing if k not in buffers]
    if missing or unexpected:
        raise PrunelabError(f"the weights do not fit {type(hf).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def hf_of(wrapper: HFCausalLM):
    """A fresh transformers model (the wrapper's config) holding the wrapper's weights, masks applied,
    in transformers' own layout (``Conv1D`` weights transposed back, the LM head an ``nn.Linear``)."""
    transformers = _transformers()
    state = {k.removeprefix("hf."): v for k, v in effective_state_dict(wrapper).items() if k.startswith("hf.")}
    for name in wrapper.conv1d:
        state[f"{name}.weight"] = state[f"{name}.weight"].t().contiguous()
    config = wrapper.hf.config
    hf = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    hf = hf.to(next(wrapper.parameters()).dtype)
    _load_exact(hf, state)  # a tied head has no weight of its own: transformers ties it
    return hf


def _save(hf: nn.Module, directory: Path) -> None:
    import inspect

    kwargs = {"safe_serialization": True} if "safe_serialization" in inspect.signature(hf.save_pretrained).parameters else {}
    with _no_progress_bars():
        hf.save_pretrained(str(directory), **kwargs)


def write_vocabulary(directory: str | Path, vocabulary: Sequence[str]) -> None:
    """``vocab.json`` ({token: id}) and, for a character vocabulary, a transformers tokenizer
    (``tokenizer.json``: one token per character, decoded by concatenation), so that
    ``AutoTokenizer.from_pretrained(directory)`` encodes and decodes text."""
    directory = Path(directory)
    mapping = {token: i for i, token in enumerate(vocabulary)}
    if len(mapping) != len(vocabulary):
        raise PrunelabError("the vocabulary holds a token twice")
    (directory / "vocab.json").write_text(json.dumps(mapping, ensure_ascii=False, indent=0), encoding="utf-8")
    if all(len(t) == 1 for t in vocabulary):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        tokenizer = Tokenizer(models.WordLevel(mapping, unk_token=None))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
        tokenizer.decoder = decoders.Fuse()
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False).save_pretrained(
            str(directory))


def save_pretrained(model_or_snapshot: Any, directory: str | Path, *, vocabulary: Sequence[str] | None = None,
                    provenance: dict | None = None) -> Path:
    """Write a (pruned) model in the Hugging Face layout (``config.json`` + ``model.safetensors``)
    that ``transformers.AutoModelForCausalLM.from_pretrained(directory)`` loads, masks applied
    (pruned weights are zeros).

    ``model_or_snapshot``: an ``hf:`` model (:class:`HFCausalLM`; its source directory's tokenizer
    files are copied along), the built-in ``gpt`` (as ``GPT2LMHeadModel``), or a
    :class:`~prunelab.experiment.snapshot.Snapshot` of either. ``vocabulary``: the task's tokens
    (``Dataset.class_names``), written as ``vocab.json`` (and a character tokenizer); ``provenance``:
    what to record in ``prunelab.json``.
    """
    from .gpt import GPT

    if isinstance(model_or_snapshot, nn.Module):
        model = model_or_snapshot
    elif callable(getattr(model_or_snapshot, "model", None)):  # a Snapshot (the store's layer, above this one)
        model = model_or_snapshot.model()
    else:
        raise PrunelabError(f"save_pretrained takes a model or a Snapshot, not {type(model_or_snapshot).__name__}")
    if isinstance(model, HFCausalLM):
        hf, source = hf_of(model), directory_of(model.source)
    elif isinstance(model, GPT):
        hf, source = gpt_to_hf(model), None
    else:
        raise PrunelabError(f"only hf: models and the built-in 'gpt' export to the Hugging Face layout, not "
                            f"{type(model).__name__}")
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PrunelabError(f"{str(directory)!r} exists and is not an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    _save(hf, directory)
    if source is not None:
        for name in TOKENIZER_FILES:
            if (source / name).is_file() and not (directory / name).exists():
                shutil.copyfile(source / name, directory / name)
    if vocabulary is not None and not (source is not None and (source / "tokenizer_config.json").is_file()):
        write_vocabulary(directory, vocabulary)
    if provenance:
        (directory / "prunelab.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n",
                                                 encoding="utf-8")
    return directory
