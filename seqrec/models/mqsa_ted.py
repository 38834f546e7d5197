"""MQSA-TED (Zhu et al., WSDM 2024): multi-query self-attention + transition-aware embedding distillation.

**L-query self-attention.** Standard self-attention queries with one item; an L-query
attention queries with the last L items of the window ending at the position (here: the mean
of their query projections — mean pooling is this implementation's choice of aggregator). A
long window (`long_window`) captures collaborative, set-like signals (low variance, high bias);
a short one (`short_window`, 1 = ordinary self-attention) captures the most recent intent (low
bias, high variance). **Multi-query** attention combines them in every block:
out = alpha · attn(q_long) + (1 − alpha) · attn(q_short), with shared keys and values.

**TED.** Item-to-item transitions are counted on the *training* sequences only
(`fit_statistics`; a → b for b within `transition_window` steps after a, weight 1/distance).
Each item's top `ted_neighbors` successors, normalised, are a soft label; the item embedding
table is trained so that softmax(e_a · E^T / ted_temperature) matches it (cross-entropy), added
to the next-item loss with weight `ted_weight`. Source items are the distinct items of each
batch. Distilling straight into the scoring table (rather than through a separate teacher
network) is this implementation's reading of "distils transitions into item embeddings".

Everything else (embeddings, positions, blocks, pre/post-norm) is SASRec's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.base import Batch, only_last_targets
from seqrec.models.blocks.init import init_normal
from seqrec.models.sasrec import SASRec, SASRecConfig


@dataclass
class MQSATEDConfig(SASRecConfig):
    long_window: int = 8  # L of the long query; 0 = the whole history up to the position
    short_window: int = 1  # L of the short query; 1 = ordinary self-attention
    alpha: float = 0.5  # weight of the long-query attention output
    ted_weight: float = 0.1  # 0 disables the transition distillation
    ted_temperature: float = 1.0
    ted_neighbors: int = 50  # successors kept per item as its soft label
    transition_window: int = 1  # count a → b when b follows a within this many steps

    def validate(self) -> None:
        super().validate()
        if self.residual_from_norm:
            raise ValueError("multi-query attention does not implement residual_from_norm; set residual_from_norm = false")
        if self.positions == "cape":
            raise ValueError("multi-query attention does not implement CAPE; use positions = learned or none")
        if self.long_window < 0 or self.short_window < 1:
            raise ValueError("long_window must be ≥ 0 (0 = whole history) and short_window ≥ 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha = {self.alpha}; it weights the long query and must be in [0, 1]")
        if self.ted_weight < 0 or self.ted_temperature <= 0:
            raise ValueError("ted_weight must be ≥ 0 and ted_temperature > 0")
        if self.ted_neighbors < 1 or self.transition_window < 1:
            raise ValueError("ted_neighbors and transition_window must be at least 1")


def window_mean(x: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, L, d): the mean of x over the last `window` real positions up to each position (causal)."""
    if window == 1:
        return x
    w = valid[:, None, :, None].to(x.dtype)
    csum = torch.cumsum(x * w, dim=2)
    ccount = torch.cumsum(w, dim=2)
    if 0 < window < x.shape[2]:
        csum = csum - F.pad(csum, (0, 0, window, 0))[:, :, : x.shape[2]]
        ccount = ccount - F.pad(ccount, (0, 0, window, 0))[:, :, : x.shape[2]]
    return torch.where(ccount > 0, csum / ccount.clamp_min(1.0), x)


class MultiQuerySelfAttention(nn.Module):
    """Drop-in for MultiHeadSelfAttention: the same projections, two query windows, one output."""

    supports_last_only = True

    def __init__(self, hidden: int, heads: int, dropout: float, long_window: int, short_window: int, alpha: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.long_window, self.short_window, self.alpha = long_window, short_window, alpha

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, D), or (B, 1, D) for the last query alone when `last_only`."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # which positions hold items: with left padding the last query row of the causal mask
        # sees exactly the real keys (and itself, which is always real in a non-empty history)
        valid = mask[:, 0, -1, :]
        p = self.dropout if self.training else 0.0
        out = 0.0
        for window, weight in ((self.long_window, self.alpha), (self.short_window, 1.0 - self.alpha)):
            if weight == 0.0:
                continue
            qw = window_mean(q, valid, window)
            if last_only:
                qw = qw[:, :, -1:]
            out = out + weight * F.scaled_dot_product_attention(qw, k, v, attn_mask=mask[:, :, -qw.shape[2]:],
                                                                dropout_p=p)
        return self.out(out.transpose(1, 2).reshape(b, out.shape[2], d))


