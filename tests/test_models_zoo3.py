"""ReaRec, MQSA-TED and ComiRec: shapes, causality, padding, save/load, learning, diversity control."""

import json

import numpy as np
import pytest
import torch

from seqrec.artifact import load_run
from seqrec.config import config_from_dict
from seqrec.data.batches import history_batch
from seqrec.errors import ConfigError
from seqrec.losses import FullCrossEntropy, build_loss
from seqrec.models.comirec import ComiRec, ComiRecConfig, category_diversity
from seqrec.models.mqsa_ted import MQSATED, MQSATEDConfig, window_mean
from seqrec.models.rearec import ReaRec, ReaRecConfig
from seqrec.models.sasrec import SASRec
from seqrec.pipeline import evaluate_run, prepare_data, train
from seqrec.train.trainer import Trainer

ITEMS = torch.tensor([[0, 0, 0, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]])
SMALL = dict(max_len=10, hidden_size=16, dropout=0.0)


def small_models():
    return {
        "rearec-erl": ReaRec(ReaRecConfig(**SMALL, num_heads=2, method="erl", reasoning_steps=2), 30),
        "rearec-prl": ReaRec(ReaRecConfig(**SMALL, num_heads=2, method="prl", reasoning_steps=2,
                                          norm_first=False), 30),
        "mqsa_ted": MQSATED(MQSATEDConfig(**SMALL, num_heads=2, long_window=3), 30),
        "comirec-sa": ComiRec(ComiRecConfig(**SMALL, extractor="sa", num_interests=3), 30),
        "comirec-dr": ComiRec(ComiRecConfig(**SMALL, extractor="dr", num_interests=3), 30),
    }


@pytest.mark.parametrize("name", list(small_models()))
def test_shapes_backward_causality_and_padding(name):
    torch.manual_seed(0)
    model = small_models()[name].eval()
    if isinstance(model, MQSATED):
        model.fit_statistics([np.array([1, 2, 3, 4, 5, 6, 7]), np.array([4, 5, 6, 1])])
    h = model.encode({"items": ITEMS})
    assert h.shape == (2, 7, 16) and torch.isfinite(h).all()
    changed = ITEMS.clone()
    changed[:, -1] = 9  # a later item must not change any earlier position
    h2 = model.encode({"items": changed})
    assert torch.allclose(h[:, :-1], h2[:, :-1], atol=1e-6)
    assert not torch.allclose(h[:, -1], h2[:, -1])
    # extra left padding does not change the real positions
    assert torch.allclose(model.encode({"items": ITEMS[:1, 3:]})[0], h[0, 3:], atol=1e-5)
    scores = model.score({"items": ITEMS})
    assert scores.shape == (2, 31) and torch.isfinite(scores[:, 1:]).all()
    model.train()
    loss_fn = build_loss("sampled_softmax", 30, np.ones(31), negatives=8) if "comirec" in name else FullCrossEntropy()
    loss = model.training_loss({"items": ITEMS, "targets": torch.roll(ITEMS, -1, 1)}, loss_fn)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.item_emb.weight.grad is not None and model.item_emb.weight.grad.abs().sum() > 0


def test_rearec_reasoning_uses_extra_steps_and_reduces_to_sasrec():
    torch.manual_seed(0)
    cfg = ReaRecConfig(**SMALL, num_heads=2, reasoning_steps=0)
    rea, sas = ReaRec(cfg, 30).eval(), SASRec(cfg, 30).eval()
    sas.load_state_dict(rea.state_dict(), strict=False)
    assert torch.allclose(rea.score({"items": ITEMS}), sas.score({"items": ITEMS}), atol=1e-6)
    for method in ("erl", "prl"):
        model = ReaRec(ReaRecConfig(**SMALL, num_heads=2, reasoning_steps=3, method=method), 30).eval()
        outputs, _ = model.trajectory({"items": ITEMS})
        assert len(outputs) == 4 and not torch.allclose(outputs[0], outputs[-1])
        # the inference path (reasoning from the last position only) equals the all-positions pass
        assert torch.allclose(model.user_representation({"items": ITEMS}), model.encode({"items": ITEMS})[:, -1],
                              atol=1e-5)
        # the reasoning position embeddings matter
        before = model.score({"items": ITEMS})
        with torch.no_grad():
            model.reason_pos.weight.add_(1.0)
        assert not torch.allclose(before, model.score({"items": ITEMS}))


