"""Models by name, each built for a dataset's input shape and class count.

Convolutional models accept 1-D ``(C, L)`` inputs (Conv1d) as well as 2-D
``(C, H, W)`` inputs (Conv2d), and skip a pooling/striding step once the
spatial size has reached 1, so every model runs on every built-in dataset
(8x8 digits, 40-step MNIST-1D, 28x28 MNIST, 32x32 CIFAR).

Initialisation is seeded and explicit: ``glorot_normal`` (Frankle & Carbin's
LeNet and Conv-2/4/6), ``kaiming_normal`` (VGG, ResNet, DenseNet) or torch's
``default``; weights are drawn by the scheme, biases are zero, batch-norm
scales one and shifts zero.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import PrunelabError
from ..registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    factory: Callable[..., nn.Module]
    default_init: str
    input_shape: tuple[int, ...] | None = None  # a model made for one input layout (None: adapts to any)
    tokens: bool = False  # takes integer token ids (B, T) and gives logits (B, T, classes): a language model


MODELS: Registry[ModelInfo] = Registry("model", group="prunelab.models")
INIT_SCHEMES = ("default", "glorot_normal", "kaiming_normal", "gpt2")


def register(name: str, summary: str, default_init: str, input_shape: tuple[int, ...] | None = None,
             tokens: bool = False):
    def decorator(factory):
        MODELS.register(name, summary)(ModelInfo(factory, default_init, input_shape, tokens))
        return factory

    return decorator


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int = 0,
    init: str | None = None,
    trust_import: bool = True,
    **options,
) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` (without the batch dim).

    The same (name, shape, classes, seed, init, options) always gives bitwise
    identical weights; the global torch RNG is left untouched. A
    ``package.module:factory`` name given here is trusted (you named it);
    prunelab passes ``trust_import=False`` for names read from a store.
    """
    if trust_import:
        from ..registry import trust_names

        trust_names(name)
    if name.startswith("hf:"):  # your own causal LM from a local Hugging Face directory (trusted as module "hf")
        from .hf import build_hf_model

        return build_hf_model(name, input_shape, num_classes, init=init, pin_required=not trust_import, **options)
    entry = MODELS.get(name)
    if not isinstance(entry, ModelInfo):  # a user factory given by import path (``factory.tokens = True``:
        entry = ModelInfo(entry, "default", tokens=bool(getattr(entry, "tokens", False)))  # a language model)
    input_shape = tuple(int(d) for d in input_shape)
    if num_classes < 1:  # 1: a regression target's single output
        raise PrunelabError(f"model {name!r}: needs at least one output (class or regression target), got {num_classes}")
    scheme = init or entry.default_init
    if scheme not in INIT_SCHEMES:
        raise PrunelabError(f"unknown init {scheme!r} (known: {', '.join(INIT_SCHEMES)})")
    try:
        accepted = inspect.signature(entry.factory).parameters
    except (TypeError, ValueError):
        raise PrunelabError(f"model {name!r} is {type(entry.factory).__name__}, not a factory function") from None
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if not takes_any and not {"input_shape", "num_classes"} <= set(accepted):
        raise PrunelabError(f"model {name!r}: its factory must accept input_shape and num_classes (and its options "
                            f"as keywords): def {name.rpartition(':')[2] or 'build'}(input_shape, num_classes, **options) "
                            f"-> torch.nn.Module; it takes ({', '.join(accepted)})")
    unknown = sorted(set(options) - set(accepted)) if not takes_any else []
    if unknown:
        raise PrunelabError(f"model {name!r} has no option {unknown[0]!r} (options: {', '.join(p for p in accepted if p not in ('input_shape', 'num_classes')) or 'none'})")
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only (what fork_rng restores): torch.manual_seed would also seed every
        # CUDA device, lazily and for good, and record a stack trace each time CUDA is not initialised
        torch.default_generator.manual_seed(seed)
        model = entry.factory(input_shape=input_shape, num_classes=num_classes, **options)
        if not isinstance(model, nn.Module):
            raise PrunelabError(f"model {name!r}: its factory returned {type(model).__name__}, not a torch.nn.Module")
        initialize(model, scheme)
    model.takes_tokens = entry.tokens  # what example_input reads (not a parameter or buffer: never stored)
    probe = torch.zeros(2, *input_shape, dtype=torch.long if entry.tokens else torch.float32)
    expected = (*input_shape, num_classes) if entry.tokens else (num_classes,)
    try:
        with torch.no_grad():
            model.eval()
            out = model(probe)
            model.train()
    except (RuntimeError, ValueError, IndexError) as exc:
        raise PrunelabError(f"model {name!r} cannot take {'token ids' if entry.tokens else 'inputs'} of shape "
                            f"{input_shape}: {exc}") from exc
    if tuple(out.shape) != (2, *expected):
        raise PrunelabError(f"model {name!r} gives outputs of shape {tuple(out.shape[1:])}, expected {expected}")
    return model


