"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained with the Cloze task.

Training hides a random share (`mask_prob`) of each sequence's items behind a mask token (id
num_items + 1 in the input table) and predicts them from both sides; the loss (full CE by
default, any loss of seqrec.losses) is taken at the masked positions only. At inference a mask
token is appended after the history (the history is cut so the input stays within max_len) and
the model's prediction for that slot ranks the catalogue.

The replicability study of Petrov & Macdonald (RecSys 2022) found BERT4Rec is usually
under-trained: the original needed far more steps than frameworks' defaults. Beauty's config
therefore sets many epochs and a long patience. It also keeps the parts of the original output
layer that re-implementations drop: a dense + GELU + LayerNorm head (`head = true`) and a
per-item output bias (`output_bias = true`) on the tied item embeddings.

Choices made here that the paper leaves open or that differ from it:
- the output bias is folded into the dot product: `user_representation` is [h, 1] and the
  item table is [E, b], shape (N + 1, D + 1), so every loss and the scorer see h·E + b unchanged;
- chosen positions are always replaced by the mask token (the original code's setting; BERT's
  80/10/10 split is not used); a row with no chosen position gets one at random;
- training sequences are the trainer's windows with their last target appended, trimmed to
  max_len, so BERT4Rec trains on exactly the items SASRec sees;
- `positions = "cape"` swaps the learned absolute positions for CAPE (blocks/cape.py);
  `"learned+cape"` keeps the absolute table and adds CAPE in every attention layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.base import Batch, SequentialRecommender
from seqrec.models.blocks.attention import TransformerBlock, attention_mask
from seqrec.models.blocks.cape import CAPE
from seqrec.models.blocks.dropout import Dropout
from seqrec.models.blocks.init import init_normal
from seqrec.models.blocks.positions import build_positions


@dataclass
class BERT4RecConfig:
    max_len: int = 50
    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    ff_size: int = 0  # 0 = 4 × hidden_size
    dropout: float = 0.2
    attn_dropout: float = -1.0  # < 0: same as dropout
    mask_prob: float = 0.2
    positions: str = "learned"  # learned | cape | learned+cape | none
    norm_first: bool = True
    head: bool = True  # dense + GELU + LayerNorm before the output layer, as in the original
    output_bias: bool = True
    init_std: float = 0.02

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.positions not in ("learned", "cape", "learned+cape", "none"):
            raise ValueError(f"positions = {self.positions!r}; use learned, cape, learned+cape or none")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob = {self.mask_prob}; it must be in (0, 1), e.g. 0.2")
        if self.max_len < 2:
            raise ValueError("max_len must be at least 2 (the history plus the appended mask token)")


class BERT4Rec(SequentialRecommender):
    config_class = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig, num_items: int):
        super().__init__(config, num_items)
        d = config.hidden_size
        self.mask_token = num_items + 1
        self.item_emb = nn.Embedding(num_items + 2, d, padding_idx=0)
        cape = config.positions in ("cape", "learned+cape")
        absolute = {"cape": "none", "learned+cape": "learned"}.get(config.positions, config.positions)
        self.positions = build_positions(absolute, config.max_len, d)
        self.emb_norm = nn.LayerNorm(d)
        self.emb_drop = Dropout(config.dropout)
        attn_drop = config.dropout if config.attn_dropout < 0 else config.attn_dropout
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.num_heads, config.ff_size or 4 * d, config.dropout, attn_drop,
                             config.norm_first, "gelu",
                             CAPE(d // config.num_heads, config.max_len + 1) if cape else None)
            for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d)) if config.head else nn.Identity()
        self.bias = nn.Parameter(torch.zeros(num_items + 1)) if config.output_bias else None
        init_normal(self, config.init_std)

    def encode(self, batch: Batch) -> torch.Tensor:
        """Bidirectional hidden states (B, L, D) for a batch whose items may hold mask tokens."""
        items = batch["items"]
        x = self.emb_drop(self.emb_norm(self.item_emb(items) + self.positions(items)))
        valid = (items > 0).unsqueeze(-1)
        x = x * valid
        mask = attention_mask(items, causal=False)
        for block in self.blocks:
            x = block(x, mask) * valid
        return self.final_norm(x)

    def _output(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head, then the constant 1 that multiplies the output bias column."""
        h = self.head(hidden)
        if self.bias is None:
            return h
        return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        """(N + 1, D [+ 1]): the tied item table without the mask row, with the bias column."""
        table = self.item_emb.weight[: self.num_items + 1]
        if self.bias is None:
            return table
        return torch.cat([table, self.bias[:, None]], dim=1)

    def with_mask_token(self, items: torch.Tensor) -> torch.Tensor:
        """Append the mask token after each history, keeping the last max_len slots."""
        mask_col = torch.full_like(items[:, :1], self.mask_token)
        return torch.cat([items, mask_col], dim=1)[:, -self.max_len:]

    def user_representation(self, batch: Batch) -> torch.Tensor:
        hidden = self.encode({"items": self.with_mask_token(batch["items"])})
        return self._output(hidden[:, -1])

    def cloze(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked inputs, targets) from a next-item training batch: 0 target = not masked."""
        items, targets = batch["items"], batch["targets"]
        seq = torch.cat([items, targets[:, -1:]], dim=1)[:, -self.max_len:]
        valid = seq > 0
        chosen = (torch.rand(seq.shape, device=seq.device) < self.config.mask_prob) & valid
        empty = ~chosen.any(1) & valid.any(1)
        if empty.any():  # every row predicts at least one item: pick one valid slot at random
            noise = torch.rand(seq.shape, device=seq.device).masked_fill(~valid, -1.0)
            one = F.one_hot(noise.argmax(1), seq.shape[1]).bool()
            chosen = chosen | (one & empty[:, None])
        return seq.masked_fill(chosen, self.mask_token), seq * chosen

    def training_loss(self, batch: Batch, loss: nn.Module) -> torch.Tensor:
        inputs, targets = self.cloze(batch)
        hidden = self.encode({"items": inputs})
        chosen = targets > 0
        return loss(self._output(hidden[chosen]), targets[chosen], self.item_embeddings())