@pytest.mark.parametrize("method", ["erl", "prl"])
def test_rearec_last_position_trajectory_matches_the_full_one(method):
    """Prefix batches reason from the last position only (the item pass's final block computes
    only the last query); every step must equal the full trajectory's last position."""
    torch.manual_seed(0)
    model = ReaRec(ReaRecConfig(max_len=10, hidden_size=16, num_heads=2, dropout=0.0, method=method,
                                reasoning_steps=3), num_items=30).eval()
    batch = {"items": torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])}
    full, _ = model.trajectory(batch)
    last, _ = model.trajectory(batch, last_only=True)
    assert len(full) == len(last) == 4
    for f, o in zip(full, last, strict=True):
        assert o.shape == (2, 1, 16) and torch.allclose(o[:, 0], f[:, -1], atol=1e-5)
    targets = torch.zeros_like(batch["items"])
    targets[:, -1] = torch.tensor([7, 8])
    model.train()
    loss = model.training_loss({**batch, "targets": targets}, FullCrossEntropy())
    loss.backward()
    assert torch.isfinite(loss) and model.reason_pos.weight.grad is not None


def test_mqsa_window_mean_and_transition_statistics():
    x = torch.arange(1.0, 7.0).view(1, 1, 6, 1)
    valid = torch.tensor([[False, False, True, True, True, True]])
    out = window_mean(x, valid, 2)[0, 0, :, 0]
    assert out[2:].tolist() == [3.0, 3.5, 4.5, 5.5]  # real items are 3..6; window of 2
    assert window_mean(x, valid, 0)[0, 0, -1, 0] == pytest.approx(4.5)  # whole history
    model = MQSATED(MQSATEDConfig(**SMALL, ted_neighbors=2), 10)
    model.fit_statistics([np.array([1, 2, 3]), np.array([1, 2, 1, 3]), np.array([5])])
    # 1 → 2 twice, 1 → 3 once; 2 → 3 once, 2 → 1 once
    assert model.ted_targets[1].tolist() == [2, 3]
    assert model.ted_probs[1].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert sorted(model.ted_targets[2].tolist()) == [1, 3] and model.ted_probs[5].sum() == 0
    before = model.distillation_loss(torch.tensor([[1, 2]]))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        model.distillation_loss(torch.tensor([[1, 2]])).backward()
        opt.step()
    assert model.distillation_loss(torch.tensor([[1, 2]])) < before - 0.5


def test_mqsa_distils_only_the_newest_item_of_each_prefix(monkeypatch):
    model = MQSATED(MQSATEDConfig(**SMALL, num_heads=2), 30)
    seen = []
    monkeypatch.setattr(model, "distillation_loss", lambda items: seen.append(items) or torch.tensor(0.0))
    items = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])
    prefix_targets = torch.tensor([[0, 0, 0, 6], [0, 0, 0, 10]])
    model.training_loss({"items": items, "targets": prefix_targets}, FullCrossEntropy())
    model.training_loss({"items": items, "targets": torch.roll(items, -1, 1)}, FullCrossEntropy())
    assert seen[0].tolist() == [5, 9] and seen[1].tolist() == items.tolist()


def test_comirec_topk_diversity_control():
    torch.manual_seed(0)
    model = ComiRec(ComiRecConfig(**SMALL, num_interests=4), 60).eval()
    with torch.no_grad():  # distinct interests, so the merged candidate set is larger than k
        for p in model.parameters():
            p.normal_()
    batch = {"items": ITEMS}
    ids0, f0 = model.topk(batch, 8, diversity=0.0)
    scores = model.score(batch).scatter(1, ITEMS, float("-inf"))
    scores[:, 0] = float("-inf")
    assert torch.equal(ids0, torch.topk(scores, 8).indices)  # λ = 0 is the max-over-interests top-k
    assert not (set(ids0.flatten().tolist()) & set(ITEMS.flatten().tolist()))  # history excluded
    cats = torch.arange(61) % 3  # three categories
    base = category_diversity(ids0, cats).mean()
    ids1, _ = model.topk(batch, 8, diversity=1e3, categories=cats)
    assert category_diversity(ids1, cats).mean() > base
    assert len(set(ids1[0].tolist())) == 8
    proxy = model.proxy_categories()
    assert proxy.shape == (61,) and proxy[0] == -1 and len(proxy[1:].unique()) > 1
    with pytest.raises(ValueError, match="diversity"):
        model.topk(batch, 5, diversity=-1.0)


