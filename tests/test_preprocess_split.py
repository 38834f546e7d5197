import numpy as np
import polars as pl
import pytest

from seqrec.data.preprocess import k_core, preprocess
from seqrec.data.split import leave_one_out, split_sequences
from seqrec.data.vocab import Vocab, build_sequences
from seqrec.errors import DataError


def frame(rows):
    return pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")


def test_stable_sort_keeps_file_order_on_ties():
    df = frame([("a", "z", 2), ("a", "y", 1), ("a", "x", 1), ("b", "q", 5), ("a", "w", 1)])
    out, _ = preprocess(df)
    assert out.filter(pl.col("user") == "a")["item"].to_list() == ["y", "x", "w", "z"]


def test_duplicates_and_consecutive_repeats_are_counted():
    df = frame([("a", "x", 1), ("a", "x", 1), ("a", "x", 2), ("a", "y", 3), ("b", None, 1)])
    out, summary = preprocess(df, dedupe_consecutive=True)
    assert out["item"].to_list() == ["x", "y"]
    removed = {s: r for s, r, _, _ in summary.steps}
    assert removed["read"] == 5
    assert removed["drop rows with an empty user/item/timestamp"] == 4
    assert removed["drop exact duplicate rows"] == 3
    assert "removed" in summary.format()


def test_k_core_is_iterative():
    # dropping item "rare" leaves b and d with one interaction; dropping them leaves x and y with
    # two users each, below 3: a single pass would stop at {a, c}, the iterative core is empty
    pairs = [("a", "x"), ("a", "y"), ("b", "rare"), ("b", "x"), ("c", "rare"), ("c", "x"), ("c", "y"), ("d", "y")]
    rows = [(u, i, t) for t, (u, i) in enumerate(pairs)]
    assert k_core(frame(rows), min_user=2, min_item=3).height == 0
    rows += [("e", "x", 100), ("e", "y", 101)]
    out = k_core(frame(rows), min_user=2, min_item=3)
    assert set(out["user"]) == {"a", "c", "e"}
    assert (out.group_by("item").len()["len"] >= 3).all()
    assert (out.group_by("user").len()["len"] >= 2).all()


def test_filters_that_remove_everything_raise():
    with pytest.raises(DataError, match="no interactions are left"):
        preprocess(frame([("a", "x", 1)]), min_user_interactions=5)


def seqs_from(rows):
    df, _ = preprocess(frame(rows))
    vocab = Vocab.from_interactions(df)
    return vocab, build_sequences(df, vocab)


def test_leave_one_out_never_trains_on_targets():
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(20)}", t) for u in range(30) for t in range(rng.integers(1, 8))]
    vocab, seqs = seqs_from(rows)
    split = leave_one_out(seqs)
    for j, u in enumerate(split.valid.users):
        full = seqs.item_seq(u)
        assert np.array_equal(split.train[j], full[:-2])
        assert split.valid.targets[j] == full[-2] and split.test.targets[j] == full[-1]
        assert np.array_equal(split.test.histories[j], full[:-1])
    short = sum(1 for u in range(len(seqs)) if len(seqs.item_seq(u)) < 3)
    assert len(split.valid) == len(seqs) - short
    if short:
        assert any("fewer than 3" in k for k in split.notes)


def test_temporal_split_has_no_future_in_training():
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", f"i{rng.integers(15)}", int(rng.integers(0, 1000))) for u in range(60) for _ in range(8)]
    vocab, seqs = seqs_from(rows)
    split = split_sequences(seqs, "temporal", cutoff="500", seed=3)
    assert all((t < 500).all() for t in split.train_times)
    assert all((t < 500).all() for t in split.valid.history_times + split.test.history_times)
    assert not set(split.valid.users) & set(split.test.users)
    # each target is the user's first item at or after the cut
    for j, u in enumerate(split.test.users):
        times, items = seqs.time_seq(u), seqs.item_seq(u)
        assert split.test.targets[j] == items[np.searchsorted(times, 500)]


def test_temporal_cutoff_accepts_iso_and_quantile():
    rows = [(f"u{u}", f"i{t % 5}", 1577836800 + 86400 * t + u) for u in range(20) for t in range(10)]
    _, seqs = seqs_from(rows)
    a = split_sequences(seqs, "temporal", cutoff="2020-01-06")
    b = split_sequences(seqs, "temporal", quantile=0.5)
    assert len(a.valid) + len(a.test) == 20 and len(b.valid) + len(b.test) == 20
    with pytest.raises(DataError, match="ISO date"):
        split_sequences(seqs, "temporal", cutoff="next tuesday")
    with pytest.raises(DataError, match="leaves"):
        split_sequences(seqs, "temporal", cutoff="0")


def test_vocab_round_trip(tmp_path):
    v = Vocab(["b", "a", "c"])
    assert v.encode(["a", "zz", "c"]) == ([2, 3], ["zz"])
    assert v.decode([3, 1]) == ["c", "b"]
    v.save(tmp_path / "v.parquet")
    assert Vocab.load(tmp_path / "v.parquet").items == ["b", "a", "c"]


def test_training_batches_all_positions_and_prefixes():
    from seqrec.data.batches import TrainBatches

    seqs = [np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7])]  # the 1-item user has no example

    def examples(batches):
        out = set()
        for b in batches:
            for items, targets in zip(b["items"].tolist(), b["targets"].tolist(), strict=True):
                out.update((tuple(i for i in items[: p + 1] if i), t) for p, t in enumerate(targets) if t)
        return out

    # max_len 2: a whole sequence trains on its last window (2, 3, 4); every prefix has its own
    whole = TrainBatches(seqs, None, max_len=2, batch_size=10)
    assert len(whole) == 1 and examples(whole) == {((2,), 3), ((2, 3), 4), ((5,), 6)}
    prefixes = TrainBatches(seqs, None, max_len=2, batch_size=2, prefixes=True)
    assert len(prefixes) == 2  # 4 prefixes, 2 per batch
    for b in prefixes:
        assert (b["targets"][:, :-1] == 0).all()  # only each prefix's last item is a target
    assert examples(prefixes) == {((1,), 2), ((1, 2), 3), ((2, 3), 4), ((5,), 6)}
