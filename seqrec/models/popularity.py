"""Popularity: recommend the most frequent training items. The floor every table shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqrec.models.base import Batch, SequentialRecommender


@dataclass
class PopularityConfig:
    max_len: int = 50  # only how much history is kept for masking seen items


class Popularity(SequentialRecommender):
    config_class = PopularityConfig
    trainable = False

    def __init__(self, config: PopularityConfig, num_items: int):
        super().__init__(config, num_items)
        self.register_buffer("counts", torch.zeros(num_items + 1))

    def fit_statistics(self, train_sequences: list[np.ndarray]) -> None:
        counts = np.bincount(np.concatenate(train_sequences), minlength=self.num_items + 1).astype(np.float32)
        counts[0] = 0
        self.counts.copy_(torch.from_numpy(counts))

    def score(self, batch: Batch) -> torch.Tensor:
        return self.counts.expand(batch["items"].shape[0], -1).clone()
