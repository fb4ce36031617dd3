import pytest
import torch

from prunelab import PrunelabError, build_model
from prunelab.tasks import MODELS

SHAPES = [(1, 8, 8), (1, 40), (3, 32, 32)]


TOKENS = {e.name for e in MODELS if e.factory.tokens}  # language models: token ids in (test_language.py)
ADAPTIVE = [e.name for e in MODELS if e.factory.input_shape is None and e.name not in TOKENS]
GENERATIVE = {"calogan", "caloflow"}  # one output (the deposited energy), not classifiers: test_gan.py, test_flow.py
FIXED = [e.name for e in MODELS if e.factory.input_shape is not None and e.name not in GENERATIVE]


def _shape(name):
    if name in TOKENS:
        return (16,)
    fixed = MODELS.get(name).input_shape
    return fixed if fixed is not None else (1, 8, 8)


def _input(name, batch):
    if name in TOKENS:
        return torch.randint(0, 10, (batch, *_shape(name)), generator=torch.Generator().manual_seed(0))
    return torch.randn(batch, *_shape(name))


@pytest.mark.parametrize("name", ADAPTIVE)
@pytest.mark.parametrize("shape", SHAPES, ids=["digits", "mnist1d", "cifar"])
def test_every_model_adapts_to_every_input_shape(name, shape):
    model = build_model(name, shape, 10, seed=0)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("name", FIXED)
def test_fixed_input_models_take_their_layout_and_refuse_others(name):
    shape = MODELS.get(name).input_shape
    assert build_model(name, shape, 10, seed=0)(torch.randn(3, *shape)).shape == (3, 10)
    with pytest.raises(PrunelabError):
        build_model(name, (1, 8, 8), 10)


@pytest.mark.parametrize("name", MODELS.names())
def test_same_seed_same_weights_other_seed_other_weights(name):
    classes = 1 if name in GENERATIVE else 10
    a = build_model(name, _shape(name), classes, seed=5).state_dict()
    b = build_model(name, _shape(name), classes, seed=5).state_dict()
    c = build_model(name, _shape(name), classes, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point and a[k].dim() > 1)


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("conv4", (1, 8, 8), 10, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_lenet_300_100_has_frankle_carbin_size():
    # 784*300+300 + 300*100+100 + 100*10+10 = 266,610 ("266K weights")
    model = build_model("lenet_300_100", (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 266_610


def test_glorot_normal_init_has_the_right_scale():
    model = build_model("lenet_300_100", (1, 28, 28), 10, seed=0)
    w = model[1].weight
    expected_std = (2.0 / (784 + 300)) ** 0.5
    assert w.std().item() == pytest.approx(expected_std, rel=0.02)
    assert torch.count_nonzero(model[1].bias) == 0


def test_vgg_batch_norm_option():
    with_bn = build_model("vgg11", (3, 32, 32), 10)
    without = build_model("vgg11", (3, 32, 32), 10, batch_norm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())


def test_resnet20_has_twenty_weighted_layers_on_cifar():
    model = build_model("resnet20", (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="conv4", input_shape=(64,), num_classes=10), "needs inputs (C, L) or (C, H, W)"),
        (dict(name="lenet5", input_shape=(1, 8, 8), num_classes=10, width=3), "has no option 'width'"),
        (dict(name="lenet_300_10", input_shape=(1, 8, 8), num_classes=10), "did you mean 'lenet_300_100'"),
        (dict(name="lenet5", input_shape=(1, 8, 8), num_classes=10, init="xavier"), "unknown init"),
        (dict(name="lenet5", input_shape=(1, 8, 8), num_classes=0), "at least one output"),
    ],
)
def test_bad_model_requests_are_clear_errors(kwargs, message):
    with pytest.raises(PrunelabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(**kwargs)


def tiny_user_model(input_shape, num_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[-1] * input_shape[-2], num_classes))


def test_user_model_by_import_path():
    model = build_model("tests.test_models:tiny_user_model", (1, 8, 8), 10)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("name, shape", [("lenet_300_100", (1, 8, 8)), ("resnet20", (3, 16, 16))])
def test_a_snapshots_model_is_a_fresh_build_with_its_weights_and_masks(name, shape):
    # Snapshot.model copies a module built once per process instead of building (and initialising) anew
    from prunelab.experiment.snapshot import ModelSpec, Snapshot
    from prunelab.pruning.masks import get_masks
    from prunelab.pruning.methods import PruningConfig, prune

    spec = ModelSpec(name, shape, 10)
    trained = spec.build(seed=3)
    prune(trained, PruningConfig(method="magnitude", amount=0.5), input_shape=shape)
    snap = Snapshot.capture(trained, spec, "digits")
    first = snap.model()
    expected = spec.build()
    expected.load_state_dict(snap.weights, strict=False)
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)  # the copy handed out is the caller's: changing it changes no later one
        for b in first.buffers():
            b.add_(1) if b.is_floating_point() else None
    second = snap.model()
    assert second is not first
    got = {k.removesuffix("_orig"): v for k, v in second.state_dict().items() if not k.endswith("_mask")}
    assert got.keys() == expected.state_dict().keys()
    for k, v in expected.state_dict().items():
        assert torch.equal(got[k], v), k
    masks = get_masks(second)
    assert masks.keys() == snap.masks.keys() and all(torch.equal(masks[k], snap.masks[k]) for k in masks)
    x = torch.randn(2, *shape)
    second.eval(), trained.eval()
    assert torch.equal(second(x), trained(x))


