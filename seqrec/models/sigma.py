"""SIGMA (Liu et al., AAAI 2025, "Selective Gated Mamba for Sequential Recommendation").

Each G-Mamba layer mixes three views of the sequence:
- PF-Mamba: a Mamba over the sequence and a Mamba over its *partial flip* — the first n - r items
  reversed, the last r kept in order — so the final state has seen every item in both directions
  while the most recent r items still arrive last, in their true order;
- a dense selective gate per direction, g = Dropout(W_a SiLU(h) + W_b σ(h)) with h = x + Dense(x),
  applied as m ⊙ g + m;
- FE-GRU: a GRU over a width-3 convolution of the input, for short-term preferences;
then mixes them with learned scalar weights, projects, adds the residual and LayerNorm, and a
position-wise feed-forward follows (as in the authors' code).

Left padding: padding never reaches a real position — inputs are zeroed at padding before every
convolution and the scan, Δ is zero there (blocks/ssm.py), and the GRU has no bias, so a zero
input keeps its zero state. The flip permutes only real positions (padding stays on the left,
real items stay right-aligned), and the flip is computed per sequence from its own length.

Training. The flipped branch lets position t see items after t, so the base class's "every
position predicts its next item" loss would leak the targets. SIGMA is trained, as in the authors'
RecBole setup, on prefixes: every position t of a training window becomes its own sequence
s_1..s_t (right-aligned), encoded on its own, and only its last output predicts s_{t+1}
(`train_on = "prefixes"`, the default). `train_on = "last"` trains only each window's final
position (cheaper, fewer examples per epoch). Only the last position of `encode` is a prediction.

Choices the paper leaves open or where we differ from the authors' code, with the reason:
- r = `unflipped_last` (default 5: the code flips 45 of its 50 positions). The code flips fixed
  slots of right-padded tensors, which for short histories flips padding; we flip each history's
  own first n - r items.
- the backward output is flipped back before mixing (`realign_backward`), so each slot mixes views
  of the same item; the code mixes slot-wise without flipping back. The last r slots are the same
  either way.
- the code computes the second gate from h1 in one term (a typo, we use h2) and applies the
  width-3 conv twice with the second result unused (we apply it once).
- Mamba's own initialisation (A, Δ bias, D) is kept; the code's global re-init zeroes the Δ bias.
- one Mamba is shared by both directions (`share_mamba`, as in the code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.base import Batch, SequentialRecommender
from seqrec.models.blocks.dropout import Dropout
from seqrec.models.blocks.ssm import MambaBlock


@dataclass
class SIGMAConfig:
    max_len: int = 50
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.2
    gate_dropout: float = 0.2
    d_state: int = 32
    d_conv: int = 4
    expand: int = 2
    unflipped_last: int = 5  # r: the most recent r items are not flipped
    share_mamba: bool = True  # one Mamba for both directions, as in the authors' code
    realign_backward: bool = True  # flip the backward output back before mixing
    gru_conv_kernel: int = 3  # odd width of the convolution in front of the GRU
    ff_size: int = 0  # 0 = 4 × hidden_size
    train_on: str = "prefixes"  # prefixes | last (see the module docstring)
    prefix_chunk: int = 1024  # prefixes encoded together (bounds memory of the scan)
    init_std: float = 0.02

    def validate(self) -> None:
        if self.max_len < 1 or self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError("max_len, hidden_size and num_layers must be positive")
        if self.d_state < 1 or self.d_conv < 1 or self.expand < 1:
            raise ValueError("d_state, d_conv and expand must be positive")
        if self.unflipped_last < 0:
            raise ValueError("unflipped_last (r) must be >= 0")
        if self.gru_conv_kernel < 1 or self.gru_conv_kernel % 2 == 0:
            raise ValueError(f"gru_conv_kernel must be a positive odd number, got {self.gru_conv_kernel}")
        if self.train_on not in ("prefixes", "last"):
            raise ValueError(f"train_on = {self.train_on!r}; use prefixes or last")
        if self.prefix_chunk < 1:
            raise ValueError("prefix_chunk must be at least 1")
        for name in ("dropout", "gate_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")


def partial_flip_index(valid: torch.Tensor, keep_last: int) -> torch.Tensor:
    """(B, L) gather index that reverses each row's first n - r real items (n = its length).

    Left-padded rows hold s_1..s_n in slots L-n..L-1; slot j of the flipped row takes slot
    2(L-n) + (n-r) - 1 - j for the flipped part, itself elsewhere (padding and the last r items).
    The permutation is its own inverse, so the same index flips outputs back.
    """
    length = valid.shape[1]
    n = valid.sum(1, keepdim=True)
    start = length - n
    flip_len = (n - keep_last).clamp_min(0)
    j = torch.arange(length, device=valid.device)[None]
    in_flip = (j >= start) & (j < start + flip_len)
    return torch.where(in_flip, 2 * start + flip_len - 1 - j, j)


class SelectiveGate(nn.Module):
    """g = Dropout(W_a SiLU(h) + W_b σ(h)), h = x + Dense(x); the gate weights W_a, W_b are
    shared by both directions, each direction has its own Dense (as in the authors' code)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.w_silu = nn.Linear(hidden, hidden)
        self.w_sigmoid = nn.Linear(hidden, hidden)
        self.drop = Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w_silu(F.silu(h)) + self.w_sigmoid(torch.sigmoid(h)))


