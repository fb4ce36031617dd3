"""A decoder-only transformer (GPT-2's design, nanoGPT's layout) for character-level language tasks.

Pre-norm blocks (LayerNorm → causal self-attention → residual, LayerNorm → MLP → residual),
learned position embeddings, GELU, and an output head tied to the token embedding. The head
multiplies by the embedding matrix directly instead of holding an ``nn.Linear``, so the tensors
pruning selects by default (Linear layers) are exactly those the LLM-pruning papers prune: the
attention projections (``blocks.N.attn.c_attn`` / ``c_proj``) and the MLP (``blocks.N.mlp.c_fc`` /
``c_proj``) — never the embeddings, the norms or the head. The names follow GPT-2's, so
:mod:`prunelab.tasks.hf` maps a model onto a Hugging Face ``GPT2LMHeadModel`` one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PrunelabError
from .models import register


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width, bias=bias)
        self.c_proj = nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, width: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width, bias=bias)
        self.c_proj = nn.Linear(4 * width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's GELU


class Block(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, bias=bias)
        self.attn = CausalSelfAttention(width, heads, bias)
        self.ln_2 = nn.LayerNorm(width, bias=bias)
        self.mlp = MLP(width, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids ``(B, T)`` → next-token logits ``(B, T, vocabulary)``, ``T ≤ context``."""

    def __init__(self, vocabulary: int, context: int, layers: int, heads: int, width: int, bias: bool = True):
        super().__init__()
        self.context = context
        self.wte = nn.Embedding(vocabulary, width)
        self.wpe = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, bias) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"a sequence of {t} tokens is longer than the model's context of {self.context}")
        x = self.wte(ids) + self.wpe(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # the head tied to the token embedding


def init_gpt2(model: nn.Module) -> None:
    """GPT-2's initialisation with the current torch RNG: Linear and Embedding weights N(0, 0.02),
    biases zero, norms one/zero, and each residual projection (``*.c_proj``) scaled by
    1/√(2·layers) so the residual stream's variance does not grow with depth."""
    layers = sum(1 for name, _ in model.named_modules() if name.endswith("attn.c_proj")) or 1
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02 / math.sqrt(2 * layers) if name.endswith("c_proj") else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()


@register("gpt", "decoder-only transformer (GPT-2 design, pre-norm, tied head) for language tasks; options "
          "layers, heads, width, context, bias", "gpt2", tokens=True)
def gpt(input_shape, num_classes, layers: int = 4, heads: int = 4, width: int = 128, context: int | None = None,
        bias: bool = False) -> nn.Module:
    """nanoGPT's shakespeare_char CPU configuration by default (4 layers, 4 heads, width 128, no biases;
    context = the task's block length)."""
    if len(input_shape) != 1:
        raise PrunelabError(f"model 'gpt' takes blocks of token ids (T,), got inputs of shape {tuple(input_shape)}")
    context = int(context or input_shape[0])
    if context < input_shape[0]:
        raise PrunelabError(f"model 'gpt': context {context} is shorter than the task's blocks of {input_shape[0]}")
    if layers < 1 or heads < 1 or width < 1 or width % heads:
        raise PrunelabError(f"model 'gpt': width {width} must be a positive multiple of heads {heads}, layers ≥ 1")
    return GPT(num_classes, context, layers, heads, width, bias)
