"""Language models: the character task, the built-in GPT, perplexity, and "better" for a
lower-is-better metric — each against an independent computation or a planted answer."""

from __future__ import annotations

import hashlib
import lzma
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from prunelab.errors import PrunelabError
from prunelab.headline import headline, metric_info
from prunelab.tasks import TrainConfig, build_model, evaluate, load_dataset, train
from prunelab.tasks.datasets import Split
from prunelab.tasks.download import DataSource
from prunelab.tasks.evaluation import evaluate_language, task_loss
from prunelab.tasks.text import char_dataset

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXT = MIRROR / "tinyshakespeare" / "input.txt.xz"
needs_text = pytest.mark.skipif(not TEXT.is_file(), reason="../shared/data/tinyshakespeare is not here")


@needs_text
def test_tinyshakespeare_is_the_published_text_split_as_nanogpt_does(tmp_path):
    raw = lzma.decompress(TEXT.read_bytes())
    assert hashlib.md5(raw).hexdigest() == "6fb458f1232090904fb40fe944165e91"
    text = raw.decode()
    data = load_dataset("tinyshakespeare[block=32]", source=DataSource(data_dir=tmp_path, mirror=MIRROR))
    assert data.task == "language" and data.input_shape == (32,)
    assert data.class_names == tuple(sorted(set(text))) and len(data.class_names) == 65  # nanoGPT's vocabulary
    first = int(len(text) * 0.9)
    assert len(data.train) == (first - 1) // 32
    decode = "".join
    # block i of train is text[32 i: 32 i + 32]; its targets are the next characters
    assert decode(data.class_names[i] for i in data.train.x[3].tolist()) == text[96:128]
    assert decode(data.class_names[i] for i in data.train.y[3].tolist()) == text[97:129]
    # validation and test come after the training text, in that order, and never overlap it
    second = int(len(text) * 0.95)
    assert decode(data.class_names[i] for i in data.validation.x[0].tolist()) == text[first:first + 32]
    assert decode(data.class_names[i] for i in data.test.x[0].tolist()) == text[second:second + 32]


def test_a_bad_option_of_the_dataset_is_named():
    with pytest.raises(PrunelabError, match=r"unknown option 'blok'.*block="):
        load_dataset("tinyshakespeare[blok=32]")
    with pytest.raises(PrunelabError, match="option block needs a number"):
        load_dataset("tinyshakespeare[block=big]")


def _tiny_task(block: int = 16) -> "object":
    rng = np.random.default_rng(0)
    # a text with structure to learn: "abcd" repeated with a little noise
    text = "".join("abcd"[i % 4] if rng.random() > 0.05 else "xyz"[rng.integers(3)] for i in range(20_000))
    return char_dataset("toy", text, block)


