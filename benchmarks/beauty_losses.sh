#!/usr/bin/env bash
# SASRec on Amazon Beauty with each loss: the same backbone, recipe (configs/beauty-sasrec.toml:
# prefix augmentation, linear learning-rate decay over the budget) and 12-minute budget; then the
# table rows of benchmarks/RESULTS.md.
#   bash benchmarks/beauty_losses.sh [data_dir] [runs_dir] [extra --set ...]
# e.g. bash benchmarks/beauty_losses.sh ../shared/data runs/bench --set train.num_threads=1
set -euo pipefail
data=${1:-../shared/data}; runs=${2:-runs/bench}; shift $(( $# > 2 ? 2 : $# )) || true
common=(--data-dir "$data" --runs-dir "$runs" --quiet --set train.max_minutes=12 "$@")
seqrec train configs/beauty-sasrec.toml --name beauty-sasrec-ce "${common[@]}"
seqrec train configs/beauty-sasrec.toml --name beauty-sasrec-ss1024 --set train.loss=sampled_softmax \
  --set train.negatives=1024 "${common[@]}"
seqrec train configs/beauty-sasrec.toml --name beauty-sasrec-bce --set train.loss=bce --set train.negatives=1 "${common[@]}"
seqrec train configs/beauty-sasrec.toml --name beauty-sasrec-gbce256 --set train.loss=gbce --set train.negatives=256 \
  --set train.gbce_t=0.75 "${common[@]}"
python benchmarks/collect.py "$runs"/beauty-sasrec-*