def test_config_errors_name_the_fix(synthetic_config):
    bad = [({"name": "rearec", "method": "cot"}, "erl or prl"),
           ({"name": "mqsa_ted", "alpha": 2.0}, "alpha"),
           ({"name": "comirec", "extractor": "mind"}, "sa .* or dr"),
           ({"name": "rearec", "reasoning_step": 2}, "reasoning_step")]
    for model, message in bad:
        with pytest.raises(ConfigError, match=message):
            config_from_dict(dict(synthetic_config, model=model))


def test_trainer_fits_statistics_for_trainable_models(synthetic_config):
    cfg = config_from_dict(dict(synthetic_config, model={"name": "mqsa_ted", "max_len": 20, "hidden_size": 16,
                                                         "num_blocks": 1},
                                train={**synthetic_config["train"], "epochs": 1}))
    data = prepare_data(cfg, log=lambda *_: None)
    model = MQSATED(cfg.model, data.vocab.num_items)
    Trainer(model, data.split, cfg.train, cfg.eval, log=lambda *_: None).fit()
    assert model.ted_probs.sum() > 0


RUNS = {
    "rearec": {"name": "rearec", "method": "erl", "reasoning_steps": 2},
    "rearec_prl": {"name": "rearec", "method": "prl", "reasoning_steps": 1},
    "mqsa_ted": {"name": "mqsa_ted", "long_window": 4},
    "comirec": {"name": "comirec", "extractor": "sa", "num_interests": 2},
    "comirec_dr": {"name": "comirec", "extractor": "dr", "num_interests": 2},
}


@pytest.fixture(scope="module")
def interest_csv(tmp_path_factory):
    """Users who each mix two of six item topics, in random order: multi-interest structure (what
    ComiRec models) and no sequential or popularity signal. The first-order Markov log is the
    wrong test for a history-pooling retriever: there it only matches popularity."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(400):
        topics = rng.choice(6, size=2, replace=False)
        for t, item in enumerate(rng.choice(20, size=16) + 20 * rng.choice(topics, size=16)):
            rows.append(f"u{u},i{item},{t}")
    path = tmp_path_factory.mktemp("interests") / "log.csv"
    path.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def popularity_ndcg(synthetic_config, tmp_path_factory):
    run = train(config_from_dict(dict(synthetic_config, model={"name": "popularity"})),
                runs_dir=tmp_path_factory.mktemp("pop"), run_name="pop", log=lambda *_: None)
    return json.loads((run / "metrics.json").read_text())["test"]["ndcg@10"]


@pytest.mark.parametrize("key", list(RUNS))
def test_learns_and_round_trips(key, synthetic_config, popularity_ndcg, interest_csv, tmp_path):
    model = {"max_len": 20, "hidden_size": 32, **RUNS[key]}
    train_cfg = {**synthetic_config["train"], "epochs": 4, "lr": 0.005}
    data, floor = synthetic_config["data"], 3 * popularity_ndcg
    if model["name"] == "comirec":
        train_cfg.update(loss="sampled_softmax", negatives=64, lr=0.02, epochs=8, batch_size=32)
        data = {"path": str(interest_csv)}
        pop = train(config_from_dict({"data": data, "model": {"name": "popularity"}, "train": {"quiet": True}}),
                    runs_dir=tmp_path, run_name="pop", log=lambda *_: None)
        floor = 2 * json.loads((pop / "metrics.json").read_text())["test"]["ndcg@10"]
    else:
        model.update(num_blocks=1, dropout=0.1)
        if model.get("method") == "prl":  # the annealed early steps learn a softer target: more epochs
            train_cfg["epochs"] = 7
    run_dir = train(config_from_dict(dict(synthetic_config, data=data, model=model, train=train_cfg)),
                    runs_dir=tmp_path, run_name=key, log=lambda *_: None)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["ndcg@10"] > floor, metrics["test"]
    again = evaluate_run(run_dir, device="cpu")  # reload the saved weights, re-derive the split
    assert again["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    run = load_run(run_dir)
    batch = history_batch(run.histories.items[:4], run.model.max_len)
    assert torch.allclose(load_run(run_dir).model.score(batch), run.model.score(batch))
    if model["name"] == "comirec":
        ids, _ = run.model.topk(batch, 10, diversity=0.5)
        assert ids.shape == (4, 10)
