"""Weight initialisation shared by the transformer-style models."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn


def _normal_init(module: nn.Module, std: float) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def init_normal(model: nn.Module, std: float) -> None:
    """N(0, std) for linear and embedding weights, zero biases and padding rows (BERT/RecBole style)."""
    model.apply(partial(_normal_init, std=std))
