"""ComiRec's accuracy–diversity trade-off on Amazon Beauty: test HR/NDCG@N and Diversity@N for
several aggregation factors λ, with two category definitions.

- "beauty": the item's second-level Amazon category (e.g. Makeup > *Face*), from
  s3rec/Beauty_item2attributes.json (attributes = categories and brand), mapped to the run's raw
  ASINs through p5/datamaps.json.gz. Within an item's attributes, levels are ordered by global
  frequency (top level = most frequent); the second most frequent is used, the top level when an
  item has only one. Brands are rare attributes and so never win.
- "proxy": ComiRec.proxy_categories() — k-means clusters of the item embeddings — what `topk`
  uses when no categories are given.

Diversity@N = share of pairs in a user's list with different categories (Cen et al. 2020).
Seen items are masked, as in the ranking protocol.

    python benchmarks/zoo3_comirec_diversity.py /tmp/zoo3-runs/zoo3-comirec-s42 --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import torch

from seqrec.artifact import load_run
from seqrec.data.batches import history_batch
from seqrec.evaluate.ranking import _history_tensor
from seqrec.models.comirec import ComiRec, category_diversity
from seqrec.pipeline import make_split, sequences_from_histories


def beauty_categories(vocab, data_dir: Path) -> torch.Tensor:
    attrs = json.loads((data_dir / "amazon-beauty/s3rec/Beauty_item2attributes.json").read_text())
    maps = json.load(gzip.open(data_dir / "amazon-beauty/p5/datamaps.json.gz"))
    freq = {int(k): v for k, v in maps["attributeid2num"].items()}
    item2id = maps["item2id"]
    cats = np.full(vocab.num_items + 1, -1, dtype=np.int64)
    for internal in range(1, vocab.num_items + 1):
        asin = vocab.decode([internal])[0]
        levels = sorted(attrs.get(item2id.get(str(asin), ""), []), key=lambda a: -freq.get(a, 0))
        cats[internal] = levels[1] if len(levels) > 1 else (levels[0] if levels else -2 - internal)
    return torch.from_numpy(cats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--lambdas", default="0,0.05,0.1,0.25,0.5,1")
    ap.add_argument("--users", type=int, default=0, help="0 = every test user")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run_dir)
    model = run.model
    if not isinstance(model, ComiRec):
        raise SystemExit(f"{args.run_dir} is a {run.config.model_name} run, not comirec")
    split = make_split(run.config, sequences_from_histories(run.histories), model.num_items)
    test = split.test
    n = len(test) if args.users <= 0 else min(args.users, len(test))
    kinds = {"beauty": beauty_categories(run.vocab, Path(args.data_dir)), "proxy": model.proxy_categories()}
    lambdas = [float(x) for x in args.lambdas.split(",")]
    print(f"| categories | λ | HR@{args.k} | NDCG@{args.k} | Diversity@{args.k} |\n|---|---|---|---|---|")
    for kind, cats in kinds.items():
        for lam in lambdas:
            hits, ndcg, div = [], [], []
            for start in range(0, n, 1024):
                hist = test.histories[start : min(n, start + 1024)]
                batch = history_batch(hist, model.max_len)
                ids, _ = model.topk(batch, args.k, diversity=lam, categories=cats, exclude=_history_tensor(hist, "cpu"))
                target = torch.as_tensor(test.targets[start : start + len(hist)])[:, None]
                pos = (ids == target).float()
                hits.append(pos.sum(1))
                ndcg.append((pos / torch.log2(torch.arange(2, args.k + 2).float())).sum(1))
                div.append(category_diversity(ids, cats))
            print(f"| {kind} | {lam:g} | {torch.cat(hits).mean():.4f} | {torch.cat(ndcg).mean():.4f} | "
                  f"{torch.cat(div).mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
