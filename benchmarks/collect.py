"""Print a markdown table row for each run directory: test metrics at the validation-selected epoch.

    python benchmarks/collect.py runs/beauty-* [--label-from name|model]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"]


def row(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    test = m["test"]
    cells = [run.name, m["model"]] + [f"{test[c]:.4f}" for c in COLUMNS if c in test]
    cells += [str(m["best_epoch"]), str(m.get("epochs_run", "")), f"{m['train_seconds']:.0f}",
              f"{m['parameters']:,}", m.get("stopped", "")]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    print("| run | model | " + " | ".join(c.upper().replace("@", "@") for c in COLUMNS)
          + " | best epoch | epochs run | train s | params | stopped |")
    print("|" + "---|" * (len(COLUMNS) + 7))
    for run in args.runs:
        if (run / "metrics.json").exists():
            print(row(run))


if __name__ == "__main__":
    main()