def test_gpt_is_deterministic_and_prunes_only_attention_and_mlp():
    data = _tiny_task()
    a = build_model("gpt", data.input_shape, data.num_classes, seed=3, layers=2, heads=2, width=16)
    b = build_model("gpt", data.input_shape, data.num_classes, seed=3, layers=2, heads=2, width=16)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    from prunelab.pruning.targets import select

    names = [t.module_name for t in select(a)]
    assert names == [f"blocks.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                     "mlp.c_proj")]
    # GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers)
    big = build_model("gpt", (16,), 65, seed=0, layers=2, heads=2, width=256)
    assert big.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert big.blocks[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 2, rel=0.05)
    # the head is the embedding: no separate tensor to store or prune
    assert "lm_head.weight" not in a.state_dict()


def test_causal_the_logits_at_t_do_not_see_later_tokens():
    model = build_model("gpt", (16,), 20, seed=0, layers=2, heads=2, width=16).eval()
    ids = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 20
    with torch.no_grad():
        assert torch.equal(model(ids)[:, :10], model(changed)[:, :10])
        assert not torch.equal(model(ids)[:, 10:], model(changed)[:, 10:])


def test_perplexity_against_a_brute_force_and_a_planted_uniform_model():
    data = _tiny_task()
    model = build_model("gpt", data.input_shape, data.num_classes, seed=0, layers=1, heads=1, width=8)
    ev = evaluate(model, data.test, data.class_names)
    with torch.no_grad():
        logits = model(data.test.x)
    brute = F.cross_entropy(logits.reshape(-1, data.num_classes), data.test.y.reshape(-1)).item()
    assert ev.loss == pytest.approx(brute, rel=1e-6)
    assert ev.perplexity == pytest.approx(math.exp(brute), rel=1e-6)
    pred = logits.argmax(-1)
    assert ev.accuracy == pytest.approx((pred == data.test.y).float().mean().item())
    for c in range(data.num_classes):  # per character: recall and its own mean loss
        at = data.test.y == c
        if at.any():
            assert ev.recall[c] == pytest.approx((pred[at] == c).float().mean().item())
            assert ev.class_loss[c] == pytest.approx(F.cross_entropy(logits[at], data.test.y[at]).item(), rel=1e-5)

    class Uniform(torch.nn.Module):  # knows nothing: perplexity is the vocabulary's size
        def forward(self, ids):
            return torch.zeros(*ids.shape, 7)

    split = Split(torch.randint(0, 7, (5, 9)), torch.randint(0, 7, (5, 9)))
    uniform = evaluate_language(Uniform(), split, tuple("abcdefg"))
    assert uniform.perplexity == pytest.approx(7.0) and uniform.bits_per_token == pytest.approx(math.log2(7))
    stored = uniform.to_dict()
    assert headline(stored) == ("perplexity", pytest.approx(7.0))


def test_training_learns_the_planted_pattern_and_is_bitwise_reproducible():
    data = _tiny_task()
    config = TrainConfig(optimizer="adamw", lr=1e-2, beta2=0.99, weight_decay=0.1, batch_size=16, iterations=120,
                         schedule="cosine", warmup_iterations=10, lr_floor=0.1, grad_clip=1.0)

    def run(stop=None, start_from=None):
        model = build_model("gpt", data.input_shape, data.num_classes, seed=1, layers=1, heads=2, width=16)
        if start_from is not None:
            model.load_state_dict(start_from[0])
            return model, train(model, data, config, seed=5, start=60, optimizer_state=start_from[1], progress=False)
        return model, train(model, data, config, seed=5, stop=stop, progress=False)

    model, _ = run()
    # "abcd" repeated with 5 % noise: the entropy is far below log(7) ≈ 1.95 nats
    ev = evaluate(model, data.test, data.class_names)
    assert ev.loss < 0.6 and ev.perplexity < 1.9
    half, result = run(stop=60)
    resumed, _ = run(start_from=(half.state_dict(), result.optimizer_state))
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), resumed.state_dict().values()))


def test_adamw_decays_matrices_only_and_clipping_bounds_the_step():
    model = build_model("gpt", (8,), 11, seed=0, layers=1, heads=1, width=8, bias=True)
    from prunelab.tasks.training import make_optimizer, trainable_parameters

    opt = make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.1, iterations=1), trainable_parameters(model))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    with pytest.raises(ValueError, match="vectorize"):
        TrainConfig(optimizer="adamw", iterations=1, vectorize=4)


def test_task_loss_is_the_mean_over_every_position():
    out = torch.randn(3, 5, 7)
    target = torch.randint(0, 7, (3, 5))
    manual = -torch.log_softmax(out, -1).gather(-1, target[..., None]).mean()
    assert task_loss(out, target).item() == pytest.approx(manual.item(), rel=1e-6)


def test_a_lower_is_better_metric_flips_what_a_claim_means():
    """Planted: A's perplexity is 1.0 lower than B's on every seed (A is better)."""
    from prunelab.analysis.effects import evaluate_hypotheses

    rows = []
    for seed in range(6):
        noise = 0.1 * math.sin(seed)
        rows += [{"config": None, "branch": "a", "kind": "imp", "round": 1, "seed": seed, "remaining": 50.0,
                  "value": 10.0 + noise},
                 {"config": None, "branch": "b", "kind": "imp", "round": 1, "seed": seed, "remaining": 50.0,
                  "value": 11.0 + noise + 0.05 * math.cos(seed)}]
    frame = pd.DataFrame(rows)
    claims = [{"claim": "a > b"}, {"claim": "b > a"}]
    better, worse = evaluate_hypotheses(frame, claims, metric="perplexity")
    assert better.supported and better.mean == pytest.approx(-1.0, abs=0.05)  # A − B in perplexity units
    assert not worse.supported
    as_accuracy = evaluate_hypotheses(frame, claims, metric="accuracy")  # same numbers read as accuracy
    assert not as_accuracy[0].supported and as_accuracy[1].supported
    assert metric_info("test.perplexity").better(4.0, 5.0) and metric_info("test.accuracy").better(0.9, 0.8)


