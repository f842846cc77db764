"""Exit heads that read every token state of their layer (reduction "tokens").

FastBERT/SmartBERT's small attention head and the extra candidates of LECO's
search space. With a frozen backbone their inputs are cached once as fp16
token states (see ``features.TokenStore``), so epochs still cost one backbone pass.

Heads that answer from the [CLS] position after self-attention only need the
[CLS] query: keys and values come from every token, but the other tokens'
outputs are never read, so they are not computed. The logits are identical to
running the full self-attention and then taking [CLS]; the FLOPs counted are
the ones actually spent.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.registry import Range
from .base import EXITS, ExitHead, Mlp, Tokens


def default_width(dims) -> int:
    """128 as in FastBERT, but never more than half the hidden size (small models stay cheap)."""
    return min(128, max(4, dims.hidden_size // 2))


def _fill(mask: torch.Tensor, dtype) -> torch.Tensor:
    """Additive key mask [B, 1, T]: 0 for tokens, -inf-ish for padding."""
    return (1.0 - mask[:, None, :].to(dtype)) * torch.finfo(dtype).min


class ClsAttention(nn.Module):
    """Multi-head attention of the [CLS] query over all tokens (already projected to ``d``)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        self.heads, self.d = heads, d
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        q = self.q(x[:, :1]).view(b, 1, self.heads, hd).transpose(1, 2)        # [B, h, 1, hd]
        k = self.k(x).view(b, t, self.heads, hd).transpose(1, 2)               # [B, h, T, hd]
        v = self.v(x).view(b, t, self.heads, hd).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(hd) + _fill(mask, x.dtype)[:, None]
        a = torch.softmax(s, -1) @ v                                           # [B, h, 1, hd]
        return self.o(a.transpose(1, 2).reshape(b, d))

    @staticmethod
    def flops(d: int, seq):
        return 2 * 2 * seq * d * d + 2 * 2 * d * d + 2 * 2 * seq * d  # K, V; Q, O; scores + sum


@EXITS.register("attention")
class AttentionExit(ExitHead):
    """FastBERT/SmartBERT: project to ``width``, self-attention, [CLS], Linear, tanh, Linear(C)."""

    reduction = "tokens"

    def __init__(self, dims, width: int | None = None, heads: int = 2, dropout: float = 0.1):
        super().__init__(dims)
        self.width = width = width or default_width(dims)
        self.proj = nn.Linear(dims.hidden_size, width)
        self.attn = ClsAttention(width, heads)
        self.dense = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, dims.num_labels)

    def encode(self, x: Tokens):
        return torch.tanh(self.dense(self.attn(self.proj(x.hidden), x.mask)))

    def decode(self, z):
        return self.out(self.drop(z))

    def flops(self, seq):
        h, d = self.dims.hidden_size, self.width
        return 2 * seq * h * d + ClsAttention.flops(d, seq) + 2 * d * d + 2 * d * self.dims.num_labels


class _PooledMlp(ExitHead):
    reduction = "tokens"

    def __init__(self, dims, width: int | None = None, dropout: float = 0.1):
        super().__init__(dims)
        self.width = width or dims.hidden_size
        self.net = Mlp(dims.hidden_size, self.width, dims.num_labels, dropout)

    def pool(self, x: Tokens) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x):
        return self.net.encode(self.pool(x))

    def decode(self, z):
        return self.net.decode(z)

    def pool_flops(self, seq):
        return seq * self.dims.hidden_size

    def flops(self, seq):
        h = self.dims.hidden_size
        return self.pool_flops(seq) + 2 * h * self.width + 2 * self.width * self.dims.num_labels


@EXITS.register("max-mlp")
class MaxMlpExit(_PooledMlp):
    """Max over the real tokens of each feature, then an MLP (LECO candidate)."""

    def pool(self, x):
        fill = torch.finfo(x.hidden.dtype).min
        return x.hidden.masked_fill(x.mask[..., None] == 0, fill).amax(1)


@EXITS.register("attn-pool")
class AttnPoolExit(_PooledMlp):
    """Attention pooling with one learned query vector, then an MLP (LECO candidate)."""

    def __init__(self, dims, width: int | None = None, dropout: float = 0.1):
        super().__init__(dims, width, dropout)
        self.query = nn.Parameter(torch.zeros(dims.hidden_size))  # zeros = mean pooling at the start

    def pool(self, x):
        s = (x.hidden @ self.query) / math.sqrt(self.dims.hidden_size) + _fill(x.mask, x.hidden.dtype)[:, 0]
        # the weighted sum as one batched matmul: no [B, T, H] product to build and differentiate through
        return (torch.softmax(s, -1)[:, None, :] @ x.hidden).squeeze(1)

    def pool_flops(self, seq):
        return 4 * seq * self.dims.hidden_size


@EXITS.register("conv")
class ConvExit(ExitHead):
    """1-D convolution over tokens (kernel 3 or 5), GELU, max-pool over real tokens, Linear (LECO candidate)."""

    reduction = "tokens"
    bounds = {"kernel": Range(1, 15)}

    def __init__(self, dims, width: int | None = None, kernel: int = 3, dropout: float = 0.1):
        super().__init__(dims)
        if kernel % 2 == 0:  # an even window would shift the output by one token against the mask
            raise ValueError(f"kernel must be odd, got {kernel}")
        self.width, self.kernel = width or default_width(dims), kernel
        width = self.width
        self.conv = nn.Conv1d(dims.hidden_size, width, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, dims.num_labels)

    def encode(self, x):
        h = x.hidden.masked_fill(x.mask[..., None] == 0, 0.0)  # padding must not leak into the windows
        c = torch.nn.functional.gelu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        return c.masked_fill(x.mask[..., None] == 0, torch.finfo(c.dtype).min).amax(1)

    def decode(self, z):
        return self.out(self.drop(z))

    def flops(self, seq):
        return 2 * seq * self.kernel * self.dims.hidden_size * self.width + seq * self.width \
            + 2 * self.width * self.dims.num_labels


@EXITS.register("transformer")
class TransformerExit(ExitHead):
    """One small post-LN transformer block (width 128, 2 heads, FFN 256) read at [CLS] (LECO candidate)."""

    reduction = "tokens"

    def __init__(self, dims, width: int | None = None, heads: int = 2, ffn: int | None = None, dropout: float = 0.1):
        super().__init__(dims)
        width = width or default_width(dims)
        ffn = ffn or 2 * width
        self.width, self.ffn_width = width, ffn
        self.proj = nn.Linear(dims.hidden_size, width)
        self.attn = ClsAttention(width, heads)
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Linear(ffn, width))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, dims.num_labels)

    def encode(self, x):
        p = self.proj(x.hidden)
        a = self.ln1(p[:, 0] + self.drop(self.attn(p, x.mask)))
        return self.ln2(a + self.drop(self.ffn(a)))

    def decode(self, z):
        return self.out(z)

    def flops(self, seq):
        h, d, f = self.dims.hidden_size, self.width, self.ffn_width
        return 2 * seq * h * d + ClsAttention.flops(d, seq) + 4 * d * f + 20 * d + 2 * d * self.dims.num_labels
