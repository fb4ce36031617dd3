"""Hugging Face causal LMs (tasks/hf.py): loading GPT-2, OPT and LLaMA directories, what is pruned,
export, trust and content pins — each checked against transformers' own computation, and the
refusals as an attacker would probe them."""

from __future__ import annotations

import json
import math

import pytest

transformers = pytest.importorskip("transformers")

import torch
from torch import nn

from prunelab import registry
from prunelab.errors import PrunelabError
from prunelab.pruning.masks import apply_masks
from prunelab.pruning.targets import select
from prunelab.tasks import hf
from prunelab.tasks.datasets import Split
from prunelab.tasks.evaluation import evaluate_language
from prunelab.tasks.models import build_model
from prunelab.tasks.text import char_dataset

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 24
VOCAB = tuple(sorted(set(TEXT)))
V = len(VOCAB)
BLOCK = 16


def toy_text_task():
    """A character task of this vocabulary (a user dataset by import path: tests.test_hf:toy_text_task)."""
    return char_dataset("toy", TEXT, BLOCK)


def _config(family: str):
    common = dict(vocab_size=V, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if family == "gpt2":
        return transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, **common)
    if family == "opt":
        return transformers.OPTConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, ffn_dim=64,
                                      max_position_embeddings=64, word_embed_proj_dim=32, **common)
    return transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=32,
                                    intermediate_size=64, max_position_embeddings=64, **common)


# The projections of each family: what the pruning papers prune, and all that prunelab selects.
PROJECTIONS = {
    "gpt2": ("transformer.h.{i}.attn.c_attn", "transformer.h.{i}.attn.c_proj", "transformer.h.{i}.mlp.c_fc",
             "transformer.h.{i}.mlp.c_proj"),
    "opt": ("model.decoder.layers.{i}.self_attn.k_proj", "model.decoder.layers.{i}.self_attn.v_proj",
            "model.decoder.layers.{i}.self_attn.q_proj", "model.decoder.layers.{i}.self_attn.out_proj",
            "model.decoder.layers.{i}.fc1", "model.decoder.layers.{i}.fc2"),
    "llama": ("model.layers.{i}.self_attn.q_proj", "model.layers.{i}.self_attn.k_proj",
              "model.layers.{i}.self_attn.v_proj", "model.layers.{i}.self_attn.o_proj", "model.layers.{i}.mlp.gate_proj",
              "model.layers.{i}.mlp.up_proj", "model.layers.{i}.mlp.down_proj"),
}


def _save(model: nn.Module, directory) -> None:
    model.save_pretrained(str(directory))  # safetensors: transformers 5 writes nothing else


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny random model of each family, saved as transformers saves it, and the model itself."""
    out = {}
    for family in PROJECTIONS:
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(_config(family)).eval()
        directory = tmp_path_factory.mktemp(family)
        _save(model, directory)
        out[family] = (directory, model)
    return out


@pytest.fixture(autouse=True)
def own_trust(monkeypatch):
    """What a test trusts (by naming an hf: model) ends with it."""
    monkeypatch.setattr(registry, "_TRUSTED", set(registry._TRUSTED))


@pytest.fixture()
def untrusted(monkeypatch):
    """A fresh process's trust: nothing named yet, no PRUNELAB_TRUST."""
    monkeypatch.setattr(registry, "_TRUSTED", set())
    monkeypatch.delenv(registry.TRUST_ENV, raising=False)


def _ids(n: int = 4, t: int = BLOCK + 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (n, t), generator=torch.Generator().manual_seed(seed))


