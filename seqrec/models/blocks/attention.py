"""Multi-head self-attention and the transformer block used by SASRec, BERT4Rec and friends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.blocks.dropout import Dropout


def attention_mask(items: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) boolean mask, True = may attend.

    Padding keys are hidden; every position may always see itself, so rows of padding queries
    never become all-masked (which would give NaN).
    """
    valid = items > 0
    length = items.shape[1]
    allowed = valid[:, None, None, :].expand(-1, 1, length, -1)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=items.device)
    return allowed | eye


class MultiHeadSelfAttention(nn.Module):
    """Self-attention; `logit_bias` (optional) adds a content-dependent term to the logits.

    The hook is for position encodings computed from the attention itself (CAPE/CoPE): it is
    called as `logit_bias(q, scaled_logits, mask)` and returns (B, H, L, L). Without it the
    fused scaled_dot_product_attention path runs unchanged.
    """

    supports_last_only = True  # forward(x, mask, last_only=True) computes the last query alone

    def __init__(self, hidden: int, heads: int, dropout: float, logit_bias: nn.Module | None = None):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_size {hidden} must be divisible by num_heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.logit_bias = logit_bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D), or (B, 1, D) for the last query alone when `last_only` (keys: all positions).

        `keys` (optional, (B, L, D)) is what keys and values are computed from, when it differs
        from the queries' input (the original SASRec code normalises the queries only).
        """
        b, length, d = x.shape
        if last_only and self.logit_bias is None:
            q, k, v = self._project(x[:, -1:], x if keys is None else keys)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, :, -1:],
                                               dropout_p=self.dropout if self.training else 0.0)
            return self.out(y.transpose(1, 2).reshape(b, 1, d))
        if last_only:  # a content-dependent bias needs every query's logits
            return self.forward(x, mask, keys=keys)[:, -1:]
        if keys is None:  # one fused projection
            q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self._project(x, keys)
        if self.logit_bias is not None:
            logits = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
            bias = self.logit_bias(q, logits, mask)
            mask = bias.masked_fill(~mask, float("-inf"))  # a float mask is added to the logits
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, length, d))

    def _project(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Q from `queries` (B, Lq, D), K and V from `keys` (B, L, D), with the fused qkv weights;
        each (B, H, ·, D/H)."""
        b, d, dh = queries.shape[0], queries.shape[2], queries.shape[2] // self.heads
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(queries, w[:d], bias[:d]).view(b, -1, self.heads, dh).transpose(1, 2)
        k, v = F.linear(keys, w[d:], bias[d:]).view(b, keys.shape[1], 2, self.heads, dh).permute(2, 0, 3, 1, 4)
        return q, k, v


class FeedForward(nn.Module):
    def __init__(self, hidden: int, inner: int, dropout: float, activation: str = "gelu",
                 inner_dropout: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, inner),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            Dropout(dropout if inner_dropout else 0.0),
            nn.Linear(inner, hidden),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Attention + feed-forward with residuals; pre-norm (stable) or post-norm (the 2017 layout).

    `residual_from_norm` (with pre-norm) is the layout of the original SASRec code (Kang's
    TensorFlow and the pmixer PyTorch port that Klenitskiy & Vasilev build on): the queries are
    normalised but keys and values are not, and each residual starts from the normalised input,
    so the stream is re-normalised at every sub-layer: q = LN1(x); x = q + Attn(q, x);
    h = LN2(x); out = h + FF(h).
    """

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float,
                 norm_first: bool = True, activation: str = "gelu", logit_bias: nn.Module | None = None,
                 inner_dropout: bool = True, residual_from_norm: bool = False):
        super().__init__()
        if residual_from_norm and not norm_first:
            raise ValueError("residual_from_norm is a pre-norm layout; set norm_first = true with it")
        self.norm_first = norm_first
        self.residual_from_norm = residual_from_norm
        self.attn = MultiHeadSelfAttention(hidden, heads, attn_dropout, logit_bias)
        self.ff = FeedForward(hidden, inner, dropout, activation, inner_dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, D); with `last_only`, (B, 1, D): only the last position's output, which is all a
        final block needs for next-item scores (keys and values still come from every position)."""
        attend = self._attend_last if last_only else self.attn
        if self.residual_from_norm:
            q = self.norm1(x)
            x = (q[:, -1:] if last_only else q) + self.drop(attend(q, mask, keys=x))
            h = self.norm2(x)
            return h + self.drop(self.ff(h))
        residual = x[:, -1:] if last_only else x
        if self.norm_first:
            x = residual + self.drop(attend(self.norm1(x), mask))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(residual + self.drop(attend(x, mask)))
        return self.norm2(x + self.drop(self.ff(x)))

    def _attend_last(self, x: torch.Tensor, mask: torch.Tensor, **kw) -> torch.Tensor:
        if getattr(self.attn, "supports_last_only", False):
            return self.attn(x, mask, last_only=True, **kw)
        return self.attn(x, mask, **kw)[:, -1:]  # an attention module without the shortcut
