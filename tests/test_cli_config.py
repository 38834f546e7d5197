import json
import subprocess
import sys

import pytest

from seqrec.cli import main
from seqrec.config import apply_overrides, config_from_dict, load_config
from seqrec.errors import ConfigError


def test_unknown_and_mistyped_keys_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'.*Valid keys in \[train\]"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrec"}, "train": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="Did you mean 'hidden_size'"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrec", "hiden_size": 3}})
    with pytest.raises(ConfigError, match="must be of type int"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrec", "num_blocks": "two"}})
    with pytest.raises(ConfigError, match="not one of"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrec"}, "train": {"loss": "mse"}})
    with pytest.raises(ConfigError, match="unknown model 'sasrek'"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrek"}})
    with pytest.raises(ConfigError, match="divisible"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrec", "hidden_size": 10, "num_heads": 3}})
    with pytest.raises(ConfigError, match="unknown section"):
        config_from_dict({"data": {"path": "x"}, "model": {"name": "sasrec"}, "trian": {}})


def test_overrides_and_toml_round_trip(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[data]\npath = "log.csv"\n[model]\nname = "sasrec"\n')
    cfg = load_config(p, ["train.lr=0.005", "model.hidden_size=32", "eval.ks=[1, 5]", "data.format=csv"])
    assert cfg.train.lr == 0.005 and cfg.model.hidden_size == 32 and cfg.eval.ks == [1, 5]
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["lr=1"])
    import tomllib

    from seqrec.config import dumps_toml

    assert config_from_dict(tomllib.loads(dumps_toml(cfg.to_dict()))).to_dict() == cfg.to_dict()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seqrec.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_end_to_end(synthetic_csv, tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'[data]\npath = "{synthetic_csv.name}"\n[model]\nname = "sasrec"\nmax_len = 20\nhidden_size = 32\n'
                   '[train]\nepochs = 2\nbatch_size = 64\n')
    r = run_cli("train", str(cfg), "--data-dir", str(synthetic_csv.parent), "--runs-dir", str(tmp_path / "runs"),
                "--name", "cli", "--quiet")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "cli"
    assert json.loads((run / "metrics.json").read_text())["test"]["hr@10"] > 0
    r = run_cli("evaluate", str(run), "--sampled")
    assert r.returncode == 0 and "SAMPLED" in r.stdout and "test " in r.stdout
    r = run_cli("recommend", str(run), "--user", "u1", "--k", "3", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["items"]) == 3
    r = run_cli("recommend", str(run), "--history", "i1,i2,bogus", "--k", "3")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 3 and "bogus" in r.stderr
    r = run_cli("recommend", str(run), "--user", "nobody")
    assert r.returncode == 2 and "not in this run" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("data", "stats", str(synthetic_csv))
    assert r.returncode == 0 and "users:" in r.stdout


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,iid,ts\na,b,1\n")
    assert main(["data", "stats", str(bad)]) == 2
    assert "--user-col" in capsys.readouterr().err
    assert main(["data", "stats", str(bad), "--user-col", "uid", "--item-col", "iid", "--time-col", "ts"]) == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\npath = "x.csv"\n[model]\nname = "sasrec"\nlayers = 2\n')
    assert main(["train", str(cfg)]) == 2
    assert "unknown key 'model.layers'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