def _random_masks(model: nn.Module, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {t.name: torch.rand(t.shape, generator=g) > 0.5 for t in select(model)}


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama"])
def test_a_directory_loads_prunes_its_projections_and_gives_transformers_perplexity(family, checkpoints):
    directory, reference = checkpoints[family]
    model = build_model("hf:" + str(directory), (BLOCK,), V)
    assert model.takes_tokens and model.training  # built like every prunelab model
    # exactly the attention and MLP projections: no embedding, norm or head
    expected = [f"hf.{p.format(i=i)}" for i in range(2) for p in PROJECTIONS[family]]
    assert [t.module_name for t in select(model)] == expected
    assert all(type(t.module) is nn.Linear for t in select(model))
    keys = model.state_dict().keys()
    assert ("hf.lm_head.weight" in keys) == (family == "llama")  # LLaMA's head is untied; tied heads hold no copy
    if family == "gpt2":  # Conv1D became Linear: weight transposed, same function
        assert torch.equal(model.hf.transformer.h[0].attn.c_attn.weight, reference.transformer.h[0].attn.c_attn.weight.t())
    ids = _ids()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), reference(ids).logits)
        ours = evaluate_language(model, Split(ids[:, :-1], ids[:, 1:]), VOCAB)
        theirs = reference(ids, labels=ids).loss.item()  # transformers shifts the labels itself
    assert ours.loss == pytest.approx(theirs, abs=1e-6)
    assert ours.perplexity == pytest.approx(math.exp(theirs), rel=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama"])
def test_a_pruned_model_exports_to_what_transformers_loads_with_the_same_perplexity(family, checkpoints, tmp_path):
    directory, _ = checkpoints[family]
    model = build_model("hf:" + str(directory), (BLOCK,), V)
    masks = _random_masks(model)
    apply_masks(model, masks)
    out = hf.save_pretrained(model, tmp_path / "pruned")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True).eval()
    for name, keep in masks.items():  # the zeros are where the masks are, in transformers' own layout
        weight = loaded.get_parameter(name.removeprefix("hf."))
        weight = weight.t() if family == "gpt2" else weight
        assert torch.equal(weight == 0, ~keep)
    ids = _ids(seed=2)
    model.eval()
    with torch.no_grad():
        ours = evaluate_language(model, Split(ids[:, :-1], ids[:, 1:]), VOCAB).loss
        theirs = loaded(ids, labels=ids).loss.item()
    assert ours == pytest.approx(theirs, abs=1e-5)
    # and back: the export is an hf: directory of its own
    again = build_model("hf:" + str(out), (BLOCK,), V).eval()
    with torch.no_grad():
        assert torch.allclose(again(ids), model(ids), atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_the_builtin_gpt_exports_as_gpt2_with_the_same_logits_dense_and_pruned(bias, tmp_path):
    model = build_model("gpt", (BLOCK,), V, seed=0, layers=2, heads=2, width=32, bias=bias).eval()
    ids = _ids(t=BLOCK)
    for pruned in (False, True):
        if pruned:
            apply_masks(model, _random_masks(model, seed=3))
        out = hf.save_pretrained(model, tmp_path / f"export-{pruned}", vocabulary=VOCAB)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
        assert type(loaded).__name__ == "GPT2LMHeadModel"
        config = json.loads((out / "config.json").read_text())
        assert (config["n_embd"], config["n_layer"], config["n_head"], config["n_positions"], config["vocab_size"],
                config["activation_function"]) == (32, 2, 2, BLOCK, V, "gelu_new")
        with torch.no_grad():
            assert torch.allclose(loaded(ids).logits, model(ids), atol=1e-5, rtol=0)
    # a stored state (weights and masks apart) exports the same
    from prunelab.experiment.snapshot import ModelSpec, Snapshot

    spec = ModelSpec("gpt", (BLOCK,), V, None, (("bias", bias), ("heads", 2), ("layers", 2), ("width", 32)))
    snapshot = Snapshot.capture(model, spec, "toy")
    assert snapshot.masks
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(hf.save_pretrained(snapshot, tmp_path / "s"))).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids), atol=1e-5, rtol=0)
    # a user can decode: vocab.json, and a tokenizer transformers loads
    assert json.loads((out / "vocab.json").read_text(encoding="utf-8")) == {c: i for i, c in enumerate(VOCAB)}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    line = TEXT[:80]
    assert tokenizer(line)["input_ids"] == [VOCAB.index(c) for c in line]
    assert tokenizer.decode([VOCAB.index(c) for c in line]) == line


