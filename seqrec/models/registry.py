"""Name → (config class, model class): the one table every entry point looks models up in."""

from __future__ import annotations

from seqrec.errors import ConfigError
from seqrec.models.base import SequentialRecommender
from seqrec.models.markov import Markov, MarkovConfig
from seqrec.models.popularity import Popularity, PopularityConfig
from seqrec.models.sasrec import SASRec, SASRecConfig

MODELS: dict[str, tuple[type, type[SequentialRecommender]]] = {
    "popularity": (PopularityConfig, Popularity),
    "markov": (MarkovConfig, Markov),
    "sasrec": (SASRecConfig, SASRec),
}


def model_config_class(name: str) -> type:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name][0]


def build_model(name: str, config, num_items: int) -> SequentialRecommender:
    model_config_class(name)
    return MODELS[name][1](config, num_items)
