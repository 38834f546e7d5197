"""Batch inference (`seqrec predict`) and ONNX export parity with PyTorch."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from seqrec.cli import main


def test_predict_schema_and_agreement(trained_run, tmp_path):
    from seqrec.recommender import Recommender

    out = tmp_path / "recs.parquet"
    assert main(["predict", str(trained_run), "--users", "all", "--k", "7", "--out", str(out),
                 "--batch-size", "64", "--quiet", "--state-dir", str(tmp_path / "state")]) == 0
    df = pl.read_parquet(out)
    assert df.schema == pl.Schema({"user": pl.String, "rank": pl.Int32, "item": pl.String, "score": pl.Float32})
    rec = Recommender.load(trained_run)
    assert df["user"].n_unique() == len(rec.histories.users) and df.height == 7 * len(rec.histories.users)
    assert df.group_by("user").agg(pl.col("rank").max())["rank"].unique().to_list() == [7]
    for user in ("u0", "u17"):
        rows = df.filter(pl.col("user") == user).sort("rank")
        want = rec.recommend(user=user, k=7)
        assert rows["item"].to_list() == want.items
        np.testing.assert_allclose(rows["score"].to_numpy(), want.scores, rtol=1e-4, atol=1e-5)


def test_predict_selected_users_csv_and_errors(trained_run, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\n")
    out = tmp_path / "recs.csv"
    assert main(["predict", str(trained_run), "--users", str(users), "--k", "3", "--out", str(out), "--quiet"]) == 0
    df = pl.read_csv(out)
    assert df.columns == ["user", "rank", "item", "score"] and sorted(df["user"].unique().to_list()) == ["u1", "u2"]
    assert main(["predict", str(trained_run), "--users", "u1,ghost", "--out", str(out), "--quiet"]) == 2
    assert main(["predict", str(trained_run), "--users", "u1,ghost", "--k", "3", "--out", str(out), "--quiet",
                 "--skip-unknown"]) == 0
    assert pl.read_csv(out)["user"].unique().to_list() == ["u1"]
    assert main(["predict", str(trained_run), "--users", "u1", "--out", str(tmp_path / "x.json"), "--quiet"]) == 2


@pytest.mark.parametrize("output", ["user", "scores"])
def test_onnx_matches_pytorch(trained_run, tmp_path, output):
    from seqrec.artifact import load_run
    from seqrec.data.batches import left_pad
    from seqrec.serve.export import onnx_scores

    path = tmp_path / f"model-{output}.onnx"
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(path), "--output", output]) == 0
    model = load_run(trained_run).model
    rng = np.random.default_rng(0)
    for length in (1, 6, model.max_len):  # dynamic length, with left padding in most rows
        histories = [rng.integers(1, model.num_items + 1, rng.integers(1, length + 1)) for _ in range(5)]
        items = left_pad(histories, length)
        with torch.inference_mode():
            batch = {"items": torch.from_numpy(items)}
            want = (model.user_representation(batch) if output == "user" else model.score(batch)).numpy()
        got = onnx_scores(path, items)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert not model.training


def test_export_rejects_unknown_format(trained_run, tmp_path):
    assert main(["export", str(trained_run), "--format", "tflite", "--out", str(tmp_path / "m")]) == 2
