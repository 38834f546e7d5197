"""Training throughput (sequences/s) and evaluation throughput (users/s) on one dataset.

    python benchmarks/throughput.py --data ../shared/data/ml-100k/u.data --max-len 200 --threads 2

Times a fixed number of training steps and a full-catalogue evaluation pass of SASRec with
full CE after a warm-up, so the numbers are comparable between machines and commits.
"""

from __future__ import annotations

import argparse
import time

import torch

from seqrec.config import config_from_dict
from seqrec.data.batches import TrainBatches
from seqrec.evaluate.ranking import evaluate
from seqrec.losses import build_loss
from seqrec.models.registry import build_model
from seqrec.pipeline import prepare_data


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss", default="ce")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config_from_dict({"data": {"path": args.data}, "model": {"name": "sasrec", "max_len": args.max_len}})
    data = prepare_data(cfg, log=lambda *_: None)
    model = build_model("sasrec", cfg.model, data.vocab.num_items)
    loss_fn = build_loss(args.loss, data.vocab.num_items, data.split.item_counts())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = TrainBatches(data.split.train, None, args.max_len, args.batch_size)
    model.train()

    def epoch() -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        for b in batches:
            loss = model.training_loss(b, loss_fn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += b["items"].shape[0]
        return n, time.perf_counter() - t0

    epoch()  # warm-up
    n, secs = epoch()
    t0 = time.perf_counter()
    evaluate(model, data.split.test, [10], batch_size=1024)
    eval_secs = time.perf_counter() - t0
    print(f"data: {args.data}  users {len(data.sequences)}  items {data.vocab.num_items}  max_len {args.max_len}  "
          f"threads {args.threads}")
    print(f"training: {n / secs:.0f} sequences/s ({secs:.1f} s per epoch of {n} sequences, loss {args.loss})")
    print(f"evaluation: {len(data.split.test) / eval_secs:.0f} users/s (full ranking, {len(data.split.test)} users)")


if __name__ == "__main__":
    main()