def test_sparsity_of_a_language_model_counts_its_linear_layers_not_embeddings():
    from prunelab.experiment.summary import remaining_percent

    manifest = {"weights": {"wte.weight": {"shape": [65, 16]}, "wpe.weight": {"shape": [16, 16]},
                            "blocks.0.mlp.c_fc.weight": {"shape": [64, 16]},
                            "blocks.0.mlp.c_proj.weight": {"shape": [16, 64]}},
                "masks": {"blocks.0.mlp.c_fc.weight": {"shape": [64, 16], "kept": 512},
                          "blocks.0.mlp.c_proj.weight": {"shape": [16, 64], "kept": 512}}}
    assert remaining_percent(manifest) == pytest.approx(50.0)


def test_a_language_model_refuses_image_inputs_and_a_short_context():
    with pytest.raises(PrunelabError, match="token ids"):
        build_model("gpt", (1, 8, 8), 10)
    with pytest.raises(PrunelabError, match="context 8 is shorter"):
        build_model("gpt", (16,), 10, context=8)


@needs_text
def test_a_language_study_prunes_to_patterns_and_tests_claims_on_perplexity(tmp_path, monkeypatch):
    """The example's design at toy size: one-shot magnitude / Wanda / SparseGPT, a 2:4 pattern, a random
    control and fine-tuning, through build_study; every pruned state is checked against its definition."""
    from prunelab.spec import load_spec
    from prunelab.study import build_study, hypothesis_results, summarize

    monkeypatch.setenv("PRUNELAB_DATA_MIRROR", str(MIRROR))
    monkeypatch.setenv("PRUNELAB_DATA", str(tmp_path / "cache"))
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f"""
[study]
name = "toy_llm"
store = "{tmp_path / 'store'}"
seeds = [0, 1]
[task]
dataset = "tinyshakespeare[block=16]"
model = "gpt"
model_options = {{ layers = 1, heads = 2, width = 16 }}
[training]
optimizer = "adamw"
lr = 1e-2
batch_size = 16
iterations = 60
grad_clip = 1.0
[branches.magnitude]
technique = "l1_unstructured"
target = 0.5
reset = "none"
[branches.wanda]
technique = "wanda"
target = 0.5
reset = "none"
calibration = {{ samples = 32 }}
[branches.sparsegpt_2of4]
technique = "sparsegpt"
pattern = "2:4"
reset = "none"
calibration = {{ samples = 32 }}
[branches.random]
control = "random_pruning"
of = "wanda"
[branches.tuned]
technique = "wanda"
target = 0.5
reset = "finetune"
finetune_iterations = 20
[[hypotheses]]
claim = "wanda > random"
""")
    spec = load_spec(spec_path)
    tree = build_study(spec)
    assert tree.experiment.run().ok
    rows = summarize(tree)
    assert {r.metric for r in rows} == {"perplexity"}
    by = {(r.branch, r.round): r for r in rows}
    for name in ("magnitude", "wanda", "sparsegpt_2of4", "random", "tuned"):
        assert by[(name, 1)].remaining == pytest.approx(50.0, abs=0.01)  # of the Linear layers: embeddings aside
        assert all(v >= 1.0 for v in by[(name, 1)].values)
    store = tree.experiment.store
    for p in tree.points:
        if p.branch == "sparsegpt_2of4":
            masks = store.load(p.state.hash).masks
            for name, mask in masks.items():  # at most 2 of every 4 consecutive input weights kept
                assert int(mask.reshape(mask.shape[0], -1, 4).sum(-1).max()) <= 2, name
        if p.branch == "tuned":
            assert store.manifest(p.state.hash)["iteration"] == 20
    (result,) = hypothesis_results(spec, rows)
    assert result.claim == "wanda > random" and result.n == 2
    # the report reads it as a language study: perplexity, lower is better, and who pays by character
    from prunelab.report import build_report

    page = build_report(store.root, tmp_path / "report.html").read_text()
    assert "test perplexity (lower is better)" in page
    section = page[page.index("<h2>Who pays for sparsity: the characters whose loss rises most"):]
    section = section.split("</section>")[0]
    for branch in ("magnitude", "wanda", "sparsegpt_2of4", "tuned"):
        assert f">{branch}</td>" in section
    # elsewhere, without the text: the report reads the store alone and says what it left out
    from prunelab.caches import CACHES

    monkeypatch.delenv("PRUNELAB_DATA_MIRROR")
    monkeypatch.setenv("PRUNELAB_DATA", str(tmp_path / "elsewhere"))
    CACHES.datasets.clear()
    page = build_report(store.root, tmp_path / "report2.html").read_text()
    assert "dataset is not in the cache or mirror here" in page and "test perplexity (lower is better)" in page


