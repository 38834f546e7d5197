"""Single-user CPU inference latency of saved runs: median wall time of one `score` call.

Usage: python benchmarks/zoo1_latency.py RUN_DIR [RUN_DIR ...]
One torch thread; each run scores the 50-item (max_len) histories of 200 known users one at a
time, after 20 warm-up calls; prints run, median and p90 in milliseconds, and the training
throughput (sequences/s, mean over epochs) recorded in metrics.json.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from seqrec.artifact import load_run
from seqrec.data.batches import history_batch


def latency_ms(run_dir: str, calls: int = 200, warmup: int = 20) -> tuple[float, float]:
    run = load_run(run_dir)
    histories = sorted(run.histories.items, key=len, reverse=True)[: calls + warmup]
    times = []
    with torch.no_grad():
        for i, h in enumerate(histories):
            batch = history_batch([h], run.model.max_len)
            t0 = time.perf_counter()
            run.model.score(batch)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), float(np.percentile(times, 90))


def main() -> None:
    torch.set_num_threads(1)
    for run_dir in sys.argv[1:]:
        med, p90 = latency_ms(run_dir)
        metrics = json.loads(open(f"{run_dir}/metrics.json").read())
        seq_s = np.mean([h["sequences_per_second"] for h in metrics["history"] if "sequences_per_second" in h])
        print(f"{run_dir}\tmedian {med:.2f} ms\tp90 {p90:.2f} ms\ttrain {seq_s:.0f} seq/s\t"
              f"params {metrics['parameters']}\ttrain_s {metrics['train_seconds']:.0f}\tbest_epoch {metrics['best_epoch']}")


if __name__ == "__main__":
    main()
