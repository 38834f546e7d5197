import math

import numpy as np
import pytest
import torch

from seqrec.data.split import EvalSet
from seqrec.evaluate.metrics import coverage, metrics_from_ranks
from seqrec.evaluate.ranking import evaluate
from seqrec.losses import build_loss
from seqrec.models.base import SequentialRecommender


def test_metrics_by_hand():
    ranks = np.array([1, 3, 11, np.inf])
    m = metrics_from_ranks(ranks, [1, 5, 10])
    assert m["hr@1"] == 0.25 and m["hr@5"] == 0.5 and m["hr@10"] == 0.5
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(4)) / 4)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["ndcg@1"] == pytest.approx(0.25)


def test_coverage():
    top = np.array([[1, 2, 3], [1, 4, 5]])
    assert coverage(top, [1, 3], num_items=10) == {"coverage@1": 0.1, "coverage@3": 0.5}


class FixedScores(SequentialRecommender):
    """Scores every history with the same fixed vector."""

    def __init__(self, scores):
        super().__init__(None, len(scores) - 1)
        self.s = torch.tensor(scores, dtype=torch.float32)

    def score(self, batch):
        return self.s.expand(batch["items"].shape[0], -1).clone()


def eval_set(histories, targets):
    return EvalSet(list(range(len(targets))), [np.array(h) for h in histories], [], np.array(targets))


def test_full_ranking_masks_seen_items_by_hand():
    # item scores: 5 > 4 > 3 > 2 > 1 (item id = index)
    model = FixedScores([0, 1, 2, 3, 4, 5])
    data = eval_set([[5], [1], [5, 4]], [4, 4, 3])
    m = evaluate(model, data, ks=[1, 2])
    # user0: 5 masked → 4 is rank 1; user1: rank 2 (5 above); user2: 5,4 masked → 3 is rank 1
    assert m["hr@1"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3) + 1) / 3)
    unmasked = evaluate(model, data, ks=[1, 2], mask_seen=False)
    assert unmasked["hr@1"] == 0.0 and unmasked["hr@2"] == pytest.approx(2 / 3)


def test_ties_rank_pessimistically():
    model = FixedScores([0, 1, 1, 1, 1, 1])  # a constant scorer must not look good
    m = evaluate(model, eval_set([[1]], [3]), ks=[1, 3])
    assert m["hr@1"] == 0.0 and m["hr@3"] == 0.0


def test_target_in_history_is_a_miss_when_masked():
    model = FixedScores([0, 1, 2, 3])
    assert evaluate(model, eval_set([[3]], [3]), ks=[3])["hr@3"] == 0.0


def test_sampled_metrics_are_labelled():
    model = FixedScores(list(range(50)))
    m = evaluate(model, eval_set([[1]] * 4, [49] * 4), ks=[1], sampled=True, num_sampled=10)
    assert set(m) == {"sampled_hr@1", "sampled_ndcg@1", "sampled_mrr@1", "sampled_candidates"}
    assert m["sampled_hr@1"] == 1.0


@pytest.mark.parametrize("name,sampler", [("ce", "uniform"), ("sampled_softmax", "uniform"),
                                          ("sampled_softmax", "popularity"), ("sampled_softmax", "in_batch"),
                                          ("bce", "uniform"), ("gbce", "uniform")])
def test_loss_gradients_push_the_positive_up(name, sampler):
    torch.manual_seed(0)
    n, d = 40, 8
    counts = np.arange(n + 1)
    loss_fn = build_loss(name, n, counts, negatives=8, sampler=sampler)
    items = torch.randn(n + 1, d, requires_grad=True)
    hidden = torch.randn(16, d, requires_grad=True)
    targets = torch.randint(1, n + 1, (16,))
    loss = loss_fn(hidden, targets, items)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(hidden.grad).all() and hidden.grad.abs().sum() > 0
    # one small step along the negative gradient increases each positive's score on average
    before = (hidden * items[targets]).sum(1)
    with torch.no_grad():
        h2 = hidden - 0.05 * hidden.grad / hidden.grad.norm()
        e2 = items - 0.05 * items.grad / items.grad.norm()
    after = (h2 * e2[targets]).sum(1)
    assert (after - before).mean() > 0
    assert items.grad[0].abs().sum() == 0 or name != "ce"  # padding is never a class


def test_full_ce_matches_torch_reference():
    torch.manual_seed(0)
    h = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    e = torch.randn(30, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randint(1, 30, (12,))
    build_loss("ce", 29)(h, t, e).backward()
    gh, ge = h.grad.clone(), e.grad.clone()
    h.grad = e.grad = None
    logits = h @ e.T
    ref = torch.nn.functional.cross_entropy(logits[:, 1:], t - 1)
    ref.backward()
    assert torch.allclose(gh, h.grad, atol=1e-5) and torch.allclose(ge, e.grad, atol=1e-5)


def test_full_ce_in_chunks_matches_torch_reference(monkeypatch):
    """Rows are processed in chunks (forward and recomputed backward); force several, uneven."""
    import seqrec.losses

    monkeypatch.setattr(seqrec.losses, "_chunk_rows", lambda n: 5)
    torch.manual_seed(1)
    h = torch.randn(23, 8, requires_grad=True)
    e = torch.randn(40, 8, requires_grad=True)
    t = torch.randint(1, 40, (23,))
    loss = build_loss("ce", 39)(h, t, e)
    loss.backward()
    gh, ge = h.grad.clone(), e.grad.clone()
    h.grad = e.grad = None
    ref = torch.nn.functional.cross_entropy((h @ e.T)[:, 1:], t - 1)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(gh, h.grad, atol=1e-5) and torch.allclose(ge, e.grad, atol=1e-5)
    assert ge[0].abs().sum() == 0  # the padding row gets no gradient


def test_full_ce_under_cpu_bf16_autocast_is_close_to_float32():
    torch.manual_seed(2)
    h = torch.randn(300, 16, requires_grad=True)
    e = (0.3 * torch.randn(500, 16)).requires_grad_()
    t = torch.randint(1, 500, (300,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = build_loss("ce", 499)(h, t, e)
    loss.backward()
    assert h.grad.dtype == torch.float32 and e.grad.dtype == torch.float32
    gh, ge = h.grad.clone(), e.grad.clone()
    h.grad = e.grad = None
    ref = torch.nn.functional.cross_entropy((h @ e.T)[:, 1:], t - 1)
    ref.backward()
    assert abs(float(loss) - float(ref)) < 1e-2 * float(ref)
    assert (gh - h.grad).norm() < 0.02 * h.grad.norm() and (ge - e.grad).norm() < 0.02 * e.grad.norm()


def test_gbce_beta():
    loss = build_loss("gbce", 1001, negatives=100, gbce_t=0.75)
    alpha = 100 / 1000
    assert loss.beta == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    assert build_loss("gbce", 1001, negatives=100, gbce_t=0.0).beta == pytest.approx(1.0)


def test_length_sorted_batches_give_the_same_metrics_as_one_user_at_a_time():
    # evaluation groups users by history length; a real model with padding must score the same
    from seqrec.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(max_len=6, hidden_size=16, num_heads=2, dropout=0.0), num_items=25).eval()
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 26, size=n) for n in rng.integers(1, 12, size=40)]
    data = eval_set(histories, rng.integers(1, 26, size=40))
    batched = evaluate(model, data, ks=[5, 10], batch_size=16)
    single = evaluate(model, data, ks=[5, 10], batch_size=1)
    for key in ("hr@5", "hr@10", "ndcg@10", "mrr@10"):
        assert batched[key] == pytest.approx(single[key], abs=1e-9)
