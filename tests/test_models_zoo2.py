"""HSTU and SIGMA: shapes, causality / padding, the scan, prefix training, save→load, learning."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from seqrec.artifact import load_run
from seqrec.config import config_from_dict
from seqrec.data.batches import history_batch
from seqrec.errors import ConfigError
from seqrec.losses import FullCrossEntropy
from seqrec.models.blocks.hstu import causal_valid_mask, hstu_attention, log_time_buckets
from seqrec.models.blocks.ssm import (
    MambaBlock,
    mamba_kernel_available,
    selective_scan,
    selective_scan_fast,
    selective_scan_reference,
)
from seqrec.models.hstu import HSTU, HSTUConfig
from seqrec.models.sigma import SIGMA, SIGMAConfig, expand_prefixes, partial_flip_index
from seqrec.pipeline import train
from seqrec.recommender import Recommender

ITEMS = torch.tensor([[0, 0, 0, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]])
TIMES = torch.tensor([[0, 0, 0, 10.0, 400.0, 9e4, 1e6], [1, 2, 3, 4, 5, 6, 7.0]], dtype=torch.float64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The scan and the tiny models here are many small ops; on a shared 2-core machine two
    threads spin and ran several times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hstu(**kw) -> HSTU:
    torch.manual_seed(0)
    cfg = dict(max_len=10, hidden_size=16, num_heads=2, dropout=0.0)
    cfg.update(kw)
    return HSTU(HSTUConfig(**cfg), num_items=30).eval()


def _sigma(**kw) -> SIGMA:
    torch.manual_seed(0)
    cfg = dict(max_len=10, hidden_size=16, d_state=4, dropout=0.0, gate_dropout=0.0, unflipped_last=2)
    cfg.update(kw)
    return SIGMA(SIGMAConfig(**cfg), num_items=30).eval()


# ---------------------------------------------------------------- HSTU


def test_hstu_attention_is_pointwise_silu_normalised_by_max_len():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2)
    mask = causal_valid_mask(torch.tensor([[0, 5, 6]]))
    out = hstu_attention(q, k, v, None, mask, norm=7.0)
    expected = torch.zeros(3, 2)
    for i in (1, 2):
        for j in range(1, i + 1):  # key 0 is padding
            expected[i] += F.silu(q[0, 0, i] @ k[0, 0, j]) / 7.0 * v[0, 0, j]
    assert torch.allclose(out[0], expected, atol=1e-6)
    assert torch.all(out[0, 0] == 0)  # an all-masked (padding) query gives zeros, not NaN


def test_log_time_buckets():
    ts = torch.tensor([[0.0, 1.0, 10.0, 1e9]], dtype=torch.float64)
    b = log_time_buckets(ts, num_buckets=50)
    assert b[0, 0, 1] == 0 and b[0, 1, 0] == 0  # |Δt| <= 1 s → bucket 0
    assert b[0, 2, 0] == int(math.log(10) / 0.301)
    assert b[0, 3, 0] == 50  # clipped to num_buckets


@pytest.mark.parametrize("with_times", [True, False])
def test_hstu_shapes_no_future_leak_and_padding(with_times):
    model = _hstu()
    batch = {"items": ITEMS, **({"timestamps": TIMES} if with_times else {})}
    h = model.encode(batch)
    assert h.shape == (2, 7, 16) and torch.isfinite(h).all()
    changed = dict(batch, items=ITEMS.clone())
    changed["items"][:, -1] = 9
    h2 = model.encode(changed)
    assert torch.allclose(h[:, :-1], h2[:, :-1], atol=1e-6)
    assert not torch.allclose(h[:, -1], h2[:, -1])
    if with_times:  # a later timestamp must not change earlier positions either
        later = dict(batch, timestamps=TIMES.clone())
        later["timestamps"][:, -1] += 1e7
        h3 = model.encode(later)
        assert torch.allclose(h[:, :-1], h3[:, :-1], atol=1e-6)
        assert not torch.allclose(h[:, -1], h3[:, -1])
    # padding does not change the real positions
    short = {"items": ITEMS[:1, 3:], **({"timestamps": TIMES[:1, 3:]} if with_times else {})}
    assert torch.allclose(model.encode(short)[0], h[0, 3:], atol=1e-5)
    assert model.score(batch).shape == (2, 31)
    model.train()
    loss = model.training_loss({**batch, "targets": torch.roll(ITEMS, -1, 1)}, FullCrossEntropy())
    loss.backward()
    assert torch.isfinite(model.item_emb.weight.grad).all()
    assert model.rel_bias.pos_w.grad is not None
    assert (model.rel_bias.ts_w.grad is not None) == with_times


def test_hstu_timestamps_change_scores_only_when_time_is_used():
    with_time, no_time = _hstu(use_time=True), _hstu(use_time=False)
    assert not torch.allclose(with_time.score({"items": ITEMS, "timestamps": TIMES}), with_time.score({"items": ITEMS}))
    assert torch.equal(no_time.score({"items": ITEMS, "timestamps": TIMES}), no_time.score({"items": ITEMS}))


def test_hstu_config_errors_name_the_fix():
    cfg = {"data": {"path": "x.csv"}, "model": {"name": "hstu", "hidden_size": 10, "num_heads": 3}}
    with pytest.raises(ConfigError, match="num_heads"):
        config_from_dict(cfg)
    with pytest.raises(ConfigError, match="temperature"):
        config_from_dict({"data": {"path": "x.csv"}, "model": {"name": "hstu", "temperature": 0.0}})


# ---------------------------------------------------------------- selective scan


def _scan_inputs(dtype=torch.float32, p=3, length=6, e=4, n=5):
    torch.manual_seed(1)
    return (torch.randn(p, length, e, dtype=dtype, requires_grad=True),
            torch.rand(p, length, e, dtype=dtype, requires_grad=True),
            (-torch.rand(e, n, dtype=dtype) - 0.1).requires_grad_(),
            torch.randn(p, length, n, dtype=dtype, requires_grad=True),
            torch.randn(p, length, n, dtype=dtype, requires_grad=True),
            torch.randn(e, dtype=dtype, requires_grad=True))


def test_scan_matches_a_plain_recurrence_and_the_fast_backward_matches_autograd():
    u, delta, A, B, C, D = _scan_inputs()
    y = selective_scan_reference(u, delta, A, B, C, D)
    h = torch.zeros(3, 4, 5)
    for t in range(6):  # the recurrence written out, one element at a time
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        assert torch.allclose(y[:, t], (h * C[:, t, None, :]).sum(-1) + D * u[:, t], atol=1e-5)
    args = _scan_inputs(torch.float64, p=2, length=4, e=3, n=2)
    assert torch.autograd.gradcheck(lambda *a: selective_scan_fast(*a), args)
    ref = torch.autograd.grad(selective_scan_reference(*args).pow(2).sum(), args)
    fast = torch.autograd.grad(selective_scan_fast(*args).pow(2).sum(), args)
    for a, b in zip(ref, fast, strict=True):
        assert torch.allclose(a, b, atol=1e-8)


@pytest.mark.skipif(not mamba_kernel_available(), reason="needs mamba-ssm and a CUDA GPU")
def test_scan_agrees_with_mamba_ssm_kernel():
    args = [a.detach().float().cuda() for a in _scan_inputs(p=4, length=50, e=32, n=16)]
    kernel = selective_scan(*args, use_kernel=True)
    ours = selective_scan_reference(*args)
    assert torch.allclose(kernel, ours, atol=1e-4, rtol=1e-3)


def test_mamba_block_padding_never_reaches_real_positions():
    torch.manual_seed(0)
    block = MambaBlock(8, d_state=4, d_conv=4, expand=2)
    x = torch.randn(1, 5, 8)
    padded = torch.cat([torch.randn(1, 3, 8) * 100, x], 1)  # garbage in the padding slots
    valid = torch.tensor([[False] * 3 + [True] * 5])
    assert torch.allclose(block(padded, valid)[:, 3:], block(x, torch.ones(1, 5, dtype=torch.bool)), atol=1e-5)


# ---------------------------------------------------------------- SIGMA


def test_partial_flip_keeps_real_items_right_aligned():
    items = torch.tensor([[0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 1, 2], [1, 2, 3, 4, 5, 6, 7]])
    idx = partial_flip_index(items > 0, keep_last=2)
    flipped = items.gather(1, idx)
    assert flipped.tolist() == [[0, 0, 3, 2, 1, 4, 5], [0, 0, 0, 0, 0, 1, 2], [5, 4, 3, 2, 1, 6, 7]]
    assert torch.equal(flipped.gather(1, idx), items)  # its own inverse


def test_sigma_shapes_padding_and_bidirectional_last_position():
    model = _sigma()
    h = model.encode({"items": ITEMS})
    assert h.shape == (2, 7, 16) and torch.isfinite(h).all()
    # the prediction (last position) does not depend on how much padding there is
    short = model.encode({"items": ITEMS[:1, 3:]})
    assert torch.allclose(short[0, -1], h[0, -1], atol=1e-5)
    assert torch.allclose(short[0], h[0, 3:], atol=1e-5)
    # ... and sees the whole history, also its oldest item
    first = ITEMS.clone()
    first[:, 3] = 9
    assert not torch.allclose(model.encode({"items": first})[:, -1], h[:, -1])
    assert model.score({"items": ITEMS}).shape == (2, 31)


def test_sigma_prefix_training_encodes_each_prefix_on_its_own():
    model = _sigma(prefix_chunk=3)  # chunks smaller than the number of prefixes
    items = torch.tensor([[0, 0, 4, 5, 6], [1, 2, 3, 4, 5]])
    targets = torch.tensor([[0, 0, 5, 6, 7], [2, 3, 4, 5, 6]])
    rows, ends = torch.nonzero(targets > 0, as_tuple=True)
    prefixes = expand_prefixes(items, rows, ends)
    assert prefixes[0].tolist() == [0, 0, 0, 0, 4] and prefixes[2].tolist() == [0, 0, 4, 5, 6]
    loss = FullCrossEntropy()
    got = model.training_loss({"items": items, "targets": targets}, loss)
    hidden, tgt = [], []
    for b, t in zip(rows.tolist(), ends.tolist(), strict=True):
        hidden.append(model.encode({"items": items[b : b + 1, : t + 1]})[0, -1])
        tgt.append(targets[b, t])
    want = loss(torch.stack(hidden), torch.stack(tgt), model.item_embeddings())
    assert torch.allclose(got, want, atol=1e-5)
    got.backward()
    assert torch.isfinite(model.item_emb.weight.grad).all()
    assert model.layers[0].gmamba.mamba.A_log.grad is not None


def test_sigma_config_errors():
    with pytest.raises(ConfigError, match="train_on"):
        config_from_dict({"data": {"path": "x.csv"}, "model": {"name": "sigma", "train_on": "all"}})
    with pytest.raises(ConfigError, match="odd"):
        config_from_dict({"data": {"path": "x.csv"}, "model": {"name": "sigma", "gru_conv_kernel": 2}})


# ---------------------------------------------------------------- end to end


MODELS = {
    "hstu": {"name": "hstu", "max_len": 20, "hidden_size": 32, "num_blocks": 1, "dropout": 0.1},
    "sigma": {"name": "sigma", "max_len": 20, "hidden_size": 32, "d_state": 4, "expand": 1, "dropout": 0.1},
}


@pytest.fixture(scope="module")
def popularity_ndcg(synthetic_config, tmp_path_factory):
    cfg = dict(synthetic_config, model={"name": "popularity"})
    run = train(config_from_dict(cfg), runs_dir=tmp_path_factory.mktemp("pop"), run_name="pop", log=lambda *_: None)
    return json.loads((run / "metrics.json").read_text())["test"]["ndcg@10"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_learns_beats_popularity_and_round_trips(name, synthetic_config, popularity_ndcg, tmp_path):
    cfg = dict(synthetic_config, model=MODELS[name])
    cfg["train"] = dict(synthetic_config["train"], epochs=2, lr=0.005, num_threads=1)
    run_dir = train(config_from_dict(cfg), runs_dir=tmp_path, run_name=name, log=lambda *_: None)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["ndcg@10"] > 2 * popularity_ndcg
    run = load_run(run_dir)
    again = load_run(run_dir)
    hist = run.histories.items[:3]
    batch = history_batch(hist, run.model.max_len, run.histories.times[:3])
    assert torch.allclose(run.model.score(batch), again.model.score(batch))
    rec = Recommender.load(run_dir)
    assert torch.isfinite(rec.score_histories(hist)).all()  # bare histories, no timestamps
