"""What each CPU speed-up of SASRec training and scoring buys, measured side by side in one run.

    python benchmarks/cpu_speed.py configs/beauty-sasrec.toml --data-dir ../shared/data --threads 1

Times the same training batches (the config's batching, e.g. prefix augmentation) under:
  reference   every position through every block, full-catalogue CE by autograd (log_softmax +
              NLL over a materialised (P, N) logits matrix)
  chunked-ce  + seqrec's chunked CE (exact; logits recomputed per chunk, never stored)
  last-query  + the final block computes only the last query (prefix batches: the only target)
  bf16        + bf16 autocast on CPU (`train.cpu_amp`)
and the scoring of validation users with the full encoder versus the last-query shortcut.
Steps are interleaved round-robin (A B C D A B C D ...), so load on a shared machine hits every
variant alike; the ratios are the result, the absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from seqrec.config import load_config
from seqrec.data.batches import TrainBatches, history_batch
from seqrec.losses import build_loss
from seqrec.models.registry import build_model
from seqrec.pipeline import prepare_data


class AutogradCE(torch.nn.Module):
    """The plain formula, for reference: torch keeps the (P, N) logits and its softmax."""

    def forward(self, hidden, targets, items):
        logits = (hidden @ items.T).float()
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, targets)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant (after 2 warm-up rounds)")
    p.add_argument("--eval-users", type=int, default=4096)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.config)
    data = prepare_data(cfg, args.data_dir, log=lambda *_: None)
    model = build_model(cfg.model_name, cfg.model, data.vocab.num_items)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    chunked = build_loss("ce", data.vocab.num_items)
    batches = TrainBatches(data.split.train, None, model.max_len, cfg.train.batch_size, cfg.train.window,
                           cfg.train.seed, prefixes=cfg.train.prefix_augmentation)
    rounds = list(itertools.islice(batches, args.steps + 2))

    def full_encoder_loss(batch, loss):
        mask = batch["targets"] > 0
        return loss(model.encode(batch)[mask], batch["targets"][mask], model.item_embeddings())

    variants = {
        "reference": (lambda b: full_encoder_loss(b, AutogradCE()), False),
        "chunked-ce": (lambda b: full_encoder_loss(b, chunked), False),
        "last-query": (lambda b: model.training_loss(b, chunked), False),
        "bf16": (lambda b: model.training_loss(b, chunked), True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    model.train()
    for i, batch in enumerate(rounds):
        for name, (fn, amp) in variants.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16) if amp else nullcontext():
                loss = fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)

    tokens = np.mean([int((b["items"] > 0).sum()) for b in rounds[2:]])
    rows = np.mean([b["items"].shape[0] for b in rounds[2:]])
    print(f"{args.config}: {data.vocab.num_items:,} items, batch {cfg.train.batch_size} "
          f"({'prefixes' if cfg.train.prefix_augmentation else 'sequences'}; mean {rows:.0f} rows, "
          f"{tokens:,.0f} real tokens), {args.threads} thread(s), {args.steps} steps each\n")
    print("| training step | ms per step (median) | speed-up over reference |")
    print("|---|---:|---:|")
    base = float(np.median(times["reference"]))
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"| {name} | {med * 1e3:.0f} | {base / med:.2f}x |")

    model.eval()
    hist = data.split.valid.histories[: args.eval_users]
    chunks = [history_batch(hist[i : i + 1024], model.max_len) for i in range(0, len(hist), 1024)]
    score_times = {"full encoder": [], "last query": []}
    with torch.no_grad():
        for _ in range(3):
            for name in score_times:
                t0 = time.perf_counter()
                for b in chunks:
                    h = model.encode(b)[:, -1] if name == "full encoder" else model.encode_last(b)
                    h @ model.item_embeddings().T
                score_times[name].append(time.perf_counter() - t0)
    print(f"\n| scoring {len(hist):,} validation users (full catalogue) | users/s | speed-up |")
    print("|---|---:|---:|")
    base = min(score_times["full encoder"])
    for name, ts in score_times.items():
        print(f"| {name} | {len(hist) / min(ts):,.0f} | {base / min(ts):.2f}x |")


if __name__ == "__main__":
    main()
