"""End to end: config → data → split → model → training → test metrics → run directory."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from seqrec.artifact import Histories, LoadedRun, load_run, save_run, save_test_ranks, write_metrics
from seqrec.config import ExperimentConfig, load_config
from seqrec.data.io import read_interactions
from seqrec.data.preprocess import PreprocessSummary, preprocess
from seqrec.data.split import SplitData, split_sequences
from seqrec.data.vocab import Sequences, Vocab, build_sequences
from seqrec.errors import ConfigError
from seqrec.evaluate.metrics import standard_errors
from seqrec.evaluate.ranking import evaluate, evaluate_with_ranks
from seqrec.models.registry import build_model
from seqrec.train.trainer import Trainer, resolve_device


@dataclass
class PreparedData:
    vocab: Vocab
    sequences: Sequences
    split: SplitData
    summary: PreprocessSummary


def resolve_data_path(cfg: ExperimentConfig, data_dir: str | Path | None) -> Path:
    if not cfg.data.path:
        raise ConfigError("[data] needs a 'path' to the interaction log")
    path = Path(cfg.data.path).expanduser()
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir) / path
    return path


def prepare_data(cfg: ExperimentConfig, data_dir: str | Path | None = None, log=print) -> PreparedData:
    d = cfg.data
    df = read_interactions(resolve_data_path(cfg, data_dir), d.format, d.user_col, d.item_col, d.time_col,
                           d.separator)
    df, summary = preprocess(df, drop_duplicates=d.drop_duplicates, dedupe_consecutive=d.dedupe_consecutive,
                             min_user_interactions=d.min_user_interactions,
                             min_item_interactions=d.min_item_interactions, min_history=d.min_history)
    log(summary.format())
    vocab = Vocab.from_interactions(df)
    seqs = build_sequences(df, vocab)
    split = make_split(cfg, seqs, vocab.num_items)
    log(split.summary())
    return PreparedData(vocab, seqs, split, summary)


def make_split(cfg: ExperimentConfig, seqs: Sequences, num_items: int) -> SplitData:
    d = cfg.data
    split = split_sequences(seqs, d.split, cutoff=d.temporal_cutoff, quantile=d.temporal_quantile,
                            valid_fraction=d.valid_fraction, seed=cfg.train.seed)
    split.num_items = num_items
    return split


def _eval_kwargs(cfg: ExperimentConfig, device, split: SplitData) -> dict:
    e = cfg.eval
    return dict(ks=e.ks, mask_seen=e.mask_seen, batch_size=e.batch_size, device=device,
                autocast=cfg.train.amp and device.type == "cuda", item_counts=split.item_counts())


def test_metrics(cfg: ExperimentConfig, model, split: SplitData, device) -> tuple[dict, np.ndarray]:
    """Test metrics (full ranking, plus sampled when asked), their standard errors over users, and
    each test user's rank."""
    kw = _eval_kwargs(cfg, device, split)
    full, ranks = evaluate_with_ranks(model, split.test, **kw)
    out = {"test": full, "test_se": standard_errors(ranks, cfg.eval.ks)}
    if cfg.eval.sampled:
        out["test_sampled"] = evaluate(model, split.test, sampled=True, num_sampled=cfg.eval.num_sampled,
                                       sampled_strategy=cfg.eval.sampled_strategy, **kw)
    return out, ranks


def _save_ranks(run_dir: Path, cfg: ExperimentConfig, split: SplitData, users: list[str], vocab: Vocab,
                ranks: np.ndarray) -> None:
    save_test_ranks(run_dir, [users[i] for i in split.test.users], vocab.decode(split.test.targets), ranks,
                    cfg.eval.mask_seen)


