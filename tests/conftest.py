import pytest
import torch

# One thread: the API tests run servers beside pytest, and two threads per process oversubscribe
# 2 cores (OpenMP threads then wait on each other, measured here at 10-20x slower).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory):
    """A small log with strong first-order structure (see seqrec.data.synthetic)."""
    from seqrec.data.synthetic import write_markov_log

    path = tmp_path_factory.mktemp("data") / "log.csv"
    return write_markov_log(path, num_users=400, num_items=120, mean_length=20, seed=1)


@pytest.fixture(scope="session")
def synthetic_config(synthetic_csv):
    """Raw config dict for a quick SASRec run on the synthetic log."""
    return {
        "data": {"path": str(synthetic_csv)},
        "model": {"name": "sasrec", "max_len": 20, "hidden_size": 32, "num_blocks": 1, "dropout": 0.1},
        "train": {"epochs": 8, "batch_size": 64, "patience": 3, "quiet": True, "lr": 0.003},
    }


@pytest.fixture(scope="session")
def trained_run(synthetic_config, tmp_path_factory):
    """A SASRec run directory trained once per session on the synthetic log."""
    from seqrec.config import config_from_dict
    from seqrec.pipeline import train

    runs = tmp_path_factory.mktemp("runs")
    return train(config_from_dict(synthetic_config), runs_dir=runs, run_name="sasrec", log=lambda *_: None)
