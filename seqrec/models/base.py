"""The model contract shared by every recommender in seqrec.

A model encodes a left-padded batch of histories into hidden states (B, L, D) and exposes the
item table that scores them. Losses live outside the model; `training_loss` only wires the
model's outputs to the loss it is given, so a model with another objective (Cloze, contrastive)
overrides that one method. Models that do not score by a dot product override `score`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class SequentialRecommender(nn.Module):
    """Base class: subclasses set `config_class` and implement `encode` and `item_embeddings`."""

    config_class: ClassVar[type]
    trainable: ClassVar[bool] = True  # False: fitted from counts by `fit_statistics`, no gradient steps

    def __init__(self, config: Any, num_items: int):
        super().__init__()
        self.config = config
        self.num_items = num_items

    @property
    def max_len(self) -> int:
        return int(getattr(self.config, "max_len", 50))

    def encode(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """(num_items + 1, D); row 0 is padding and is never recommended."""
        raise NotImplementedError

    def encode_last(self, batch: Batch) -> torch.Tensor:
        """(B, D): the last position's hidden state only. Models that can skip the other
        positions' work in their final layer override this (SASRec); the default encodes all."""
        return self.encode(batch)[:, -1]

    def user_representation(self, batch: Batch) -> torch.Tensor:
        """(B, D): the hidden state that predicts the next item (the last position)."""
        return self.encode_last(batch)

    def score(self, batch: Batch) -> torch.Tensor:
        """(B, num_items + 1) scores for the next item of each history."""
        return self.user_representation(batch) @ self.item_embeddings().T

    def training_loss(self, batch: Batch, loss: nn.Module) -> torch.Tensor:
        """Next-item loss over every non-padding position of the batch."""
        targets = batch["targets"]
        mask = targets > 0
        if only_last_targets(targets):
            last = mask[:, -1]
            return loss(self.encode_last(batch)[last], targets[:, -1][last], self.item_embeddings())
        return loss(self.encode(batch)[mask], targets[mask], self.item_embeddings())

    def fit_statistics(self, train_sequences: list[np.ndarray]) -> None:
        """Count-based models fill their buffers here; neural models need nothing."""


def only_last_targets(targets: torch.Tensor) -> bool:
    """True for a prefix-augmented batch: no position but the last has a target, so a model may
    compute the last position only (`encode_last`)."""
    return not (targets[:, :-1] > 0).any()


def padding_mask(items: torch.Tensor) -> torch.Tensor:
    """(B, L) True where there is a real item."""
    return items > 0
