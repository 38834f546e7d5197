"""HSTU layer parts (Zhai et al., ICML 2024, "Actions Speak Louder than Words").

One HSTU layer replaces attention + feed-forward:

    U, V, Q, K = split(SiLU(f1(LayerNorm(X))))
    A(X)V      = SiLU(QKᵀ + rab^{p,t}) / n · V           (pointwise, no softmax)
    Y          = X + f2(Dropout(LayerNorm(A(X)V) ⊙ U))

`hstu_attention` is the whole attention computation in one function, so a fused kernel (Triton,
FlashAttention-style) can replace it without touching the layer.

Choices the paper leaves open, following Meta's generative-recommenders research code unless noted:
- n, the normaliser of the pointwise attention, is the model's fixed `max_len`, not the length of
  the (trimmed) batch: the same history then gets the same output whatever it is batched with.
- no 1/sqrt(d) scaling of QKᵀ (the reference code has none).
- relative time: the query's own timestamp minus the key's, bucketised as floor(ln(max(|Δt|,1)) /
  0.301) and clipped to `num_buckets`. The reference code uses the *next* event's time for the
  query, which our leave-one-out evaluation does not provide; the query's own time is available
  in training, evaluation and serving alike, so train and test see the same feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.blocks.dropout import Dropout


def hstu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                   mask: torch.Tensor, norm: float, dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Pointwise aggregated attention.

    q, k: (B, H, L, dqk); v: (B, H, L, dv); bias: broadcastable to (B, H, L, L) or None;
    mask: (B, 1, L, L) bool, True = may attend; dropout on the attention weights, as in SDPA.
    Returns (B, L, H * dv).
    """
    scores = q @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + bias
    weights = F.silu(scores) * (mask.to(scores.dtype) / norm)
    if training and dropout_p > 0:
        weights = F.dropout(weights, dropout_p, True)
    out = weights @ v
    b, h, length, dv = out.shape
    return out.transpose(1, 2).reshape(b, length, h * dv)


def causal_valid_mask(items: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L): query i may read key j iff j ≤ i and j is a real item.

    Unlike softmax attention, a row may be all-masked (a padding query): SiLU weights of zero
    then give a zero output, not NaN.
    """
    length = items.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
    return (causal[None] & (items > 0)[:, None, :])[:, None]


def log_time_buckets(timestamps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """(B, L, L) long: bucket of |t_i - t_j| for query i and key j (log scale, base e^0.301)."""
    ts = timestamps.to(torch.float64)
    diff = (ts[:, :, None] - ts[:, None, :]).abs().clamp_min(1.0)
    return (torch.log(diff) / 0.301).long().clamp(0, num_buckets)


class RelativePositionTimeBias(nn.Module):
    """rab^{p,t}: a learned scalar per relative position (i - j) plus one per log time bucket.

    Shared by all heads (as in the reference code). Without timestamps only the position term
    is used; `use_time=False` turns the time term off entirely.
    """

    def __init__(self, max_len: int, num_buckets: int, use_time: bool = True, std: float = 0.02):
        super().__init__()
        self.max_len = max_len
        self.num_buckets = num_buckets
        self.use_time = use_time
        self.pos_w = nn.Parameter(torch.randn(max_len) * std)
        self.ts_w = nn.Parameter(torch.randn(num_buckets + 1) * std) if use_time else None

    def forward(self, length: int, timestamps: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """(1 or B, 1, L, L) additive bias; entries above the diagonal are masked anyway."""
        if length > self.max_len:
            raise ValueError(f"batch length {length} exceeds max_len {self.max_len}")
        idx = torch.arange(length, device=device)
        rel = (idx[:, None] - idx[None, :]).clamp(0, self.max_len - 1)
        bias = self.pos_w[rel][None]
        if self.use_time and timestamps is not None:
            bias = bias + self.ts_w[log_time_buckets(timestamps, self.num_buckets)]
        return bias[:, None]


class HSTULayer(nn.Module):
    """One HSTU layer: fused U/V/Q/K projection, pointwise attention, gated output, residual."""

    def __init__(self, hidden: int, heads: int, attention_dim: int, linear_dim: int, dropout: float,
                 attn_dropout: float, max_len: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.attention_dim = attention_dim
        self.linear_dim = linear_dim
        self.max_len = max_len
        self.norm_in = nn.LayerNorm(hidden, eps=eps)
        self.uvqk = nn.Linear(hidden, heads * (2 * linear_dim + 2 * attention_dim))
        self.norm_attn = nn.LayerNorm(heads * linear_dim, eps=eps)
        self.out = nn.Linear(heads * linear_dim, hidden)
        self.drop = Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
                last_only: bool = False) -> torch.Tensor:
        """(B, L, D); with `last_only` (B, 1, D): the last query alone, over every key."""
        b, length, _ = x.shape
        h, dl, da = self.heads, self.linear_dim, self.attention_dim
        u, v, q, k = torch.split(F.silu(self.uvqk(self.norm_in(x))), [h * dl, h * dl, h * da, h * da], dim=-1)
        if last_only:
            x, u, q, mask = x[:, -1:], u[:, -1:], q[:, -1:], mask[:, :, -1:]
            bias = bias[:, :, -1:] if bias is not None else None
        q = q.view(b, q.shape[1], h, da).transpose(1, 2)
        k = k.view(b, length, h, da).transpose(1, 2)
        v = v.view(b, length, h, dl).transpose(1, 2)
        attn = hstu_attention(q, k, v, bias, mask, float(self.max_len), self.attn_dropout, self.training)
        return x + self.out(self.drop(self.norm_attn(attn) * u))
