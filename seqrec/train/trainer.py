"""The training loop shared by every trainable model.

Model selection reads the validation set only; the best state is kept in memory and on disk
(`model.safetensors`), and `train_state.pt` (tensors only, loaded with weights_only=True) lets
an interrupted run resume where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.batches import TrainBatches
from seqrec.data.split import SplitData
from seqrec.errors import ConfigError
from seqrec.evaluate.ranking import evaluate
from seqrec.losses import build_loss
from seqrec.models.base import SequentialRecommender


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    epochs_run: int = 0
    stopped: str = ""


def scheduled_lr(cfg: TrainConfig, step: int, epoch_progress: float, time_progress: float) -> float:
    """Learning rate after `step` optimiser steps; progress is the larger of epochs and budget used."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = min(1.0, max(epoch_progress, time_progress))
    shape = 1.0 - progress if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape)


class Trainer:
    def __init__(self, model: SequentialRecommender, split: SplitData, cfg: TrainConfig,
                 eval_cfg: EvalConfig | None = None, run_dir: Path | None = None,
                 log: Callable[[str], None] = print):
        self.model = model
        self.split = split
        self.cfg = cfg
        self.eval_cfg = eval_cfg or EvalConfig()
        self.run_dir = Path(run_dir) if run_dir else None
        self.log = log
        self.device = resolve_device(cfg.device)
        self.autocast = cfg.amp and self.device.type == "cuda"  # evaluation: cuda only
        self.train_autocast = self.autocast or (cfg.cpu_amp and self.device.type == "cpu")
        metric = cfg.valid_metric.lower()
        k = int(metric.split("@")[1]) if "@" in metric else 10
        if k not in self.eval_cfg.ks:
            self.eval_cfg = dataclasses.replace(self.eval_cfg, ks=sorted({*self.eval_cfg.ks, k}))
        self.valid_metric = metric

    def validate(self) -> dict[str, float]:
        return evaluate(self.model, self.split.valid, self.eval_cfg.ks, mask_seen=self.eval_cfg.mask_seen,
                        batch_size=self.eval_cfg.batch_size, device=self.device, autocast=self.autocast)

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        model = self.model.to(self.device)
        if not model.trainable:
            start = time.perf_counter()
            model.fit_statistics(self.split.train)
            model.to(self.device)
            valid = self.validate()
            self.log(f"fitted {type(model).__name__} from counts; valid {self._fmt(valid)}")
            return TrainResult(0, valid, [{"epoch": 0, **valid}], time.perf_counter() - start, 0, "count-based model")

        # trainable models may use training-set statistics too (e.g. MQSA-TED's transitions);
        # the default `fit_statistics` does nothing
        model.fit_statistics(self.split.train)
        model.to(self.device)
        counts = self.split.item_counts()
        try:
            loss_fn = build_loss(cfg.loss, model.num_items, counts, cfg.negatives, cfg.negative_sampler,
                                 cfg.logq_correction, cfg.gbce_t).to(self.device)
        except ValueError as e:
            raise ConfigError(f"[train]: {e}") from None
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        batches = TrainBatches(self.split.train, self.split.train_times, model.max_len, cfg.batch_size,
                               cfg.window, cfg.seed, prefixes=cfg.prefix_augmentation)
        if batches.num_sequences() == 0:
            raise ConfigError("no training sequence has 2 or more items; the data is too short to train on")

        result = TrainResult(best_epoch=-1, best_valid={})
        best_score, best_state, bad_evals, first_epoch, elapsed_before = -math.inf, None, 0, 1, 0.0
        if resume:
            state = self._load_state(optimizer)
            if state is not None:
                first_epoch = state["epoch"] + 1
                result.history = state["history"]
                best_score, bad_evals = state["best_score"], state["bad_evals"]
                result.best_epoch = state["best_epoch"]
                result.best_valid = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
                best_state = state["best_state"]
                elapsed_before = state["elapsed"]
                batches.rng = np.random.default_rng(cfg.seed + first_epoch)
                self.log(f"resumed after epoch {state['epoch']} (best so far: epoch {result.best_epoch})")
        start = time.perf_counter() - elapsed_before
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
        result.stopped = f"reached {cfg.epochs} epochs"
        epoch = first_epoch - 1
        step = (first_epoch - 1) * len(batches)
        for epoch in range(first_epoch, cfg.epochs + 1):
            model.train()
            total, n_batches, seen = 0.0, 0, 0
            t0 = time.perf_counter()
            bar = tqdm(batches, total=len(batches), desc=f"epoch {epoch}", disable=cfg.quiet, leave=False)
            for batch in bar:
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.train_autocast):
                    loss = model.training_loss(batch, loss_fn)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                step += 1
                lr = scheduled_lr(cfg, step, (epoch - 1 + n_batches / len(batches)) / cfg.epochs,
                              (time.perf_counter() - start) / (deadline - start))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                total += float(loss.detach())
                n_batches += 1
                seen += batch["items"].shape[0]
                if n_batches % 10 == 0:
                    bar.set_postfix(loss=f"{total / n_batches:.4f}", examples_s=f"{seen / (time.perf_counter() - t0):.0f}")
                if time.perf_counter() > deadline:
                    break
            epoch_time = time.perf_counter() - t0
            # sequences: users' training sequences covered per second, comparable with and without
            # prefix augmentation; examples: batch rows (prefixes, when augmented) per second
            covered = batches.num_sequences() * n_batches / max(1, len(batches))
            row = {"epoch": epoch, "loss": total / max(1, n_batches), "epoch_seconds": epoch_time,
                   "sequences_per_second": covered / max(epoch_time, 1e-9),
                   "examples_per_second": seen / max(epoch_time, 1e-9)}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or time.perf_counter() > deadline:
                valid = self.validate()
                row.update(valid)
                score = valid.get(self.valid_metric)
                if score is None:
                    raise ConfigError(f"train.valid_metric '{cfg.valid_metric}' is not a metric; use e.g. ndcg@10")
                improved = score > best_score
                if improved:
                    best_score, bad_evals = score, 0
                    result.best_epoch, result.best_valid = epoch, valid
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if self.run_dir:
                        save_file({k: v.contiguous().cpu() for k, v in best_state.items()},
                                  str(self.run_dir / "model.safetensors"))
                else:
                    bad_evals += 1
                self.log(f"epoch {epoch:3d}  loss {row['loss']:.4f}  {epoch_time:5.1f}s  "
                         f"{row['sequences_per_second']:.0f} seq/s  valid {self._fmt(valid)}{'  *' if improved else ''}")
            result.history.append(row)
            if self.run_dir:
                self._save_state(optimizer, epoch, result, best_score, bad_evals, best_state,
                                 time.perf_counter() - start)
            if bad_evals >= cfg.patience:
                result.stopped = f"early stop: no validation gain for {cfg.patience} evaluations"
                break
            if time.perf_counter() > deadline:
                result.stopped = f"time budget of {cfg.max_minutes} minutes reached"
                break
        result.epochs_run = epoch
        result.train_seconds = time.perf_counter() - start
        if best_state is not None:
            model.load_state_dict(best_state)
        self.log(f"{result.stopped}; best epoch {result.best_epoch} "
                 f"({self.valid_metric} {best_score:.4f}), {result.train_seconds:.0f}s of training")
        return result

    def _fmt(self, metrics: dict[str, float]) -> str:
        keys = [k for k in ("hr@10", "ndcg@10", self.valid_metric) if k in metrics]
        return "  ".join(f"{k} {metrics[k]:.4f}" for k in dict.fromkeys(keys))

    def _save_state(self, optimizer, epoch, result, best_score, bad_evals, best_state, elapsed) -> None:
        state = {
            "epoch": epoch, "history": result.history, "best_score": best_score, "bad_evals": bad_evals,
            "best_epoch": result.best_epoch, "best_state": best_state, "elapsed": elapsed,
            "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
        }
        tmp = self.run_dir / "train_state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.run_dir / "train_state.pt")

    def _load_state(self, optimizer) -> dict | None:
        path = self.run_dir / "train_state.pt" if self.run_dir else None
        if path is None or not path.exists():
            self.log("nothing to resume from; training from scratch")
            return None
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return state
