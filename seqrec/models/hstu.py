"""HSTU (Zhai et al., ICML 2024, "Actions Speak Louder than Words"): a causal stack of HSTU layers
(seqrec/models/blocks/hstu.py) — pointwise SiLU attention with relative position and log-time
biases, gated by U, and no separate feed-forward.

Input and output follow Meta's generative-recommenders research code: item embeddings × sqrt(D)
plus a learned absolute position, dropout; outputs and item embeddings L2-normalised and the dot
product divided by a temperature (0.05 there), so every loss in `seqrec.losses` sees cosine/τ.

Timestamps: the relative-time bias needs `timestamps` in the batch. Training and evaluation
batches carry them; the Recommender scores bare histories without, and then only the
relative-position term is used (the model still works, but a model trained with time loses that
signal at serving time; set `use_time = false` to train the positions-only variant that serving
sees exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.base import Batch, SequentialRecommender
from seqrec.models.blocks.dropout import Dropout
from seqrec.models.blocks.hstu import HSTULayer, RelativePositionTimeBias, causal_valid_mask
from seqrec.models.blocks.init import init_normal
from seqrec.models.blocks.positions import build_positions


@dataclass
class HSTUConfig:
    max_len: int = 50
    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    attention_dim: int = 0  # per head, for Q and K; 0 = hidden_size // num_heads
    linear_dim: int = 0  # per head, for U and V; 0 = hidden_size // num_heads
    dropout: float = 0.2
    attn_dropout: float = 0.0
    use_time: bool = True  # relative log-time buckets in the attention bias
    num_time_buckets: int = 128
    input_positions: str = "learned"  # learned | none (absolute positions added to the input)
    scale_embeddings: bool = True  # item embeddings × sqrt(hidden_size), as in the reference code
    l2_norm: bool = True  # cosine scores between L2-normalised user and item vectors
    temperature: float = 0.05  # dot products are divided by this when l2_norm is on
    init_std: float = 0.02

    def validate(self) -> None:
        if self.max_len < 1:
            raise ValueError("max_len must be at least 1")
        if self.hidden_size < 1 or self.num_blocks < 1 or self.num_heads < 1:
            raise ValueError("hidden_size, num_blocks and num_heads must be positive")
        if (self.attention_dim == 0 or self.linear_dim == 0) and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}, "
                             "or set attention_dim and linear_dim explicitly")
        if self.attention_dim < 0 or self.linear_dim < 0:
            raise ValueError("attention_dim and linear_dim must be >= 0 (0 = hidden_size // num_heads)")
        if self.num_time_buckets < 1:
            raise ValueError("num_time_buckets must be at least 1")
        if self.input_positions not in ("learned", "none"):
            raise ValueError(f"input_positions = {self.input_positions!r}; use learned or none")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError("dropout and attn_dropout must be in [0, 1)")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


class HSTU(SequentialRecommender):
    config_class = HSTUConfig

    def __init__(self, config: HSTUConfig, num_items: int):
        super().__init__(config, num_items)
        d = config.hidden_size
        da = config.attention_dim or d // config.num_heads
        dl = config.linear_dim or d // config.num_heads
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.positions = build_positions(config.input_positions, config.max_len, d)
        self.emb_drop = Dropout(config.dropout)
        self.rel_bias = RelativePositionTimeBias(config.max_len, config.num_time_buckets, config.use_time,
                                                 config.init_std)
        self.layers = nn.ModuleList(
            HSTULayer(d, config.num_heads, da, dl, config.dropout, config.attn_dropout, config.max_len)
            for _ in range(config.num_blocks)
        )
        init_normal(self, config.init_std)

    def encode(self, batch: Batch) -> torch.Tensor:
        return self._encode(batch, last_only=False)

    def encode_last(self, batch: Batch) -> torch.Tensor:
        """The last position only: the final layer skips every other query."""
        return self._encode(batch, last_only=True)[:, -1]

    def _encode(self, batch: Batch, last_only: bool) -> torch.Tensor:
        items = batch["items"]
        x = self.item_emb(items)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.hidden_size)
        valid = (items > 0).unsqueeze(-1)
        x = self.emb_drop(x + self.positions(items)) * valid
        mask = causal_valid_mask(items)
        bias = self.rel_bias(items.shape[1], batch.get("timestamps"), items.device)
        for i, layer in enumerate(self.layers):
            final = last_only and i == len(self.layers) - 1
            x = layer(x, mask, bias, last_only=final) * (valid[:, -1:] if final else valid)
        if self.config.l2_norm:
            x = F.normalize(x, dim=-1) / self.config.temperature
        return x

    def item_embeddings(self) -> torch.Tensor:
        w = self.item_emb.weight
        return F.normalize(w, dim=-1) if self.config.l2_norm else w
