"""SASRec (Kang & McAuley, ICDM 2018): a causal transformer over the item sequence.

Choices beyond the paper, each a config switch because follow-up work showed they matter:
pre-norm (default), the post-norm of the 2017 transformer, or the original code's
pre-norm variant (`residual_from_norm`); tied (default) or separate output embeddings;
GELU (default) or the paper's ReLU; the loss (BCE in the paper, full CE for "SASRec+",
sampled softmax, gBCE) is chosen in [train], not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from seqrec.models.base import Batch, SequentialRecommender
from seqrec.models.blocks.attention import TransformerBlock, attention_mask
from seqrec.models.blocks.cape import CAPE
from seqrec.models.blocks.dropout import Dropout
from seqrec.models.blocks.init import init_normal
from seqrec.models.blocks.positions import build_positions


@dataclass
class SASRecConfig:
    max_len: int = 50
    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    ff_size: int = 0  # 0 = 4 × hidden_size
    dropout: float = 0.2
    attn_dropout: float = -1.0  # < 0: same as dropout
    positions: str = "learned"  # learned | cape | learned+cape | none (cape: blocks/cape.py)
    position_origin: str = "end"  # end: slot = recency (SASRec's code) | start: slot = index (RecBole)
    norm_first: bool = True
    # the original code's layout (pre-norm with the queries alone normalised and residuals from
    # the normalised input; blocks/attention.py TransformerBlock); needs norm_first = true
    residual_from_norm: bool = False
    tie_embeddings: bool = True
    activation: str = "gelu"  # gelu | relu
    scale_embeddings: bool = False  # multiply item embeddings by sqrt(hidden), as in the paper's code
    init_std: float = 0.02
    embedding_norm: bool = False  # LayerNorm on item + position embeddings (BERT / RecBole layout)
    ff_inner_dropout: bool = True  # dropout between the two feed-forward layers as well as after

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.positions not in ("learned", "cape", "learned+cape", "none"):
            raise ValueError(f"positions = {self.positions!r}; use learned, cape, learned+cape or none")
        if self.position_origin not in ("end", "start"):
            raise ValueError(f"position_origin = {self.position_origin!r}; use end or start")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation = {self.activation!r}; use gelu or relu")
        if self.max_len < 1:
            raise ValueError("max_len must be at least 1")
        if self.residual_from_norm and not self.norm_first:
            raise ValueError("residual_from_norm = true is a pre-norm layout; set norm_first = true with it")


class SASRec(SequentialRecommender):
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig, num_items: int):
        super().__init__(config, num_items)
        d = config.hidden_size
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        # contextual positions live in the attention, not the input; learned+cape keeps both
        cape = config.positions in ("cape", "learned+cape")
        self.positions = build_positions({"cape": "none", "learned+cape": "learned"}.get(config.positions,
                                                                                      config.positions),
                                         config.max_len, d, config.position_origin)
        self.emb_drop = Dropout(config.dropout)
        self.emb_norm = nn.LayerNorm(d) if config.embedding_norm else nn.Identity()
        attn_drop = config.dropout if config.attn_dropout < 0 else config.attn_dropout
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.num_heads, config.ff_size or 4 * d, config.dropout, attn_drop,
                             config.norm_first, config.activation,
                             CAPE(d // config.num_heads, config.max_len + 1) if cape else None,
                             inner_dropout=config.ff_inner_dropout,
                             residual_from_norm=config.residual_from_norm)
            for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.out_emb = None if config.tie_embeddings else nn.Embedding(num_items + 1, d, padding_idx=0)
        init_normal(self, config.init_std)

    def embed(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block input (item + position embeddings, padding zeroed) and the (B, L, 1) validity mask.

        Shared with models built on this backbone (ReaRec) so the two passes cannot drift apart.
        """
        x = self.item_emb(items)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.hidden_size)
        x = self.emb_drop(self.emb_norm(x + self.positions(items)))
        valid = (items > 0).unsqueeze(-1)
        return x * valid, valid

    def encode(self, batch: Batch) -> torch.Tensor:
        return self._encode(batch, last_only=False)

    def encode_last(self, batch: Batch) -> torch.Tensor:
        """The last position only: the final block skips every other query, which in prefix
        training, evaluation and serving is work whose output nobody reads."""
        if type(self).encode is not SASRec.encode:  # a subclass with its own encoder
            return super().encode_last(batch)
        return self._encode(batch, last_only=True)[:, -1]

    def _encode(self, batch: Batch, last_only: bool) -> torch.Tensor:
        items = batch["items"]
        x, valid = self.embed(items)
        mask = attention_mask(items, causal=True)
        for i, block in enumerate(self.blocks):
            final = last_only and i == len(self.blocks) - 1
            x = block(x, mask, last_only=final) * (valid[:, -1:] if final else valid)
        return self.final_norm(x)

    def item_embeddings(self) -> torch.Tensor:
        return (self.out_emb or self.item_emb).weight