def test_an_experiment_pins_the_content_and_stores_what_transformers_computes(tmp_path, checkpoints, monkeypatch):
    """Planned, pruned, evaluated and exported through the store; the stored perplexity is
    transformers' own on the exported model. A changed checkpoint is a new identity, never old results."""
    import typer
    from typer.testing import CliRunner

    from prunelab.experiment import Experiment, open_store
    from prunelab.experiment.recipes import Prune
    from prunelab.hf_cli import export_hf, hf_fingerprint
    from prunelab.pruning.methods import PruningConfig

    directory, _ = checkpoints["gpt2"]
    name = "hf:" + str(directory)
    exp = Experiment(tmp_path / "store")
    with pytest.raises(PrunelabError, match=f'sha256 = "{hf.fingerprint(directory)}"'):
        exp.root(dataset="tests.test_hf:toy_text_task", model=name)  # unpinned: refused while planning
    pin = hf.fingerprint(directory)[:16]
    root = exp.root(dataset="tests.test_hf:toy_text_task", model=name, model_options={"sha256": pin})
    pruned = root.then(Prune(PruningConfig(method="magnitude", target=0.5), evaluate=True))
    assert exp.run().ok
    manifest = open_store(tmp_path / "store").get(pruned.hash)
    stored = manifest["metrics"]["test"]
    from prunelab.experiment.summary import remaining_percent

    assert remaining_percent(manifest) == pytest.approx(50.0)  # of the projections: embeddings aside

    app = typer.Typer()
    app.command("export-hf")(export_hf)
    app.command("hf-fingerprint")(hf_fingerprint)
    result = CliRunner().invoke(app, ["export-hf", str(tmp_path / "store"), pruned.hash[:10], str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["hf-fingerprint", str(directory)]).output.strip() == hf.fingerprint(directory)
    provenance = json.loads((tmp_path / "out" / "prunelab.json").read_text())
    assert provenance["state"] == pruned.hash and provenance["model_options"] == {"sha256": pin}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    test = toy_text_task().test
    with torch.no_grad():
        full = torch.cat([test.x, test.y[:, -1:]], dim=1)  # each block and its next character
        theirs = loaded(full, labels=full).loss.item()
    assert stored["loss"] == pytest.approx(theirs, abs=1e-5)
    assert stored["perplexity"] == pytest.approx(math.exp(theirs), rel=1e-5)
    # in a process that did not name the model (a store handed over), the export refuses to read it
    monkeypatch.setattr(registry, "_TRUSTED", set())
    refused = CliRunner().invoke(app, ["export-hf", str(tmp_path / "store"), pruned.hash, str(tmp_path / "again")])
    assert isinstance(refused.exception, PrunelabError) and "--trust hf" in str(refused.exception)
    assert not (tmp_path / "again").exists()
    monkeypatch.setattr(registry, "_TRUSTED", {"hf"})  # prunelab --trust hf export-hf ...

    # the checkpoint changes: the old pin fails loudly; a new pin is a new state
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in directory.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    config = json.loads((changed / "config.json").read_text())
    config["layer_norm_epsilon"] = 1e-3
    (changed / "config.json").write_text(json.dumps(config))
    other = Experiment(tmp_path / "store")
    with pytest.raises(PrunelabError, match="content changed"):
        other.root(dataset="tests.test_hf:toy_text_task", model="hf:" + str(changed), model_options={"sha256": pin})
    new_pin = hf.fingerprint(changed)
    assert new_pin != hf.fingerprint(directory)
    moved = other.root(dataset="tests.test_hf:toy_text_task", model="hf:" + str(changed), model_options={"sha256": new_pin})
    assert moved.hash != root.hash


def test_a_name_read_from_a_store_is_refused_before_anything_is_read(untrusted, checkpoints, monkeypatch, tmp_path):
    from prunelab.experiment.snapshot import ModelSpec

    directory, _ = checkpoints["opt"]
    name = "hf:" + str(directory)
    loads, hashes = [], []
    real_load = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real_load(*a, **k))
    real_fingerprint = hf.fingerprint
    monkeypatch.setattr(hf, "fingerprint", lambda d: hashes.append(d) or real_fingerprint(d))
    spec = ModelSpec(name, (BLOCK,), V, None, (("sha256", real_fingerprint(directory)),))
    hashes.clear()
    with pytest.raises(PrunelabError, match=r"refusing to load the model directory.*--trust hf"):
        spec.build()  # what every state read from a store does (trust_import=False)
    assert loads == [] and hashes == []  # neither the weights nor the content were read
    assert "hf" not in registry.trusted_modules()
    # the user says so: prunelab --trust hf / PRUNELAB_TRUST=hf
    monkeypatch.setenv(registry.TRUST_ENV, "hf")
    assert isinstance(spec.build(), hf.HFCausalLM) and len(loads) == 1
    monkeypatch.delenv(registry.TRUST_ENV)
    # naming it yourself trusts it (build_model's default), as for a package.module:factory
    build_model(name, (BLOCK,), V)
    assert "hf" in registry.trusted_modules()


