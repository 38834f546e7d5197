"""Per-user test ranks, their standard errors, and the paired comparison of two runs."""

import json
import math
import shutil

import numpy as np
import pytest

from seqrec.cli import main
from seqrec.config import config_from_dict
from seqrec.errors import SeqrecError
from seqrec.evaluate.compare import compare_runs, paired_difference
from seqrec.evaluate.metrics import metrics_from_ranks, per_user, standard_errors
from seqrec.pipeline import train


def test_per_user_terms_average_to_the_metric():
    ranks = np.array([1, 3, 11, np.inf])
    np.testing.assert_allclose(per_user(ranks, "ndcg@10"), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(per_user(ranks, "mrr@10"), [1.0, 1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(per_user(ranks, "hr@20"), [1.0, 1.0, 1.0, 0.0])
    for m, v in metrics_from_ranks(ranks, [5, 10]).items():
        assert per_user(ranks, m).mean() == pytest.approx(v)
    with pytest.raises(ValueError, match="hr@K"):
        per_user(ranks, "recall10")


def test_standard_error_by_hand():
    # hr@10 terms 1, 1, 0, 0: sample sd sqrt(1/3), se = sqrt(1/3) / 2
    se = standard_errors(np.array([1, 3, 11, np.inf]), [10])
    assert se["hr@10"] == pytest.approx(math.sqrt(1 / 3) / 2)
    assert standard_errors(np.array([1.0]), [10]) == {}


def test_paired_difference_by_hand():
    a, b = np.array([1, 2, np.inf]), np.array([1, 1, 1])
    d = paired_difference(a, b, "hr@10")  # differences 0, 0, 1
    assert (d.a, d.b, d.difference) == pytest.approx((2 / 3, 1.0, 1 / 3))
    assert d.standard_error == pytest.approx(1 / 3)  # sd sqrt(1/3) over sqrt(3)
    assert (d.low, d.high) == pytest.approx((1 / 3 - 1.96 / 3, 1 / 3 + 1.96 / 3))
    assert d.p_value == pytest.approx(math.erfc(1 / math.sqrt(2)))  # z = 1
    same = paired_difference(a, a, "ndcg@10")
    assert same.difference == 0 and same.p_value == 1.0


@pytest.fixture(scope="module")
def pop_and_markov(synthetic_config, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cmp")
    out = {}
    for name in ("popularity", "markov"):
        cfg = config_from_dict(dict(synthetic_config, model={"name": name}))
        out[name] = train(cfg, runs_dir=runs, run_name=name, log=lambda *_: None)
    return out


def test_training_saves_ranks_and_standard_errors(pop_and_markov):
    run = pop_and_markov["markov"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["test_se"]["ndcg@10"] < 0.05
    from seqrec.artifact import load_test_ranks

    ranks = load_test_ranks(run)
    assert len(ranks) == metrics["test"]["users"] == ranks["user"].n_unique()
    assert per_user(ranks["rank"].to_numpy(), "ndcg@10").mean() == pytest.approx(metrics["test"]["ndcg@10"])


def test_markov_beats_popularity_beyond_noise(pop_and_markov, capsys):
    c = compare_runs(pop_and_markov["popularity"], pop_and_markov["markov"], ["ndcg@10"])
    m = c.metrics[0]
    assert m.difference > 0.2 and m.low > 0 and m.p_value < 1e-6
    assert c.b_ranks_higher > c.a_ranks_higher
    same = compare_runs(pop_and_markov["markov"], pop_and_markov["markov"])
    assert all(x.difference == 0 and x.p_value == 1.0 for x in same.metrics)
    assert main(["compare", str(pop_and_markov["popularity"]), str(pop_and_markov["markov"])]) == 0
    out = capsys.readouterr().out
    assert "ndcg@10" in out and "95% interval" in out and "users paired" in out


def test_compare_refuses_runs_on_different_test_sets(pop_and_markov, synthetic_config, tmp_path, capsys):
    from seqrec.data.synthetic import write_markov_log

    other = write_markov_log(tmp_path / "other.csv", num_users=300, num_items=120, mean_length=20, seed=7)
    cfg = config_from_dict(dict(synthetic_config, data={"path": str(other)}, model={"name": "popularity"}))
    run = train(cfg, runs_dir=tmp_path, run_name="other", log=lambda *_: None)
    with pytest.raises(SeqrecError, match="different users"):
        compare_runs(pop_and_markov["popularity"], run)
    assert main(["compare", str(pop_and_markov["popularity"]), str(pop_and_markov["markov"]),
                 "--metrics", "recall10"]) == 2
    assert "hr@K" in capsys.readouterr().err


def test_old_run_without_ranks_is_told_to_reevaluate(pop_and_markov, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(pop_and_markov["markov"], old)
    (old / "test_ranks.parquet").unlink()
    assert main(["compare", str(old), str(pop_and_markov["markov"])]) == 2
    assert "seqrec evaluate" in capsys.readouterr().err
    assert main(["evaluate", str(old)]) == 0
    same = compare_runs(old, pop_and_markov["markov"])
    assert all(x.difference == 0 for x in same.metrics)
