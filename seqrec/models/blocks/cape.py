"""CAPE: contextual-aware position encoding (Yuan, Cai & Dong, WWW 2025 companion, arXiv 2502.09027).

CAPE follows CoPE (Golovneva et al. 2024, "Contextual Position Encoding"): instead of a fixed
slot index, the position of key j seen from query i is a *count* of gates over the items
between them, so positions depend on the content. CoPE counts similarity, g = sigmoid(q·k);
CAPE counts *dissimilarity*, g = 1 - sigmoid(q·k), so a run of near-identical interactions
(the same item category, re-views) advances the position little and a change of interest
advances it a lot. The fractional position p_ij is turned into an attention-logit term by
linear interpolation between the two neighbouring integer position vectors:

    g_ik = 1 - sigmoid(q_i·k_k / sqrt(d))          (zero for keys the mask hides)
    p_ij = sum of g_ik over k between j and i (inclusive)
    z_ij = q_i·e[floor p_ij] * (1 - frac p_ij) + q_i·e[ceil p_ij] * frac p_ij
    attention logits: q_i·k_j / sqrt(d) + z_ij

Choices the paper leaves open, made here:
- gates use the scaled logits (the ones the softmax sees);
- keys hidden by the attention mask (padding, the future in causal models) contribute no gate,
  so a causal model never counts future items and padding never shifts positions;
- for bidirectional attention (BERT4Rec) the count runs over the items between i and j on
  whichever side j lies, so p_ij is a symmetric content-aware distance;
- one table of position vectors per layer, shared by the heads (as in CoPE), of head size,
  with `max_len + 1` rows; positions beyond the table are clamped to its last row;
- the table starts at zero (as in the released CoPE and CAPE code), so a fresh model attends
  exactly as one without positions and learns how much order matters.
"""

from __future__ import annotations

import torch
from torch import nn


class CAPE(nn.Module):
    """Per-layer contextual position term added to attention logits; see the module docstring."""

    def __init__(self, head_dim: int, max_positions: int):
        super().__init__()
        if max_positions < 1:
            raise ValueError("CAPE needs at least one position")
        self.max_positions = max_positions
        self.table = nn.Parameter(torch.zeros(head_dim, max_positions))

    def positions(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, H, L, L) fractional positions p_ij from scaled logits and the boolean mask."""
        gates = (1.0 - torch.sigmoid(logits)) * mask
        cum = gates.cumsum(-1)
        diag = cum.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # C_ii
        length = logits.shape[-1]
        idx = torch.arange(length, device=logits.device)
        before = (idx[None, :] <= idx[:, None])  # (L, L): key j at or before query i
        # j <= i: C_ii - C_ij + g_ij ; j > i: C_ij - C_ii + g_ii
        g_diag = gates.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
        return torch.where(before, diag - cum + gates, cum - diag + g_diag)

    def forward(self, q: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, H, L, L) logit term z_ij for queries q (B, H, L, dh), scaled logits and mask."""
        pos = self.positions(logits, mask).clamp(max=self.max_positions - 1)
        lower = pos.floor()
        frac = pos - lower
        lower = lower.long()
        upper = (lower + 1).clamp(max=self.max_positions - 1)
        scores = q @ self.table  # (B, H, L, P): q_i · e[p] for every integer p
        return scores.gather(-1, lower) * (1.0 - frac) + scores.gather(-1, upper) * frac