def example_input(model: nn.Module, input_shape: Sequence[int], batch: int = 1) -> torch.Tensor:
    """Zeros the model can take: token ids for a language model (built by :func:`build_model`), floats
    otherwise; on the model's device."""
    first = next(iter(model.parameters()), None)
    dtype = torch.long if getattr(model, "takes_tokens", False) else torch.float32
    return torch.zeros(batch, *input_shape, dtype=dtype, device=first.device if first is not None else "cpu")


def takes_tokens(name: str) -> bool:
    """Whether registered model ``name`` is a language model (token ids in, per-position logits out)."""
    if name.startswith("hf:"):
        return True
    entry = MODELS.get(name) if name in MODELS else None
    return bool(getattr(entry, "tokens", False))


def initialize(model: nn.Module, scheme: str) -> None:
    """(Re-)initialise ``model`` in place using the current torch RNG."""
    if scheme == "gpt2":
        from .gpt import init_gpt2

        init_gpt2(model)
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if scheme == "glorot_normal":
                nn.init.xavier_normal_(module.weight)
            elif scheme == "kaiming_normal":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                module.reset_parameters()
                continue
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.reset_parameters()


# --------------------------------------------------------------------------
# Shape-adaptive building blocks
# --------------------------------------------------------------------------


class Geometry:
    """Tracks channels and spatial size while a network is assembled."""

    def __init__(self, model: str, input_shape: tuple[int, ...]):
        if len(input_shape) not in (2, 3):
            raise PrunelabError(
                f"model {model!r} is convolutional and needs inputs (C, L) or (C, H, W); got shape {input_shape}"
            )
        self.channels = input_shape[0]
        self.spatial = list(input_shape[1:])
        self.dims = len(self.spatial)

    def conv(self, out_channels: int, kernel: int = 3, stride: int = 1, bias: bool = True) -> nn.Module:
        stride = stride if min(self.spatial) >= 2 else 1
        cls = nn.Conv2d if self.dims == 2 else nn.Conv1d
        layer = cls(self.channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=bias)
        self.channels = out_channels
        self.spatial = [(s + 2 * (kernel // 2) - kernel) // stride + 1 for s in self.spatial]
        return layer

    def pool(self) -> nn.Module:
        if min(self.spatial) < 2:
            return nn.Identity()
        self.spatial = [s // 2 for s in self.spatial]
        return nn.MaxPool2d(2) if self.dims == 2 else nn.MaxPool1d(2)

    def avg_pool(self) -> nn.Module:
        if min(self.spatial) < 2:
            return nn.Identity()
        self.spatial = [s // 2 for s in self.spatial]
        return nn.AvgPool2d(2) if self.dims == 2 else nn.AvgPool1d(2)

    def batch_norm(self) -> nn.Module:
        return nn.BatchNorm2d(self.channels) if self.dims == 2 else nn.BatchNorm1d(self.channels)

    def global_pool(self) -> nn.Module:
        pool = nn.AdaptiveAvgPool2d(1) if self.dims == 2 else nn.AdaptiveAvgPool1d(1)
        self.spatial = [1] * self.dims
        return pool

    @property
    def flat(self) -> int:
        size = self.channels
        for s in self.spatial:
            size *= s
        return size


def _numel(shape: tuple[int, ...]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def mlp_layers(sizes: Sequence[int]) -> list[nn.Module]:
    """Linear layers of these sizes with a ReLU between each pair (not after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return layers


# --------------------------------------------------------------------------
# The zoo
# --------------------------------------------------------------------------


@register("lenet_300_100", "fully connected 300-100 (Frankle & Carbin), any input shape", "glorot_normal")
def lenet_300_100(input_shape, num_classes, hidden: Sequence[int] = (300, 100)) -> nn.Module:
    return nn.Sequential(nn.Flatten(), *mlp_layers([_numel(input_shape), *hidden, num_classes]))


@register("lenet5", "LeNet-5: conv 6-16 (5x5, same padding) + fc 120-84", "glorot_normal")
def lenet5(input_shape, num_classes) -> nn.Module:
    g = Geometry("lenet5", input_shape)
    features = [g.conv(6, 5), nn.ReLU(), g.pool(), g.conv(16, 5), nn.ReLU(), g.pool()]
    return nn.Sequential(*features, nn.Flatten(), *mlp_layers([g.flat, 120, 84, num_classes]))


def _conv_n(name: str, input_shape, num_classes, blocks: int) -> nn.Module:
    g = Geometry(name, input_shape)
    layers: list[nn.Module] = []
    for width in (64, 128, 256)[:blocks]:
        layers += [g.conv(width), nn.ReLU(), g.conv(width), nn.ReLU(), g.pool()]
    return nn.Sequential(*layers, nn.Flatten(), *mlp_layers([g.flat, 256, 256, num_classes]))


@register("conv2", "Conv-2 (Frankle & Carbin): 64-64-pool, fc 256-256", "glorot_normal")
def conv2(input_shape, num_classes) -> nn.Module:
    return _conv_n("conv2", input_shape, num_classes, 1)


@register("conv4", "Conv-4 (Frankle & Carbin): 64x2, 128x2 with pools, fc 256-256", "glorot_normal")
def conv4(input_shape, num_classes) -> nn.Module:
    return _conv_n("conv4", input_shape, num_classes, 2)


@register("conv6", "Conv-6 (Frankle & Carbin): 64x2, 128x2, 256x2 with pools, fc 256-256", "glorot_normal")
def conv6(input_shape, num_classes) -> nn.Module:
    return _conv_n("conv6", input_shape, num_classes, 3)


VGG_CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
}


def _vgg(name: str, input_shape, num_classes, batch_norm: bool) -> nn.Module:
    g = Geometry(name, input_shape)
    layers: list[nn.Module] = []
    for item in VGG_CONFIGS[name]:
        if item == "M":
            layers.append(g.pool())
        else:
            layers.append(g.conv(item, bias=not batch_norm))
            if batch_norm:
                layers.append(g.batch_norm())
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, g.global_pool(), nn.Flatten(), nn.Linear(g.channels, num_classes))


@register("vgg11", "VGG-11 for small images (CIFAR-style head), batch_norm option", "kaiming_normal")
def vgg11(input_shape, num_classes, batch_norm: bool = True) -> nn.Module:
    return _vgg("vgg11", input_shape, num_classes, batch_norm)


@register("vgg16", "VGG-16 for small images (CIFAR-style head), batch_norm option", "kaiming_normal")
def vgg16(input_shape, num_classes, batch_norm: bool = True) -> nn.Module:
    return _vgg("vgg16", input_shape, num_classes, batch_norm)


class BasicBlock(nn.Module):
    def __init__(self, g: Geometry, width: int, stride: int):
        super().__init__()
        in_channels, in_spatial = g.channels, list(g.spatial)
        self.conv1 = g.conv(width, 3, stride, bias=False)
        self.bn1 = g.batch_norm()
        self.conv2 = g.conv(width, 3, 1, bias=False)
        self.bn2 = g.batch_norm()
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != width or in_spatial != g.spatial:
            cls = nn.Conv2d if g.dims == 2 else nn.Conv1d
            real_stride = self.conv1.stride[0]
            self.shortcut = nn.Sequential(
                cls(in_channels, width, 1, stride=real_stride, bias=False),
                nn.BatchNorm2d(width) if g.dims == 2 else nn.BatchNorm1d(width),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register("resnet20", "ResNet-20 for small images (He et al. 2016; 1x1 projection shortcuts)", "kaiming_normal")
def resnet20(input_shape, num_classes, width: int = 16) -> nn.Module:
    g = Geometry("resnet20", input_shape)
    stem = [g.conv(width, 3, bias=False), g.batch_norm(), nn.ReLU()]
    blocks: list[nn.Module] = []
    for stage, w in enumerate((width, 2 * width, 4 * width)):
        for i in range(3):
            blocks.append(BasicBlock(g, w, 2 if (stage > 0 and i == 0) else 1))
    return nn.Sequential(*stem, *blocks, g.global_pool(), nn.Flatten(), nn.Linear(g.channels, num_classes))


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bottleneck) then BN-ReLU-Conv3x3; output concatenated."""

    def __init__(self, g: Geometry, growth: int):
        super().__init__()
        in_channels = g.channels
        self.bn1 = g.batch_norm()
        self.conv1 = g.conv(4 * growth, 1, bias=False)
        self.bn2 = g.batch_norm()
        self.conv2 = g.conv(growth, 3, bias=False)
        self.relu = nn.ReLU()
        g.channels = in_channels + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


@register("densenet", "small DenseNet-BC (3 blocks x 4 layers, growth 12, compression 0.5)", "kaiming_normal")
def densenet(input_shape, num_classes, growth: int = 12, layers_per_block: int = 4) -> nn.Module:
    g = Geometry("densenet", input_shape)
    modules: list[nn.Module] = [g.conv(2 * growth, 3, bias=False)]
    for block in range(3):
        for _ in range(layers_per_block):
            modules.append(DenseLayer(g, growth))
        if block < 2:
            modules += [g.batch_norm(), nn.ReLU(), g.conv(g.channels // 2, 1, bias=False), g.avg_pool()]
    modules += [g.batch_norm(), nn.ReLU(), g.global_pool(), nn.Flatten(), nn.Linear(g.channels, num_classes)]
    return nn.Sequential(*modules)
