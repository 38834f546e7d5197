"""Mean ± std over seeds of several variants, and each variant's paired difference to a baseline.

    python benchmarks/seeds.py base=/tmp/runs/cmp-sasrec-s* cape=/tmp/runs/cmp-cape-s* ...

Each argument is `label=run_dir` (repeat a label once per seed, or let the shell expand a glob
into `label=` followed by more run directories). The first label is the baseline; runs are
paired with it by their config's `train.seed`. Test metrics are those at the validation-selected
epoch (`metrics.json`); the difference column is the mean of the per-seed differences ± their std.
"""

from __future__ import annotations

import glob
import json
import statistics
import sys
import tomllib
from pathlib import Path

METRICS = ["hr@10", "ndcg@10"]


def load(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    seed = tomllib.loads((run / "config.toml").read_text()).get("train", {}).get("seed", 42)
    valid = m.get("valid", {}).get("ndcg@10", float("nan"))
    return {"seed": seed, "valid": valid, "epochs": m.get("epochs_run", m.get("best_epoch")), **m["test"]}


def mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}"


def main(argv: list[str]) -> None:
    groups: dict[str, list[dict]] = {}
    label = None
    for arg in argv:
        if "=" in arg:
            label, arg = arg.split("=", 1)
        if label is None:
            raise SystemExit("the first argument must be label=run_dir")
        # `label=/runs/x-s*` is one word the shell does not expand, so expand it here
        runs = [Path(r) for r in sorted(glob.glob(arg))] if glob.has_magic(arg) else [Path(arg)]
        for run in runs:
            if (run / "metrics.json").exists():
                groups.setdefault(label, []).append(load(run))
            else:
                print(f"skipped {run}: no metrics.json (unfinished run?)", file=sys.stderr)
    if not groups:
        raise SystemExit("no finished runs (metrics.json) among the arguments")
    base_label = next(iter(groups))
    base = {r["seed"]: r for r in groups[base_label]}
    print("| variant | seeds | test HR@10 | test NDCG@10 | valid NDCG@10 | epochs | Δ test NDCG@10 vs "
          f"{base_label} (paired) |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        diffs = [r["ndcg@10"] - base[r["seed"]]["ndcg@10"] for r in runs if r["seed"] in base]
        delta = "—" if name == base_label or not diffs else mean_std(diffs).replace("0.", ".").replace("-.", "−.")
        print(f"| {name} | {', '.join(str(r['seed']) for r in runs)} | {mean_std([r['hr@10'] for r in runs])} | "
              f"{mean_std([r['ndcg@10'] for r in runs])} | {mean_std([r['valid'] for r in runs])} | "
              f"{', '.join(str(r['epochs']) for r in runs)} | {delta} |")


if __name__ == "__main__":
    main(sys.argv[1:])