def train(config: ExperimentConfig | str | Path, data_dir: str | Path | None = None, runs_dir: str | Path = "runs",
          run_name: str | None = None, overrides: list[str] | None = None, resume: str | Path | None = None,
          log=print) -> Path:
    """Train and evaluate one experiment; returns the run directory."""
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config, overrides)
    if resume:
        run_dir = Path(resume)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(runs_dir) / (run_name or f"{cfg.name or cfg.model_name}-{stamp}")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"run directory {run_dir} already exists; choose another --name or use --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = (run_dir / "train.log").open("a")

    def tee(msg: str) -> None:
        if not cfg.train.quiet:
            log(msg)
        log_file.write(msg + "\n")
        log_file.flush()

    try:
        t0 = time.perf_counter()
        data = prepare_data(cfg, data_dir, tee)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model_name, cfg.model, data.vocab.num_items)
        params = sum(p.numel() for p in model.parameters())
        tee(f"model {cfg.model_name}: {params:,} parameters; {data.vocab.num_items:,} items")
        trainer = Trainer(model, data.split, cfg.train, cfg.eval, run_dir, tee)
        result = trainer.fit(resume=bool(resume))
        device = trainer.device
        tested, ranks = test_metrics(cfg, model, data.split, device)
        metrics = {
            "model": cfg.model_name, "parameters": params, "best_epoch": result.best_epoch,
            "stopped": result.stopped, "train_seconds": result.train_seconds, "epochs_run": result.epochs_run,
            "valid": result.best_valid, **tested,
            "history": result.history, "data": data.summary.to_dict(),
            "split": {k: (v if isinstance(v, int | float | str) else str(v)) for k, v in data.split.notes.items()},
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "total_seconds": time.perf_counter() - t0,
        }
        save_run(run_dir, cfg, model, data.vocab, Histories.from_sequences(data.sequences), metrics)
        _save_ranks(run_dir, cfg, data.split, data.sequences.users, data.vocab, ranks)
        (run_dir / "train_state.pt").unlink(missing_ok=True)
        tee("test " + format_metrics(metrics["test"]))
        if metrics["test_se"]:
            tee("standard errors over test users: " + format_metrics(metrics["test_se"], ("hr@10", "ndcg@10")))
        if "test_sampled" in metrics:
            tee("test (SAMPLED, not comparable with full ranking) " + format_metrics(metrics["test_sampled"]))
        tee(f"run saved to {run_dir}")
    finally:
        log_file.close()
    return run_dir


def format_metrics(m: dict, keys=("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10",
                                  "coverage@10")) -> str:
    keys = [k for k in m if any(k.endswith(x) for x in keys)] or list(m)
    return "  ".join(f"{k} {m[k]:.4f}" for k in keys if isinstance(m[k], float))


def sequences_from_histories(h: Histories) -> Sequences:
    lengths = np.array([len(x) for x in h.items], dtype=np.int64)
    return Sequences(users=list(h.users), items=np.concatenate(h.items) if h.items else np.empty(0, np.int64),
                     times=np.concatenate(h.times) if h.times else np.empty(0),
                     offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def evaluate_run(run: str | Path | LoadedRun, device: str = "auto", sampled: bool | None = None,
                 mask_seen: bool | None = None, ks: list[int] | None = None, save_ranks: bool = False) -> dict:
    """Re-derive the split from the run's saved histories and evaluate validation and test
    (`save_ranks` rewrites the run's per-user test ranks with this evaluation's)."""
    dev = resolve_device(device)
    loaded = run if isinstance(run, LoadedRun) else load_run(run, device=str(dev))
    cfg = loaded.config
    if sampled is not None:
        cfg.eval.sampled = sampled
    if mask_seen is not None:
        cfg.eval.mask_seen = mask_seen
    if ks:
        cfg.eval.ks = ks
    split = make_split(cfg, sequences_from_histories(loaded.histories), loaded.model.num_items)
    loaded.model.to(dev)
    tested, ranks = test_metrics(cfg, loaded.model, split, dev)
    out = {"valid": evaluate(loaded.model, split.valid, **_eval_kwargs(cfg, dev, split)), **tested}
    if save_ranks:
        _save_ranks(loaded.path, cfg, split, loaded.histories.users, loaded.vocab, ranks)
    return out


def save_evaluation(run_dir: Path, result: dict) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    metrics["reevaluated"] = result
    write_metrics(run_dir, metrics)