@pytest.mark.parametrize("name", MODELS.names())
def test_the_fast_module_copy_is_a_deep_copy(name):
    """Snapshots build modules by copying a template; the copy must be what copy.deepcopy gives."""
    import copy

    from prunelab.experiment.snapshot import _plan

    classes = 1 if name in GENERATIVE else 10
    model = build_model(name, _shape(name), classes, seed=3)
    plan = _plan(model, {})
    assert plan is not None  # every built-in model takes the fast path
    fast, deep = plan.copy({}), copy.deepcopy(model)
    assert repr(fast) == repr(deep)
    for (n, a), (_, b), (_, c) in zip(fast.state_dict().items(), deep.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b) and a.data_ptr() != c.data_ptr(), n  # same values, own memory
    assert [type(m) for m in fast.modules()] == [type(m) for m in deep.modules()]
    assert [p.requires_grad for p in fast.parameters()] == [p.requires_grad for p in deep.parameters()]
    fast.train(False), deep.train(False)
    x = _input(name, 2)
    if name not in GENERATIVE:
        assert torch.equal(fast(x), deep(x))
    with torch.no_grad():
        next(fast.parameters()).add_(1.0)  # the copy's training leaves the template alone
    assert torch.equal(next(model.parameters()), next(deep.parameters()))


@pytest.mark.parametrize("name", MODELS.names())
def test_a_module_copied_with_its_weights_is_what_load_state_dict_gives(name):
    """Snapshot.model copies the template straight into the stored weights; the result must be the
    template's copy after load_state_dict: same values, strides, dtypes, flags and outputs."""
    import copy

    from prunelab.experiment.snapshot import _Loading, _plan

    classes = 1 if name in GENERATIVE else 10
    template = build_model(name, _shape(name), classes, seed=0)
    trained = build_model(name, _shape(name), classes, seed=5)
    weights = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    fast = _plan(template, {}).copy({}, _Loading(weights))
    assert fast is not None  # every built-in model takes the fast path
    slow = copy.deepcopy(template)
    slow.load_state_dict(weights)
    assert fast.state_dict().keys() == slow.state_dict().keys()
    for (n, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items()):
        assert torch.equal(a, b) and a.dtype == b.dtype and a.stride() == b.stride(), n
        assert a.data_ptr() != weights[n].data_ptr(), n  # its own memory: training it leaves the state alone
    assert [(n, p.requires_grad) for n, p in fast.named_parameters()] == [(n, p.requires_grad) for n, p in slow.named_parameters()]
    assert [n for n, _ in fast.named_buffers()] == [n for n, _ in slow.named_buffers()]
    fast.train(False), slow.train(False)
    if name not in GENERATIVE:
        x = _input(name, 2)
        assert torch.equal(fast(x), slow(x))
    for a, b in zip(template.state_dict().values(), build_model(name, _shape(name), classes, seed=0).state_dict().values()):
        assert torch.equal(a, b)  # the template is left as it was


def test_weights_that_do_not_fit_take_load_state_dicts_checks_and_messages():
    from prunelab.experiment.snapshot import ModelSpec, Snapshot, _Loading, _plan

    spec = ModelSpec("lenet_300_100", (1, 40), 10)
    good = {k: v.clone() for k, v in spec.build(seed=1).state_dict().items()}
    assert _plan(spec.build(), {}).copy({}, _Loading(good)) is not None
    extra = dict(good, **{"stray.weight": torch.zeros(2)})
    assert _plan(spec.build(), {}).copy({}, _Loading(extra)) is None
    with pytest.raises(ValueError, match="unexpected.*stray.weight"):
        Snapshot(spec, "mnist1d", extra).model()
    missing = {k: v for k, v in good.items() if not k.endswith("bias")}
    with pytest.raises(ValueError, match="missing"):
        Snapshot(spec, "mnist1d", missing).model()
    name = next(iter(good))
    wrong = dict(good, **{name: torch.zeros(3, 3)})
    with pytest.raises(PrunelabError, match=r"'lenet_300_100'.*size mismatch for .*train it again"):
        Snapshot(spec, "mnist1d", wrong).model()  # a model whose code changed since the state was stored
    doubles = {k: v.double() for k, v in good.items()}  # load_state_dict casts: so does the model
    assert all(p.dtype == torch.float32 for p in Snapshot(spec, "mnist1d", doubles).model().parameters())

    class OwnLoading(torch.nn.Linear):
        def _load_from_state_dict(self, *args, **kwargs):  # may do anything: never bypassed
            return super()._load_from_state_dict(*args, **kwargs)

    module = OwnLoading(3, 2)
    assert _plan(module, {}).copy({}, _Loading({k: v.clone() for k, v in module.state_dict().items()})) is None
    assert _plan(module, {}).copy({}) is not None  # a plain copy is still fine


def test_the_fast_module_copy_keeps_tied_weights_and_defers_hooks_to_deepcopy():
    from prunelab.experiment.snapshot import _Loading, _plan

    shared = torch.nn.Linear(4, 4)
    tied = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    copied = _plan(tied, {}).copy({})
    assert copied[0] is copied[2] and copied[0] is not shared
    weights = {k: torch.full_like(v, 2.0) for k, v in tied.state_dict().items()}
    assert _plan(tied, {}).copy({}, _Loading(weights)) is None  # a module under two names: load_state_dict's way
    hooked = torch.nn.Linear(3, 2)
    hooked.register_forward_hook(lambda *a: None)
    assert _plan(hooked, {}) is None  # a hook may hold anything: _fresh_module takes copy.deepcopy
