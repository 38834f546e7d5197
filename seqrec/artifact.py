"""A run directory: everything needed to evaluate, recommend and serve, with no pickles.

    run.json            format version, model name, catalogue size
    config.toml         the experiment config as run
    model.safetensors   the selected (best-validation) weights
    vocab.parquet       internal id ⇄ external item id
    histories.parquet   every known user's full chronological history (internal ids)
    metrics.json        validation curve, best epoch, test metrics, wall time
    test_ranks.parquet  each test user's target and its rank, for paired comparisons (`seqrec compare`)
    train.log           what training printed
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from safetensors.torch import load_file, save_file

from seqrec.config import ExperimentConfig, config_from_dict, dumps_toml
from seqrec.data.vocab import Sequences, Vocab
from seqrec.errors import ArtifactError, SeqrecError
from seqrec.models.base import SequentialRecommender
from seqrec.models.registry import build_model

FORMAT_VERSION = 1


@dataclass
class Histories:
    """Known users' histories, by external user id."""

    users: list[str]
    items: list[np.ndarray]
    times: list[np.ndarray]

    def __post_init__(self):
        self.index = {u: i for i, u in enumerate(self.users)}

    @classmethod
    def from_sequences(cls, seqs: Sequences) -> Histories:
        return cls(list(seqs.users), [seqs.item_seq(u) for u in range(len(seqs))],
                   [seqs.time_seq(u) for u in range(len(seqs))])

    def save(self, path: Path) -> None:
        pl.DataFrame({
            "user": self.users,
            "items": [a.astype(np.int64) for a in self.items],
            "timestamps": [a.astype(np.float64) for a in self.times],
        }, schema={"user": pl.Utf8, "items": pl.List(pl.Int64), "timestamps": pl.List(pl.Float64)}).write_parquet(path)

    @classmethod
    def load(cls, path: Path) -> Histories:
        if not path.exists():
            return cls([], [], [])
        df = pl.read_parquet(path)
        return cls(df["user"].to_list(), [np.asarray(x, dtype=np.int64) for x in df["items"].to_list()],
                   [np.asarray(x, dtype=np.float64) for x in df["timestamps"].to_list()])


def save_run(run_dir: Path, config: ExperimentConfig, model: SequentialRecommender, vocab: Vocab,
             histories: Histories, metrics: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "model": config.model_name, "num_items": model.num_items,
    }, indent=2))
    (run_dir / "config.toml").write_text(dumps_toml(config.to_dict()))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(run_dir / "model.safetensors"))
    vocab.save(run_dir / "vocab.parquet")
    histories.save(run_dir / "histories.parquet")
    write_metrics(run_dir, metrics)


TEST_RANKS_FILE = "test_ranks.parquet"


def save_test_ranks(run_dir: Path, users: list[str], targets: list[str], ranks: np.ndarray, mask_seen: bool) -> None:
    """Per-user test ranks (inf = the target was masked as seen), keyed by external ids so that two
    runs on the same data can be paired user by user whatever their internal ids."""
    pl.DataFrame({"user": [str(u) for u in users], "target": [str(t) for t in targets],
                  "rank": np.asarray(ranks, dtype=np.float64), "mask_seen": [bool(mask_seen)] * len(users)},
                 schema={"user": pl.Utf8, "target": pl.Utf8, "rank": pl.Float64, "mask_seen": pl.Boolean},
                 ).write_parquet(run_dir / TEST_RANKS_FILE)


def load_test_ranks(run_dir: str | Path) -> pl.DataFrame:
    path = Path(run_dir) / TEST_RANKS_FILE
    if not path.exists():
        raise ArtifactError(f"{run_dir} has no {TEST_RANKS_FILE} (runs trained before it existed do not); "
                            f"write it with `seqrec evaluate {run_dir}`")
    return pl.read_parquet(path)


def write_metrics(run_dir: Path, metrics: dict) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class LoadedRun:
    path: Path
    config: ExperimentConfig
    model: SequentialRecommender
    vocab: Vocab
    histories: Histories
    metrics: dict


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"run directory {run_dir} does not exist; pass a directory made by `seqrec train`")
    meta_path = run_dir / "run.json"
    if not meta_path.exists():
        raise ArtifactError(f"{run_dir} has no run.json; it is not a seqrec run directory (or training never finished)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{meta_path} is corrupt ({e}); re-run `seqrec train`") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{run_dir} has run format version {version}, this seqrec reads version {FORMAT_VERSION}; "
            "re-train with this version, or use the seqrec release that wrote it"
        )
    for name in ("config.toml", "model.safetensors", "vocab.parquet"):
        if not (run_dir / name).exists():
            raise ArtifactError(f"{run_dir} is missing {name}; the run is incomplete (re-run `seqrec train`)")
    try:
        config = config_from_dict(tomllib.loads((run_dir / "config.toml").read_text()))
    except SeqrecError as e:
        raise ArtifactError(f"{run_dir}/config.toml does not match this seqrec version: {e}") from None
    vocab = Vocab.load(run_dir / "vocab.parquet")
    model = build_model(config.model_name, config.model, int(meta["num_items"]))
    state = load_file(str(run_dir / "model.safetensors"))
    try:
        for name, value in state.items():  # count-based models size their buffers when fitted
            buf = dict(model.named_buffers()).get(name)
            if buf is not None and buf.shape != value.shape:
                module_name, _, attr = name.rpartition(".")
                setattr(model.get_submodule(module_name) if module_name else model, attr, value.clone())
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{run_dir}/model.safetensors does not fit the model in config.toml: {e}") from None
    model.to(device).eval()
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    return LoadedRun(run_dir, config, model, vocab, Histories.load(run_dir / "histories.parquet"), metrics)
