"""ReaRec (Tang et al. 2025, "Think Before Recommend"): latent multi-step reasoning on SASRec.

After the usual causal pass, the last hidden state of a position is fed back into the same
transformer as a new input token, K times, each time plus a dedicated *reasoning position
embedding* (RPE) that keeps the reasoning space apart from the item space. A reasoning token
attends to the items up to its own position (their keys and values are cached from the item
pass) and to the earlier reasoning tokens of the same position.

Two training methods, `method` in the config:
- **ERL** (ensemble reasoning learning): every step's output h_0..h_K is supervised with the
  next-item loss, and a KL regulariser pushes the steps' item distributions apart
  (loss − kl_weight · mean pairwise KL(p_j ‖ sg p_i), the gradient flowing through p_j only, as
  in the authors' code); the user representation is the mean of h_0..h_K. The KL is taken over
  the batch's targets plus `kl_items` uniformly drawn items (0 = the whole catalogue): on a
  12k-item catalogue the exact term cost 4x the rest of a training step on CPU.
- **PRL** (progressive reasoning learning): step k is supervised at temperature
  τ·temp_scale^(K−k), so early steps learn a smooth distribution and the last a sharp one
  (progressive temperature annealing); reasoning-aware contrastive learning adds Gaussian noise
  (std noise_factor) to the fed-back reasoning inputs and asks each noisy step output to
  identify its clean counterpart among the batch (InfoNCE at temperature τ). The
  representation is h_K.

Choices the paper leaves open, made here:
- Training supervises reasoning at *every* position of a window (the paper trains on every
  prefix as a separate sample; one pass with per-position reasoning chains is the same set of
  examples, computed at once). Inference reasons from the last position only.
- With the pre-norm backbone the fed-back state is the last block's residual stream (before the
  final LayerNorm), which has the scale of the input embeddings; each step's *output* (what
  scores items) is the final-normed state, as in SASRec.
- The noisy PRL view reuses the clean item pass (same dropout mask); only the reasoning chain is
  re-run with noise. The authors' warm-up epochs before adding noise are not used: the model
  does not see epochs.
- `temperature` defaults to 1.0 (the authors use 0.07 on their post-norm backbone); at 1.0 and
  K = 0 the model is exactly SASRec, so comparisons isolate the reasoning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.base import Batch, only_last_targets
from seqrec.models.blocks.attention import TransformerBlock, attention_mask
from seqrec.models.blocks.dropout import Dropout
from seqrec.models.blocks.init import init_normal
from seqrec.models.sasrec import SASRec, SASRecConfig

Cache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ReaRecConfig(SASRecConfig):
    method: str = "erl"  # erl | prl
    reasoning_steps: int = 2  # K
    temperature: float = 1.0  # τ: logits = h·e / τ
    kl_weight: float = 0.05  # ERL: weight of the (subtracted) pairwise KL diversity term
    kl_items: int = 1024  # ERL: KL over the batch targets + this many uniform items; 0 = whole catalogue
    temp_scale: float = 5.0  # PRL: step k uses τ · temp_scale^(K − k)
    pl_weight: float = 1.0  # PRL: weight of the losses of steps 0..K−1 (step K has weight 1)
    noise_factor: float = 0.01  # PRL: std of the Gaussian noise on reasoning inputs
    cl_weight: float = 1.0  # PRL: weight of the reasoning-aware contrastive loss

    def validate(self) -> None:
        super().validate()
        if self.residual_from_norm:
            raise ValueError("ReaRec's reasoning blocks do not implement residual_from_norm; set residual_from_norm = false")
        if self.positions == "cape":
            raise ValueError("ReaRec's reasoning attention does not implement CAPE; use positions = learned or none")
        if self.method not in ("erl", "prl"):
            raise ValueError(f"method = {self.method!r}; use erl or prl")
        if self.reasoning_steps < 0:
            raise ValueError("reasoning_steps must be 0 or more")
        if self.temperature <= 0 or self.temp_scale <= 0:
            raise ValueError("temperature and temp_scale must be positive")
        for name in ("kl_weight", "kl_items", "pl_weight", "noise_factor", "cl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")


class ReaRec(SASRec):
    """SASRec backbone (same parameters, same item pass) plus K reasoning steps."""

    config_class = ReaRecConfig

    def __init__(self, config: ReaRecConfig, num_items: int):
        super().__init__(config, num_items)
        d = config.hidden_size
        self.reason_pos = nn.Embedding(max(1, config.reasoning_steps), d)
        attn_drop = config.dropout if config.attn_dropout < 0 else config.attn_dropout
        self.attn_drop = Dropout(attn_drop)
        init_normal(self.reason_pos, config.init_std)

    # --- the reasoning trajectory -------------------------------------------------------------

    def _item_pass(self, items: torch.Tensor, last_only: bool = False) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """SASRec's causal pass; returns the last residual stream (every position, or the last
        one only: the final block then skips the other queries) and each block's item keys/values."""
        x, valid = self.embed(items)
        mask = attention_mask(items, causal=True)
        caches = []
        for i, block in enumerate(self.blocks):
            caches.append(self._keys_values(block, x))
            final = last_only and i == len(self.blocks) - 1
            x = block(x, mask, last_only=final) * (valid[:, -1:] if final else valid)
        return x, caches

    def _keys_values(self, block: TransformerBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = block.norm1(x) if block.norm_first else x
        _, k, v = self._split_heads(block, h)
        return k, v

    @staticmethod
    def _split_heads(block: TransformerBlock, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, length, d = h.shape
        heads = block.attn.heads
        qkv = block.attn.qkv(h).view(b, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (B, H, L, D/H)

    def _reason_attention(self, block: TransformerBlock, h: torch.Tensor, item_kv: tuple[torch.Tensor, torch.Tensor],
                          chain: Cache, item_mask: torch.Tensor) -> torch.Tensor:
        """Attention of one reasoning token per position over that position's items and chain."""
        q, k, v = self._split_heads(block, h)
        chain.append((k, v))
        scale = 1.0 / math.sqrt(q.shape[-1])
        k_items, v_items = item_kv
        s_items = (q @ k_items.transpose(-1, -2)) * scale  # (B, H, P, L)
        s_items = s_items.masked_fill(~item_mask, float("-inf"))
        s_chain = torch.stack([(q * kc).sum(-1) * scale for kc, _ in chain], dim=-1)  # (B, H, P, j)
        probs = self.attn_drop(torch.softmax(torch.cat([s_items, s_chain], dim=-1), dim=-1))
        length = k_items.shape[2]
        out = probs[..., :length] @ v_items
        for c, (_, vc) in enumerate(chain):
            out = out + probs[..., length + c, None] * vc
        b, heads, p, dh = out.shape
        return block.attn.out(out.transpose(1, 2).reshape(b, p, heads * dh))

    def _reason_block(self, block: TransformerBlock, r: torch.Tensor, item_kv, chain: Cache,
                      item_mask: torch.Tensor) -> torch.Tensor:
        if block.norm_first:
            r = r + block.drop(self._reason_attention(block, block.norm1(r), item_kv, chain, item_mask))
            return r + block.drop(block.ff(block.norm2(r)))
        r = block.norm1(r + block.drop(self._reason_attention(block, r, item_kv, chain, item_mask)))
        return block.norm2(r + block.drop(block.ff(r)))

    def trajectory(self, batch: Batch, last_only: bool = False, noise: float = 0.0,
                   _state: tuple | None = None) -> tuple[list[torch.Tensor], tuple]:
        """Outputs h_0..h_K, each (B, P, D) with P = L (every position) or 1 (the last).

        Returns the outputs and the item-pass state, which a second (noisy) trajectory reuses.
        """
        items = batch["items"]
        if _state is None:
            x, caches = self._item_pass(items, last_only)
            _state = (x, caches)
        x, caches = _state
        mask = attention_mask(items, causal=True)  # (B, 1, L, L)
        if last_only:
            x, mask = x[:, -1:], mask[:, :, -1:]
        outputs = [self.final_norm(x)]
        chains: list[Cache] = [[] for _ in self.blocks]
        stream = x
        for step in range(self.config.reasoning_steps):
            r = stream + self.reason_pos.weight[step]
            if noise > 0:
                r = r + noise * torch.randn_like(r)
            r = self.emb_drop(self.emb_norm(r))
            for block, item_kv, chain in zip(self.blocks, caches, chains, strict=True):
                r = self._reason_block(block, r, item_kv, chain, mask)
            stream = r
            outputs.append(self.final_norm(r))
        return outputs, _state

    def _combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        if self.config.method == "erl":
            return torch.stack(outputs).mean(0)
        return outputs[-1]

    # --- the model contract --------------------------------------------------------------------

    def encode(self, batch: Batch) -> torch.Tensor:
        """(B, L, D): the reasoned representation at every position (ERL mean, PRL last step)."""
        return self._combine(self.trajectory(batch)[0])

    def user_representation(self, batch: Batch) -> torch.Tensor:
        """Reasons from the last position only: K extra single-token steps, not K full passes."""
        return self._combine(self.trajectory(batch, last_only=True)[0])[:, -1]

    def score(self, batch: Batch) -> torch.Tensor:
        return self.user_representation(batch) @ self.item_embeddings().T / self.config.temperature

    def training_loss(self, batch: Batch, loss: nn.Module) -> torch.Tensor:
        cfg = self.config
        targets = batch["targets"]
        mask = targets > 0
        last_only = only_last_targets(targets)  # prefix batches: reason from the last position only
        if last_only:
            mask = mask[:, -1:]
            targets = targets[:, -1:]
        tgt = targets[mask]
        table = self.item_embeddings()
        outputs, state = self.trajectory(batch, last_only=last_only)
        hidden = [o[mask] for o in outputs]
        steps = len(hidden)
        if cfg.method == "erl":
            total = sum(loss(h / cfg.temperature, tgt, table) for h in hidden)
            if cfg.kl_weight > 0 and steps > 1:
                total = total - cfg.kl_weight * self._diversity(hidden, self._kl_table(table, tgt))
            return total
        total = loss(hidden[-1] / cfg.temperature, tgt, table)
        for k in range(steps - 1):
            tau = cfg.temperature * cfg.temp_scale ** (steps - 1 - k)
            total = total + cfg.pl_weight * loss(hidden[k] / tau, tgt, table)
        if cfg.cl_weight > 0 and cfg.noise_factor > 0 and steps > 1:
            noisy, _ = self.trajectory(batch, last_only=last_only, noise=cfg.noise_factor, _state=state)
            labels = torch.arange(len(tgt), device=tgt.device)
            cl = sum(F.cross_entropy((n[mask] @ h.T).float() / cfg.temperature, labels)
                     for n, h in zip(noisy[1:], hidden[1:], strict=True))
            total = total + cfg.cl_weight * cl / (steps - 1)
        return total

    def _kl_table(self, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Items the KL term compares distributions over: all, or the targets plus a uniform sample."""
        if self.config.kl_items <= 0 or self.config.kl_items >= self.num_items:
            return table[1:]
        sample = torch.randint(1, self.num_items + 1, (self.config.kl_items,), device=targets.device)
        return table[torch.unique(torch.cat([targets, sample]))]

    def _diversity(self, hidden: list[torch.Tensor], table: torch.Tensor) -> torch.Tensor:
        """Mean over ordered step pairs i ≠ j of KL(p_j ‖ sg p_i), averaged over positions.

        Σ_{i≠j} KL(p_j‖sg p_i) = Σ_j Σ_n p_j [(S−1) log p_j − sg(Σ_{i≠j} log p_i)], one pass per step.
        """
        logp = [F.log_softmax((h @ table.T).float() / self.config.temperature, dim=-1) for h in hidden]
        total_logp = torch.stack([lp.detach() for lp in logp]).sum(0)
        s = len(logp)
        kl = sum((lp.exp() * ((s - 1) * lp - (total_logp - lp.detach()))).sum(-1).mean() for lp in logp)
        return kl / (s * (s - 1))
