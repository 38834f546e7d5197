"""The HTTP service against a real uvicorn process on a free loopback port (plus a few in-process checks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

TOKEN = "test-token-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run: Path, state: Path, *extra: str, env_token: str | None = TOKEN):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "SEQREC_TOKEN"}
    if env_token:
        env["SEQREC_TOKEN"] = env_token
    proc = subprocess.Popen([sys.executable, "-m", "seqrec.cli", "serve", str(run), "--port", str(port),
                             "--state-dir", str(state), "--threads", "1", "--quiet", "--max-history", "50", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    proc, url = _start(trained_run, state)
    from seqrec.data.vocab import Vocab

    vocab = Vocab.load(Path(trained_run) / "vocab.parquet")
    info = {"proc": proc, "url": url, "state": state, "run": trained_run, "items": vocab.items, "n": vocab.num_items}
    yield info
    _stop(info["proc"])  # the restart test replaces the process; stop whichever is running now


def test_recommend_known_user(server):
    r = httpx.post(server["url"] + "/recommend", json={"user": "u0", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == "u0" and len(body["items"]) == 5 and len(body["scores"]) == 5
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert all(i.startswith("i") for i in body["items"])


def test_recommend_matches_the_python_recommender(server):
    from seqrec.recommender import Recommender

    rec = Recommender.load(server["run"])
    want = rec.recommend(user="u3", k=10)
    got = httpx.post(server["url"] + "/recommend", json={"user": "u3", "k": 10}).json()
    assert got["items"] == want.items


def test_recommend_history_with_unknown_items_and_exclude(server):
    a, b, c = server["items"][:3]
    r = httpx.post(server["url"] + "/recommend",
                   json={"history": [a, b, "no-such-item"], "k": 10, "exclude": [c]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unknown_items"] == ["no-such-item"]
    assert len(body["items"]) == 10 and not {a, b, c} & set(body["items"])  # seen and excluded are left out
    r = httpx.post(server["url"] + "/recommend", json={"history": [a, b], "k": server["n"], "exclude_seen": False})
    assert r.status_code == 200 and {a, b} <= set(r.json()["items"])


def test_plain_curl_style_body_is_accepted(server):
    r = httpx.post(server["url"] + "/recommend", content=b'{"user": "u0", "k": 3}',
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and len(r.json()["items"]) == 3


def test_unknown_user_is_404_with_message(server):
    r = httpx.post(server["url"] + "/recommend", json={"user": "nobody"})
    assert r.status_code == 404
    assert "nobody" in r.json()["detail"] and "history" in r.json()["detail"]


def test_malformed_requests_are_422_with_field_errors(server):
    url = server["url"] + "/recommend"
    r = httpx.post(url, content=b'{"user": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = httpx.post(url, json={"user": "u0", "k": "ten"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "k"]
    r = httpx.post(url, json={"user": "u0", "k": 0})
    assert r.status_code == 422
    r = httpx.post(url, json={"user": "u0", "bogus": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "bogus"]
    r = httpx.post(url, json={})
    assert r.status_code == 422 and "history" in r.text
    r = httpx.post(url, json={"history": ["nope1", "nope2"]})  # nothing known: a clear 422, not a crash
    assert r.status_code == 422 and "none of the history items" in r.json()["detail"]
    r = httpx.post(url, json={"history": [server["items"][0]], "k": 500})  # above the catalogue size
    assert r.status_code == 422 and "catalogue" in r.json()["detail"]


def test_oversize_history_and_body(server):
    r = httpx.post(server["url"] + "/recommend", json={"history": ["i1"] * 51})  # --max-history 50
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "too_long"
    assert r.json()["detail"][0]["input"] == "<omitted: too long>"
    big = json.dumps({"history": ["x" * 100] * 20_000}).encode()  # > 1 MB default body limit
    r = httpx.post(server["url"] + "/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max-body-bytes" in r.json()["detail"]


def test_batch(server):
    r = httpx.post(server["url"] + "/recommend/batch",
                   json={"requests": [{"user": "u0", "k": 2}, {"user": "nobody"}, {"history": [server["items"][4]], "k": 4}]})
    assert r.status_code == 200, r.text
    a, b, c = r.json()["results"]
    assert a["status"] == 200 and len(a["items"]) == 2
    assert b["status"] == 404 and "nobody" in b["error"]
    assert c["status"] == 200 and len(c["items"]) == 4


def test_events_need_a_token(server):
    url = server["url"] + "/events"
    r = httpx.post(url, json={"user": "x", "item": "y"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    r = httpx.post(url, json={"user": "x", "item": "y"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_events_then_recommend_and_restart(server, trained_run):
    item = server["items"][7]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = server["url"]
    r = httpx.post(url + "/events", json={"user": "new-user-1", "item": item, "timestamp": 1_700_000_000},
                   headers=auth)
    assert r.status_code == 200 and r.json() == {"accepted": 1, "unknown_items": []}
    first = httpx.post(url + "/recommend", json={"user": "new-user-1", "k": 10}).json()
    assert first["history_length"] == 1 and item not in first["items"]
    # the new item changes the next recommendation at once, and is no longer recommended
    top = first["items"][0]
    r = httpx.post(url + "/events", json={"events": [{"user": "new-user-1", "item": top},
                                                     {"user": "new-user-1", "item": "brand-new"}]}, headers=auth)
    assert r.json() == {"accepted": 2, "unknown_items": ["brand-new"]}
    second = httpx.post(url + "/recommend", json={"user": "new-user-1", "k": 10}).json()
    assert second["history_length"] == 2 and top not in second["items"]
    assert second["unknown_items"] == ["brand-new"]
    # a restart on the same state dir keeps every accepted event
    _stop(server["proc"])
    proc, url2 = _start(trained_run, server["state"])
    server["proc"], server["url"] = proc, url2
    again = httpx.post(url2 + "/recommend", json={"user": "new-user-1", "k": 10}).json()
    assert again["items"] == second["items"] and again["history_length"] == 2


def test_similar_health_metrics(server):
    url = server["url"]
    item = server["items"][0]
    r = httpx.get(url + f"/items/{item}/similar", params={"k": 5})
    assert r.status_code == 200 and len(r.json()["items"]) == 5 and item not in r.json()["items"]
    assert httpx.get(url + "/items/nope/similar").status_code == 404
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and h["items"] == server["n"] and h["retrieval"] == "exact"
    text = httpx.get(url + "/metrics").text
    assert 'seqrec_requests_total{method="POST",path="/recommend",status="200"}' in text
    assert 'seqrec_request_duration_seconds_bucket{method="POST",path="/recommend",le="+Inf"}' in text
    assert "seqrec_model_batches_total" in text
    assert httpx.get(url + "/docs").status_code == 200
    assert "/recommend/batch" in httpx.get(url + "/openapi.json").json()["paths"]


def test_refuses_writes_without_token(trained_run, tmp_path, monkeypatch, capsys):
    from seqrec.cli import main

    monkeypatch.delenv("SEQREC_TOKEN", raising=False)
    assert main(["serve", str(trained_run), "--state-dir", str(tmp_path), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "--insecure-writes" in err and "SEQREC_TOKEN" in err and "--token-file" in err
    assert main(["serve", str(trained_run), "--state-dir", str(tmp_path), "--token-file", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_read_only_and_protected_reads_in_process(trained_run):
    from fastapi.testclient import TestClient

    from seqrec.artifact import load_run
    from seqrec.serve.app import ServeSettings, create_app
    from seqrec.serve.engine import Engine
    from seqrec.serve.store import open_store

    run = load_run(trained_run)
    engine = Engine(run, open_store(":memory:", run.histories, run.vocab))
    with TestClient(create_app(engine, ServeSettings(writes=False))) as c:
        assert c.post("/events", json={"user": "a", "item": "x"}).status_code in (404, 405)
        assert c.post("/recommend", json={"user": "u1"}).status_code == 200
    with TestClient(create_app(engine, ServeSettings(token="t", protect_reads=True))) as c:
        assert c.post("/recommend", json={"user": "u1"}).status_code == 401
        assert c.post("/recommend", json={"user": "u1"}, headers={"Authorization": "Bearer t"}).status_code == 200
        assert c.get("/health").status_code == 200  # liveness stays open
