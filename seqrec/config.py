"""Experiment configuration: one TOML file with [data], [model], [train] and [eval] sections.

Each section is parsed into a typed dataclass. An unknown or mistyped key is a ConfigError that
names the key and lists the valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqrec.errors import ConfigError


@dataclass
class DataConfig:
    """Where the log is and how it becomes sequences and splits."""

    path: str = ""
    format: str = "auto"  # auto | csv | tsv | parquet | jsonl | ml-dat | ml-100k | sequences
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "timestamp"
    separator: str | None = None
    drop_duplicates: bool = True  # exact (user, item, timestamp) repeats; counted in the summary
    dedupe_consecutive: bool = False
    min_user_interactions: int = 0  # iterative k-core: users
    min_item_interactions: int = 0  # iterative k-core: items
    min_history: int = 0  # drop users with shorter sequences after k-core
    split: str = "leave_one_out"  # leave_one_out | temporal
    temporal_cutoff: str | None = None  # timestamp (number or ISO date) for the temporal split
    temporal_quantile: float | None = None  # or: cut at this quantile of all timestamps
    valid_fraction: float = 0.5  # temporal split: share of post-cutoff users used for validation


@dataclass
class TrainConfig:
    """Optimisation, loss and early stopping."""

    loss: str = "ce"  # ce | sampled_softmax | bce | gbce
    negatives: int = 256
    negative_sampler: str = "uniform"  # uniform | popularity | in_batch
    logq_correction: bool = True
    gbce_t: float = 0.75
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    # constant | linear | cosine: decay from lr to lr × min_lr_ratio over the run, where "the run"
    # is `epochs` or, when set, the `max_minutes` budget (whichever ends first), so a budgeted
    # run ends with a small learning rate instead of being cut off mid-flight
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    patience: int = 10
    eval_every: int = 1
    valid_metric: str = "ndcg@10"
    window: str = "last"  # last | random: which max_len window of a long history an epoch trains on
    # every prefix is an example predicting only its last item (RecBole-style), instead of one
    # example per sequence predicting every position; see data/batches.py
    prefix_augmentation: bool = False
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on cuda
    # bf16 autocast for training on CPU too (evaluation stays float32). Training steps measured
    # 1.2-1.3x faster on an Intel Xeon with AMX, 1.5x on an AMD EPYC with AVX512-BF16
    # (benchmarks/RESULTS.md); likely slower on CPUs without bf16 instructions
    cpu_amp: bool = False
    num_threads: int = 0  # 0 = torch default
    max_minutes: float | None = None  # wall-clock budget for training
    quiet: bool = False


@dataclass
class EvalConfig:
    """Full-catalogue ranking unless sampled is set; sampled numbers are always labelled."""

    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    mask_seen: bool = True
    batch_size: int = 1024
    sampled: bool = False
    num_sampled: int = 100
    sampled_strategy: str = "uniform"  # uniform | popularity


@dataclass
class ExperimentConfig:
    data: DataConfig
    model_name: str
    model: Any  # the registered model's config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        model = {"name": self.model_name, **_asdict_clean(self.model)}
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out.update(
            data=_asdict_clean(self.data), model=model, train=_asdict_clean(self.train), eval=_asdict_clean(self.eval)
        )
        return out


def _asdict_clean(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


_CHOICES = {
    ("data", "format"): ["auto", "csv", "tsv", "parquet", "jsonl", "ml-dat", "ml-100k", "sequences"],
    ("data", "split"): ["leave_one_out", "temporal"],
    ("train", "loss"): ["ce", "sampled_softmax", "bce", "gbce"],
    ("train", "negative_sampler"): ["uniform", "popularity", "in_batch"],
    ("train", "window"): ["last", "random"],
    ("train", "lr_schedule"): ["constant", "linear", "cosine"],
    ("train", "device"): ["auto", "cpu", "cuda"],
    ("eval", "sampled_strategy"): ["uniform", "popularity"],
}


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check (and gently coerce int→float) a TOML value against a dataclass annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, c = _type_ok(v, inner)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if annotation is Any:
        return True, value
    if annotation is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int | float):
            return True, float(value)
        return False, value
    if annotation is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    return isinstance(value, annotation), value


def build_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build `cls` from a dict, failing with a message that names bad keys and the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{section}.{key}'.{hint} Valid keys in [{section}]: {', '.join(sorted(fields))}"
            )
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(
                f"'{section}.{key}' must be of type {_type_name(hints[key])}, got {value!r} "
                f"({type(value).__name__})"
            )
        choices = _CHOICES.get((section, key))
        if choices and coerced not in choices:
            raise ConfigError(f"'{section}.{key}' = {coerced!r} is not one of: {', '.join(choices)}")
        kwargs[key] = coerced
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}]: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"[{section}]: {e}") from None
    return obj


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def parse_value(text: str) -> Any:
    """Parse an override value as TOML (numbers, booleans, lists, quoted strings), else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to a raw config dict."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override '{item}' must look like section.key=value, e.g. train.lr=0.001")
        dotted, value = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        if section not in ("data", "model", "train", "eval"):
            raise ConfigError(f"override '{item}': unknown section '{section}'; use data, model, train or eval")
        raw.setdefault(section, {})[key.strip()] = parse_value(value.strip())
    return raw


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    from seqrec.models.registry import model_config_class

    raw = dict(raw)
    unknown = set(raw) - {"data", "model", "train", "eval", "name"}
    if unknown:
        raise ConfigError(
            f"unknown section(s) {sorted(unknown)}; a config has [data], [model], [train] and [eval] sections"
        )
    model_raw = dict(raw.get("model", {}))
    if "name" not in model_raw:
        raise ConfigError("[model] needs a 'name', e.g. name = \"sasrec\" (see `seqrec models`)")
    model_name = model_raw.pop("name")
    model_cfg = build_dataclass(model_config_class(model_name), model_raw, "model")
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise ConfigError("'name' must be a string")
    return ExperimentConfig(
        data=build_dataclass(DataConfig, raw.get("data", {}), "data"),
        model_name=model_name,
        model=model_cfg,
        train=build_dataclass(TrainConfig, raw.get("train", {}), "train"),
        eval=build_dataclass(EvalConfig, raw.get("eval", {}), "eval"),
        name=name,
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass the path to a TOML file such as configs/*.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    cfg = config_from_dict(apply_overrides(raw, overrides or []))
    if not cfg.name:
        cfg.name = path.stem
    return cfg


def dumps_toml(data: dict[str, Any]) -> str:
    """Write the small subset of TOML our configs use: top-level scalars, then one table per section."""
    lines: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict) and value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            for k, v in value.items():
                if v is not None:
                    lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write value {v!r} to TOML")