class GMambaBlock(nn.Module):
    def __init__(self, cfg: SIGMAConfig):
        super().__init__()
        d = cfg.hidden_size
        self.cfg = cfg
        self.mamba = MambaBlock(d, cfg.d_state, cfg.d_conv, cfg.expand)
        # None when shared, so the shared weights are stored once in the state dict
        self.mamba_back = None if cfg.share_mamba else MambaBlock(d, cfg.d_state, cfg.d_conv, cfg.expand)
        self.dense_fwd = nn.Linear(d, d)
        self.dense_back = nn.Linear(d, d)
        self.gate = SelectiveGate(d, cfg.gate_dropout)
        self.conv = nn.Conv1d(d, d, cfg.gru_conv_kernel, padding=cfg.gru_conv_kernel // 2)
        self.gru = nn.GRU(d, d, num_layers=1, bias=False, batch_first=True)
        self.mix = nn.Parameter(torch.tensor([0.8, 0.1, 0.1]))  # forward, flipped, GRU (authors' init)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        keep = valid.unsqueeze(-1).to(x.dtype)
        index = flip.unsqueeze(-1).expand_as(x)
        x_flip = x.gather(1, index)
        fwd = self.mamba(x, valid)
        back = (self.mamba_back or self.mamba)(x_flip, valid)
        fwd = fwd * self.gate(x + self.dense_fwd(x)) + fwd
        back = back * self.gate(x_flip + self.dense_back(x_flip)) + back
        if self.cfg.realign_backward:
            back = back.gather(1, index)
        conv = self.conv((x * keep).transpose(1, 2)).transpose(1, 2) * keep
        gru, _ = self.gru(conv)
        mixed = self.mix[0] * fwd + self.mix[1] * back + self.mix[2] * gru
        return self.proj(mixed) * keep


class SIGMALayer(nn.Module):
    def __init__(self, cfg: SIGMAConfig):
        super().__init__()
        d = cfg.hidden_size
        self.residual = cfg.num_layers > 1  # the authors' code (after Mamba4Rec): no residual for one layer
        self.gmamba = GMambaBlock(cfg)
        self.drop = Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_size or 4 * d), nn.GELU(), Dropout(cfg.dropout),
                                nn.Linear(cfg.ff_size or 4 * d, d), Dropout(cfg.dropout))
        self.ff_norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.gmamba(x, valid, flip))
        h = self.norm(h + x if self.residual else h)
        h = self.ff_norm(self.ff(h) + h)
        return h * valid.unsqueeze(-1).to(h.dtype)


class SIGMA(SequentialRecommender):
    config_class = SIGMAConfig

    def __init__(self, config: SIGMAConfig, num_items: int):
        super().__init__(config, num_items)
        d = config.hidden_size
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.emb_drop = Dropout(config.dropout)
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(SIGMALayer(config) for _ in range(config.num_layers))
        self._init_weights()

    def _init_weights(self) -> None:
        """Normal(0, init_std) for embeddings and linear layers outside the Mamba mixers, whose
        own initialisation (Δ bias, A, D) matters and is kept."""
        ssm_params = {id(p) for m in self.modules() if isinstance(m, MambaBlock) for p in m.parameters()}
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding) and id(module.weight) not in ssm_params:
                nn.init.normal_(module.weight, std=self.config.init_std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, batch: Batch) -> torch.Tensor:
        """(B, L, D). Only the last position is a next-item prediction (the flipped branch lets
        earlier positions see later items); it never depends on padding."""
        items = batch["items"]
        if items.shape[1] > self.config.max_len:
            raise ValueError(f"batch length {items.shape[1]} exceeds max_len {self.config.max_len}")
        valid = items > 0
        keep = valid.unsqueeze(-1)
        x = self.emb_norm(self.emb_drop(self.item_emb(items))) * keep
        flip = partial_flip_index(valid, self.config.unflipped_last)
        for layer in self.layers:
            x = layer(x, valid, flip)
        return x

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight

    def training_loss(self, batch: Batch, loss: nn.Module) -> torch.Tensor:
        items, targets = batch["items"], batch["targets"]
        if self.config.train_on == "last":
            hidden = self.encode({"items": items})[:, -1]
            target = targets[:, -1]
            keep = target > 0
            return loss(hidden[keep], target[keep], self.item_embeddings())
        rows, ends = torch.nonzero(targets > 0, as_tuple=True)
        prefixes = expand_prefixes(items, rows, ends)
        lengths = (prefixes > 0).sum(1)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for start in range(0, len(order), self.config.prefix_chunk):
            idx = order[start : start + self.config.prefix_chunk]
            width = max(1, int(lengths[idx].max()))
            parts.append((idx, self.encode({"items": prefixes[idx, -width:]})[:, -1]))
        hidden = torch.cat([h for _, h in parts])
        target = targets[rows, ends][torch.cat([i for i, _ in parts])]
        return loss(hidden, target, self.item_embeddings())


def expand_prefixes(items: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """(P, L): row p is items[rows[p], :ends[p] + 1], right-aligned (left-padded with 0)."""
    length = items.shape[1]
    shift = (length - 1 - ends)[:, None]
    src = torch.arange(length, device=items.device)[None] - shift
    out = items[rows[:, None], src.clamp_min(0)]
    return out * (src >= 0)