def test_token_costs_find_the_planted_character():
    """Planted: pruning raises the loss of 'e' by 0.5 nats and of nothing else; 'e' carries the whole rise."""
    from prunelab.analysis.text import token_costs

    names = list("abe")
    support = [100, 50, 30]

    def evaluation(losses):
        return {"task": "language", "class_names": names,
                "per_class": [{"class": c, "support": s, "loss": lo} for c, s, lo in zip(names, support, losses)]}

    rng = np.random.default_rng(0)
    dense, pruned = [], []
    for wobble in (0.01, -0.01, 0.02, -0.02):  # seeds; the null classes' changes average exactly 0
        base = rng.uniform(1.0, 2.0, 3)
        noise = np.array([wobble, -wobble / 2, 0.0])
        dense.append(evaluation(base.tolist()))
        pruned.append(evaluation((base + noise + [0, 0, 0.5]).tolist()))
    table = token_costs(dense, pruned)
    top = table.iloc[0]
    assert top["class"] == "e" and top["delta"] == pytest.approx(0.5) and top["share"] == pytest.approx(1.0, abs=0.05)
    assert top["ci_low"] == pytest.approx(0.5) and top["ci_high"] == pytest.approx(0.5)  # no noise on 'e'
    others = table[table["class"] != "e"]
    assert (others["ci_low"] < 0).all() and (others["ci_high"] > 0).all()  # the null classes: intervals hold 0
    with pytest.raises(PrunelabError, match="pairs"):
        token_costs(dense, pruned[:2])


def test_a_table_holding_two_studies_is_refused_by_name():
    from prunelab.analysis.effects import evaluate_hypotheses

    rows = [{"config": None, "branch": b, "kind": "imp", "round": 1, "seed": s, "remaining": 50.0, "value": 1.0 + s}
            for b in ("a", "b") for s in (0, 1, 1)]
    with pytest.raises(PrunelabError, match="seed 1 twice"):
        evaluate_hypotheses(pd.DataFrame(rows), [{"claim": "a > b"}])


def test_a_model_and_a_task_that_do_not_fit_are_named_before_training():
    data = _tiny_task()
    mlp = build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)
    with pytest.raises(PrunelabError, match="language task.*does not take token ids"):
        train(mlp, data, TrainConfig(iterations=1, batch_size=4), seed=0, progress=False)
    from prunelab.tasks.datasets import Dataset

    features = Dataset("features", *(Split(torch.randn(8, 16), torch.randint(0, 3, (8,))) for _ in range(3)),
                       class_names=("a", "b", "c"))
    model = build_model("gpt", (16,), 3, seed=0, layers=1, heads=1, width=8)
    with pytest.raises(PrunelabError, match="takes token ids, but 'features' is a classification task"):
        train(model, features, TrainConfig(iterations=1, batch_size=4), seed=0, progress=False)
