"""Small Transformers of the zoo (`zoo.models`), nanoGPT style (pre-LayerNorm blocks of
multi-head self-attention and a 4x GELU MLP, no dropout):

- `transformer`: encoder classifier for signals (C, L): each time step's C features are projected
  to d_model, a learned positional embedding is added, blocks attend without a mask, the final
  LayerNorm's output is averaged over time and a linear layer classifies.
- `causal-transformer`: language model for tokens (L,): token embedding + learned positional
  embedding, causally masked blocks, final LayerNorm, LM head to the vocabulary
  (`spec.num_outputs`); output (N, L, vocab). Head and token embedding are not tied, so every
  parameter is its own tensor.

Positions are `nn.Embedding` tables indexed by position, so `zoo.layer_types` sees them as
embeddings without any naming convention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min, signal_steps
from weightcast.zoo.tasks.base import TaskSpec

__all__ = [
    "SelfAttention",
    "Block",
    "TransformerClassifier",
    "CausalTransformer",
    "transformer",
    "causal_transformer",
]

MLP_RATIO = 4


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, causal: bool):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.heads = heads
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        # (N, L, 3d) -> 3 x (N, heads, L, d / heads)
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(n, length, d))


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, MLP_RATIO * d_model), nn.GELU(), nn.Linear(MLP_RATIO * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerClassifier(nn.Module):
    def __init__(
        self, in_features: int, length: int, num_outputs: int, d_model: int, layers: int, heads: int
    ):
        super().__init__()
        self.input_proj = nn.Linear(in_features, d_model)
        self.pos_embedding = nn.Embedding(length, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, heads, causal=False) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, L) -> (N, L, C) -> (N, L, d_model)
        h = self.input_proj(signal_steps(x))
        h = h + self.pos_embedding(torch.arange(h.shape[1], device=h.device))
        # mean over time: (N, d_model) -> (N, num_outputs)
        return self.head(self.ln_f(self.blocks(h)).mean(1))


class CausalTransformer(nn.Module):
    def __init__(self, vocab: int, max_length: int, d_model: int, layers: int, heads: int):
        super().__init__()
        self.tok_embedding = nn.Embedding(vocab, d_model)
        self.pos_embedding = nn.Embedding(max_length, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, heads, causal=True) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # (N, L) int64 with L <= max_length -> (N, L, d_model) -> (N, L, vocab)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.tok_embedding(tokens) + self.pos_embedding(positions)
        return self.lm_head(self.ln_f(self.blocks(h)))


@ARCHITECTURES.register("transformer", inputs=("signal",), default_task="mnist1d")
def transformer(
    spec: TaskSpec, d_model: int = 32, layers: int = 2, heads: int = 4
) -> TransformerClassifier:
    """Transformer encoder classifier over the time steps of a signal."""
    _check("transformer", d_model, layers, heads)
    channels, length = spec.input_shape
    return TransformerClassifier(channels, length, spec.num_outputs, d_model, layers, heads)


@ARCHITECTURES.register(
    "causal-transformer",
    inputs=("tokens",),
    objectives=("language_model",),
    default_task="stdlib-chars",
)
def causal_transformer(
    spec: TaskSpec, d_model: int = 64, layers: int = 2, heads: int = 4
) -> CausalTransformer:
    """Causal Transformer language model over `spec.num_outputs` tokens."""
    _check("causal-transformer", d_model, layers, heads)
    return CausalTransformer(spec.num_outputs, spec.input_shape[0], d_model, layers, heads)


def _check(arch: str, d_model: int, layers: int, heads: int) -> None:
    check_min(arch, d_model=(d_model, 1), layers=(layers, 1), heads=(heads, 1))
    if d_model % heads:
        raise ConfigError(f"{arch}: d_model ({d_model}) must be a multiple of heads ({heads})")
