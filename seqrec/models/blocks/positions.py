"""Position encodings for right-aligned (left-padded) sequences.

Slot L-1 always holds the most recent item, so a learned absolute table indexed by slot is
also a recency encoding. When a batch is trimmed to length Lb < max_len, it uses slots
max_len-Lb .. max_len-1, exactly as the untrimmed batch would.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, hidden: int):
        super().__init__()
        self.max_len = max_len
        self.table = nn.Embedding(max_len, hidden)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        length = items.shape[1]
        if length > self.max_len:
            raise ValueError(f"batch length {length} exceeds max_len {self.max_len}")
        slots = torch.arange(self.max_len - length, self.max_len, device=items.device)
        return self.table(slots)[None]


class NoPositions(nn.Module):
    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=items.device)


def build_positions(kind: str, max_len: int, hidden: int) -> nn.Module:
    if kind == "learned":
        return LearnedPositions(max_len, hidden)
    if kind == "none":
        return NoPositions()
    raise ValueError(f"unknown positions '{kind}'; use learned or none")