class MQSATED(SASRec):
    config_class = MQSATEDConfig

    def __init__(self, config: MQSATEDConfig, num_items: int):
        super().__init__(config, num_items)
        attn_drop = config.dropout if config.attn_dropout < 0 else config.attn_dropout
        for block in self.blocks:
            block.attn = MultiQuerySelfAttention(config.hidden_size, config.num_heads, attn_drop,
                                                 config.long_window, config.short_window, config.alpha)
        init_normal(self, config.init_std)
        m = config.ted_neighbors
        # soft labels are training-time statistics only: not saved, refitted by fit_statistics
        self.register_buffer("ted_targets", torch.zeros(num_items + 1, m, dtype=torch.int64), persistent=False)
        self.register_buffer("ted_probs", torch.zeros(num_items + 1, m), persistent=False)

    def fit_statistics(self, train_sequences: list[np.ndarray]) -> None:
        """Top-M successor distribution of every item, from the training sequences only."""
        n = self.num_items + 1
        cfg = self.config
        src, dst, wts = [], [], []
        for d in range(1, cfg.transition_window + 1):
            pairs = [(s[:-d], s[d:]) for s in train_sequences if len(s) > d]
            if not pairs:
                continue
            src.append(np.concatenate([a for a, _ in pairs]))
            dst.append(np.concatenate([b for _, b in pairs]))
            wts.append(np.full(len(src[-1]), 1.0 / d))
        targets = np.zeros((n, cfg.ted_neighbors), dtype=np.int64)
        probs = np.zeros((n, cfg.ted_neighbors), dtype=np.float32)
        if src:
            s, t, w = np.concatenate(src), np.concatenate(dst), np.concatenate(wts)
            keep = (s > 0) & (t > 0) & (s != t)
            keys, inverse = np.unique(s[keep] * n + t[keep], return_inverse=True)
            counts = np.bincount(inverse, weights=w[keep])
            rows, cols = keys // n, keys % n
            order = np.lexsort((-counts, rows))  # by source, then descending count
            rows, cols, counts = rows[order], cols[order], counts[order]
            starts = np.searchsorted(rows, rows, side="left")
            rank = np.arange(len(rows)) - starts
            top = rank < cfg.ted_neighbors
            targets[rows[top], rank[top]] = cols[top]
            probs[rows[top], rank[top]] = counts[top]
            totals = probs.sum(1, keepdims=True)
            probs = np.divide(probs, totals, out=np.zeros_like(probs), where=totals > 0)
        device = self.ted_probs.device
        self.ted_targets = torch.from_numpy(targets).to(device)
        self.ted_probs = torch.from_numpy(probs).to(device)

    def distillation_loss(self, items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy between each distinct batch item's transition distribution and its
        embedding's softmax over the catalogue."""
        src = torch.unique(items)
        src = src[self.ted_probs[src].sum(1) > 0]
        if len(src) == 0:
            return self.item_embeddings().sum() * 0.0
        table = self.item_embeddings()
        logp = F.log_softmax((table[src] @ table[1:].T).float() / self.config.ted_temperature, dim=-1)
        target_ids, target_p = self.ted_targets[src], self.ted_probs[src]
        picked = logp.gather(1, (target_ids - 1).clamp_min(0))
        return -(target_p * picked).sum(1).mean()

    def training_loss(self, batch: Batch, loss: nn.Module) -> torch.Tensor:
        total = super().training_loss(batch, loss)
        if self.config.ted_weight > 0:
            items = batch["items"]
            if only_last_targets(batch["targets"]):
                # prefix batches: distil each prefix's newest item only. A user's items then get
                # distilled once per epoch, as without prefixes, instead of once per prefix that
                # contains them (which made the term ~6x the cost of the rest on Beauty)
                items = items[:, -1]
            total = total + self.config.ted_weight * self.distillation_loss(items)
        return total
