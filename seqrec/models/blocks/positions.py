"""Position encodings for right-aligned (left-padded) sequences.

Two origins for a learned absolute table:
- "end" (SASRec's original code): slot L-1 always holds the most recent item, so the table is a
  recency encoding. When a batch is trimmed to length Lb < max_len, it uses slots
  max_len-Lb .. max_len-1, exactly as the untrimmed batch would. Under all-position training this
  is not causal-consistent: an item's position depends on how many items follow it, so a query in
  the middle of a training sequence never sits where the query sits at inference.
- "start" (RecBole, BERT): position 0 is the first item of the window, so an item's position
  depends only on its past and every training prefix is encoded as it would be at inference.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, hidden: int, origin: str = "end"):
        super().__init__()
        if origin not in ("end", "start"):
            raise ValueError(f"position origin '{origin}'; use end or start")
        self.max_len = max_len
        self.origin = origin
        self.table = nn.Embedding(max_len, hidden)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        length = items.shape[1]
        if length > self.max_len:
            raise ValueError(f"batch length {length} exceeds max_len {self.max_len}")
        if self.origin == "start":  # left padding: count valid items from the left
            slots = ((items > 0).long().cumsum(1) - 1).clamp_(min=0)
            return self.table(slots)
        slots = torch.arange(self.max_len - length, self.max_len, device=items.device)
        return self.table(slots)[None]


class NoPositions(nn.Module):
    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=items.device)


def build_positions(kind: str, max_len: int, hidden: int, origin: str = "end") -> nn.Module:
    if kind == "learned":
        return LearnedPositions(max_len, hidden, origin)
    if kind == "none":
        return NoPositions()
    raise ValueError(f"unknown positions '{kind}'; use learned or none")
