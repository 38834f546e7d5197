"""Retrieval: exact top-k, faiss ANN agreement with exact, filtering after ANN, the history store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.serve.index import ExactIndex, FaissIndex, build_index, masked_topk, recall_at_k
from seqrec.serve.store import MemoryHistoryStore, SQLiteHistoryStore


@pytest.fixture(scope="module")
def table():
    """Clustered vectors (as real item embeddings are) with row 0 as padding."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 16)).astype(np.float32)
    items = centres[rng.integers(0, 40, 5000)] + 0.3 * rng.standard_normal((5000, 16)).astype(np.float32)
    return np.vstack([np.zeros((1, 16), np.float32), items])


@pytest.fixture(scope="module")
def queries(table):
    rng = np.random.default_rng(1)
    return table[rng.integers(1, len(table), 64)] + 0.1 * rng.standard_normal((64, 16)).astype(np.float32)


def test_exact_matches_brute_force_and_never_returns_padding(table, queries):
    hits = ExactIndex(table).search(queries, 10)
    brute = queries @ table.T
    brute[:, 0] = -np.inf
    for (ids, scores), row in zip(hits, brute, strict=True):
        assert 0 not in ids
        np.testing.assert_array_equal(ids, np.argsort(-row, kind="stable")[:10])
        np.testing.assert_allclose(scores, row[ids], rtol=1e-5)


def test_exact_exclusions_and_short_catalogue():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0]])
    ids, vals = masked_topk(scores, 3, [np.array([1, 3])])[0]
    assert ids.tolist() == [2, 4]  # only two items remain: the list is shorter, never padded with -inf
    assert vals.tolist() == [4.0, 2.0]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_agrees_with_exact(table, queries, kind):
    index = FaissIndex(table, kind, nlist=64, nprobe=16)
    assert recall_at_k(index, queries, 10) >= 0.95


def test_ann_filters_after_search_and_falls_back(table, queries):
    index = FaissIndex(table, "hnsw", ef_search=16)
    exact = ExactIndex(table)
    # exclude each query's exact top-50: the ANN must over-fetch and still return 10 valid items
    excl = [h[0] for h in exact.search(queries, 50)]
    hits = index.search(queries, 10, excl)
    for (ids, _), e in zip(hits, excl, strict=True):
        assert len(ids) == 10 and not set(ids) & set(e) and 0 not in ids
    assert recall_at_k(index, queries, 10, excl) >= 0.9
    # filtering left fewer than k (here: an ANN that only ever finds 2 candidates) -> exact answers
    class Starved:
        def __init__(self, inner):
            self.inner, self.ntotal = inner, inner.ntotal

        def search(self, q, k, params=None):
            d, i = self.inner.search(q, k, params=params)
            i[:, 2:], d[:, 2:] = -1, -np.inf
            return d, i

    index.index = Starved(index.index)
    before = index.fallbacks
    hits = index.search(queries[:3], 10, excl[:3])
    want = exact.search(queries[:3], 10, excl[:3])
    assert [h[0].tolist() for h in hits] == [w[0].tolist() for w in want]
    assert index.fallbacks == before + 3


def test_build_index_auto_threshold_and_cache(table, tmp_path):
    assert build_index(table, "auto", ann_threshold=10_000, log=lambda *_: None).kind == "exact"
    cache = tmp_path / "idx.faiss"
    built = build_index(table, "auto", ann_threshold=1000, cache_path=cache, log=lambda *_: None)
    assert built.kind == "hnsw" and cache.exists()
    loaded = build_index(table, "hnsw", cache_path=cache, log=lambda *_: None)
    q = table[1:5]
    assert [h[0].tolist() for h in loaded.search(q, 5)] == [h[0].tolist() for h in built.search(q, 5)]


def test_count_models_use_their_own_scores(synthetic_config, tmp_path):
    """Popularity overrides `score` and has no item table: the engine must not try an index."""
    from seqrec.artifact import load_run
    from seqrec.config import config_from_dict
    from seqrec.errors import SeqrecError
    from seqrec.pipeline import train
    from seqrec.serve.engine import Engine, Query
    from seqrec.serve.store import open_store

    cfg = dict(synthetic_config, model={"name": "popularity"})
    run_dir = train(config_from_dict(cfg), runs_dir=tmp_path, run_name="pop", log=lambda *_: None)
    run = load_run(run_dir)
    store = open_store(":memory:", run.histories, run.vocab)
    engine = Engine(run, store)
    assert engine.index is None and engine.index_kind == "model-score"
    res = engine.recommend([Query(user=run.histories.users[0])], 5)[0]
    counts = run.model.counts.clone()
    seen = set(run.histories.items[0].tolist())
    counts[list(seen)] = -1
    counts[0] = -1
    assert run.vocab.index[res.items[0]] == int(torch.argmax(counts))
    with pytest.raises(SeqrecError, match="--index exact"):
        Engine(run, store, index="hnsw")


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_history_store(tmp_path, kind):
    store = SQLiteHistoryStore(tmp_path / "h.sqlite") if kind == "sqlite" else MemoryHistoryStore()
    assert store.get("a") is None
    store.append([("a", "x", 1.0), ("b", "y", 2.0), ("a", "z", 3.0)])
    h = store.get("a")
    assert h.items == ["x", "z"] and h.timestamps == [1.0, 3.0]
    assert store.get("a", limit=1).items == ["z"]
    assert store.num_users() == 2 and store.users() == ["a", "b"]
    if kind == "sqlite":
        store.close()
        again = SQLiteHistoryStore(tmp_path / "h.sqlite")
        assert again.get("a").items == ["x", "z"]
        assert again.seed([("c", "q", 0.0)], "run") is True
        assert again.seed([("d", "q", 0.0)], "run") is False  # seeded once; later starts keep the store
        assert again.get("d") is None
        assert again._con().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("name", ["comirec", "rearec", "markov", "gru4rec"])
def test_engine_serves_every_scoring_style(name):
    """Own `topk` (multi-interest), overridden `score`, count model, plain dot product: same filtering."""
    import types
    from pathlib import Path

    from seqrec.artifact import Histories
    from seqrec.data.vocab import Vocab
    from seqrec.models.registry import MODELS, build_model, model_config_class
    from seqrec.serve.engine import Engine, Query

    if name not in MODELS:
        pytest.skip(f"{name} is not registered")
    torch.manual_seed(0)
    model = build_model(name, model_config_class(name)(), 40).eval()
    if not model.trainable:
        model.fit_statistics([np.arange(1, 20), np.arange(5, 30)])
    store = MemoryHistoryStore()
    store.append([("u", f"i{i}", float(i)) for i in range(8)])
    run = types.SimpleNamespace(model=model, vocab=Vocab([f"i{i}" for i in range(40)]), path=Path("/nonexistent"),
                                histories=Histories([], [], []), config=types.SimpleNamespace(model_name=name))
    engine = Engine(run, store, log=lambda *_: None)
    seen = {f"i{i}" for i in range(8)}
    excl, incl, hist = engine.recommend([Query("u"), Query("u", exclude_seen=False),
                                         Query(history=["i30"], exclude=["i31"])], 40)
    assert len(excl.items) == 32 and not seen & set(excl.items)
    assert len(incl.items) == 40 and seen <= set(incl.items)
    assert len(hist.items) == 38 and not {"i30", "i31"} & set(hist.items)
