"""Name → (config class, model class): the one table every entry point looks models up in."""

from __future__ import annotations

from seqrec.errors import ConfigError
from seqrec.models.base import SequentialRecommender
from seqrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from seqrec.models.comirec import ComiRec, ComiRecConfig
from seqrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from seqrec.models.hstu import HSTU, HSTUConfig
from seqrec.models.markov import Markov, MarkovConfig
from seqrec.models.mqsa_ted import MQSATED, MQSATEDConfig
from seqrec.models.popularity import Popularity, PopularityConfig
from seqrec.models.rearec import ReaRec, ReaRecConfig
from seqrec.models.sasrec import SASRec, SASRecConfig
from seqrec.models.sigma import SIGMA, SIGMAConfig

MODELS: dict[str, tuple[type, type[SequentialRecommender]]] = {
    "popularity": (PopularityConfig, Popularity),
    "markov": (MarkovConfig, Markov),
    "sasrec": (SASRecConfig, SASRec),
    "bert4rec": (BERT4RecConfig, BERT4Rec),
    "gru4rec": (GRU4RecConfig, GRU4Rec),
    "hstu": (HSTUConfig, HSTU),
    "sigma": (SIGMAConfig, SIGMA),
    "rearec": (ReaRecConfig, ReaRec),
    "mqsa_ted": (MQSATEDConfig, MQSATED),
    "comirec": (ComiRecConfig, ComiRec),
}


def model_config_class(name: str) -> type:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name][0]


def build_model(name: str, config, num_items: int) -> SequentialRecommender:
    model_config_class(name)
    return MODELS[name][1](config, num_items)