def test_what_an_attacker_could_put_in_a_name_or_a_directory_is_refused(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_TRUSTED", {"hf"})  # even when trusted
    loads = []
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    # a hub id is not a directory: never the network, never the hub's cache
    with pytest.raises(PrunelabError, match="is not a directory"):
        build_model("hf:facebook/opt-125m", (BLOCK,), V)
    with pytest.raises(PrunelabError, match="give a directory"):
        build_model("hf:", (BLOCK,), V)
    # pickled weights only
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(PrunelabError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors only") as info:
        build_model("hf:" + str(pickled), (BLOCK,), V)
    assert "\n" not in str(info.value)
    # remote code, quantized weights
    directory, _ = checkpoints["gpt2"]
    for key, value, message in (("auto_map", {"AutoModelForCausalLM": "evil.Model"}, "remote code"),
                                ("quantization_config", {"quant_method": "bitsandbytes"}, "quantized")):
        crafted = tmp_path / key
        crafted.mkdir()
        (crafted / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
        config = json.loads((directory / "config.json").read_text())
        (crafted / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(PrunelabError, match=message):
            build_model("hf:" + str(crafted), (BLOCK,), V)
    assert loads == []
    # a pin that is not a digest, an option the model does not have
    with pytest.raises(PrunelabError, match="hexadecimal"):
        build_model("hf:" + str(directory), (BLOCK,), V, sha256="../../etc")
    with pytest.raises(PrunelabError, match="no option 'trust_remote_code'"):
        build_model("hf:" + str(directory), (BLOCK,), V, trust_remote_code=True)


def test_a_checkpoint_missing_tensors_or_not_fitting_the_task_is_refused(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    directory, _ = checkpoints["opt"]
    with pytest.raises(PrunelabError, match=f"vocabulary of {V} tokens, the task 65"):
        build_model("hf:" + str(directory), (BLOCK,), 65)
    with pytest.raises(PrunelabError, match="longer than its 64 positions"):
        build_model("hf:" + str(directory), (65,), V)
    with pytest.raises(PrunelabError, match="init 'kaiming_normal' does not apply"):
        build_model("hf:" + str(directory), (BLOCK,), V, init="kaiming_normal")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((directory / "config.json").read_bytes())
    weights = load_file(directory / "model.safetensors")
    del weights["model.decoder.layers.0.fc1.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PrunelabError, match="lacks or misshapes 1 tensors.*fc1.weight"):
        build_model("hf:" + str(broken), (BLOCK,), V)
