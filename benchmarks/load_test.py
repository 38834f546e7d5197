"""Bounded load test of `seqrec serve` on loopback: throughput and p50/p95/p99 latency of /recommend.

It starts the real server (a subprocess, `seqrec serve`), waits for /health, sends a fixed number
of requests at each concurrency level over keep-alive HTTP/1.1 connections (a small asyncio client,
so the load generator itself costs little CPU), stops the server and prints markdown rows. It only
ever talks to 127.0.0.1 / ::1 and always stops by itself.

    python benchmarks/load_test.py run /tmp/runs/b1 --requests 2000 --concurrency 1,4,16
    python benchmarks/load_test.py make-synthetic /tmp/serve-runs/syn1m --items 1000000
    python benchmarks/load_test.py run /tmp/serve-runs/syn1m --index exact --requests 500
    python benchmarks/load_test.py run /tmp/serve-runs/syn1m --index hnsw --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOOPBACK = ("127.0.0.1", "::1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _request(reader, writer, host: str, path: str, body: bytes | None) -> tuple[int, bytes]:
    method = "POST" if body is not None else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + (body or b""))
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _worker(host, port, bodies, counter, total, latencies, failures):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            i = counter[0]
            if i >= total:
                return
            counter[0] += 1
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                status, _ = await _request(reader, writer, host, "/recommend", body)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                failures.append(-1)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - start)
            if status != 200:
                failures.append(status)
    finally:
        writer.close()


async def _load(host, port, bodies, total, concurrency):
    latencies: list[float] = []
    failures: list[int] = []
    counter = [0]
    start = time.perf_counter()
    await asyncio.gather(*[_worker(host, port, bodies, counter, total, latencies, failures)
                           for _ in range(concurrency)])
    wall = time.perf_counter() - start
    return latencies, failures, wall


def get_json(host: str, port: int, path: str) -> dict:
    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            status, body = await _request(reader, writer, host, path, None)
        finally:
            writer.close()
        return status, body

    status, body = asyncio.run(go())
    if status != 200:
        raise RuntimeError(f"GET {path} -> {status}: {body[:200]!r}")
    return json.loads(body)


def start_server(args, port: int, state_dir: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "seqrec.cli", "serve", args.run, "--host", args.host, "--port", str(port),
           "--index", args.index, "--threads", str(args.threads), "--state-dir", state_dir, "--read-only", "--quiet"]
    if args.ef_search:
        cmd += ["--ef-search", str(args.ef_search)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + args.startup_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            get_json(args.host, port, "/health")
            return proc
        except (OSError, RuntimeError):
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server did not answer /health within {args.startup_timeout} s")


def cmd_run(args) -> None:
    if args.host not in LOOPBACK:
        sys.exit(f"--host {args.host}: this load test only targets loopback ({', '.join(LOOPBACK)})")
    import polars as pl

    users = pl.read_parquet(Path(args.run) / "histories.parquet", columns=["user"])["user"].to_list()
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(users), min(len(users), max(args.requests, 1)), replace=False)
    bodies = [json.dumps({"user": users[i], "k": args.k}).encode() for i in pick]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="seqrec-load-") as state:
        t0 = time.perf_counter()
        proc = start_server(args, port, args.state_dir or state)
        startup = time.perf_counter() - t0
        try:
            health = get_json(args.host, port, "/health")
            asyncio.run(_load(args.host, port, bodies, min(200, args.requests), 4))  # warm-up, not counted
            rows = []
            for c in args.concurrency:
                lat, fail, wall = asyncio.run(_load(args.host, port, bodies, args.requests, c))
                ms = np.asarray(lat) * 1000
                rows.append((c, len(lat), len(fail), len(lat) / wall, *np.percentile(ms, [50, 95, 99]), ms.max()))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    recall = health.get("ann_recall_at_10")
    title = (f"{Path(args.run).name}: {health['items']:,} items, retrieval {health['retrieval']}"
             + (f", recall@10 vs exact {recall:.3f}" if recall is not None else "")
             + f", --threads {args.threads}, k={args.k}, server start {startup:.1f} s")
    lines = [f"**{title}**", "",
             "| concurrency | requests | failed | req/s | p50 ms | p95 ms | p99 ms | max ms |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, n, f, rps, p50, p95, p99, mx in rows:
        lines.append(f"| {c} | {n} | {f} | {rps:.0f} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {mx:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


def cmd_make_synthetic(args) -> None:
    """A run directory with an N-item SASRec whose item table is clustered random vectors.

    Real item embeddings are clustered (categories, co-purchase), so we draw items around 1,000
    random centres; the untrained transformer's user vector then lies near its history's items,
    as a trained one does. This measures retrieval cost, not recommendation quality.
    """
    import torch

    from seqrec.artifact import Histories, save_run
    from seqrec.config import config_from_dict
    from seqrec.data.vocab import Vocab
    from seqrec.models.registry import build_model

    rng = np.random.default_rng(args.seed)
    n, d = args.items, args.dim
    cfg = config_from_dict({"data": {"path": "synthetic"}, "name": "synthetic-catalogue",
                            "model": {"name": "sasrec", "hidden_size": d, "max_len": 50, "num_blocks": 2,
                                      "dropout": 0.0}})
    torch.manual_seed(args.seed)
    model = build_model("sasrec", cfg.model, n)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    assign = rng.integers(0, len(centres), n)
    table = centres[assign] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    table *= rng.uniform(0.5, 1.5, (n, 1)).astype(np.float32)  # norms vary, as with popularity
    with torch.no_grad():
        model.item_emb.weight[1:] = torch.from_numpy(table)
        model.item_emb.weight[0] = 0
    users = [f"user{i}" for i in range(args.users)]
    items, times = [], []
    for _ in users:  # histories that stay mostly inside a few clusters, like real sessions
        length = int(rng.integers(3, 40))
        cl = rng.integers(0, len(centres), 3)
        pool = np.flatnonzero(np.isin(assign, cl))
        items.append((rng.choice(pool, length) + 1).astype(np.int64))
        times.append(np.arange(length, dtype=np.float64))
    save_run(Path(args.out), cfg, model, Vocab([f"item{i}" for i in range(n)]), Histories(users, items, times),
             {"note": "synthetic catalogue for serving benchmarks; not trained"})
    print(f"wrote {args.out}: {n:,} items, {args.users} users, dim {d}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start `seqrec serve` on loopback and load it")
    r.add_argument("run")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    r.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--index", default="auto")
    r.add_argument("--ef-search", type=int)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--state-dir", help="reuse a state dir (keeps the faiss index cache between runs)")
    r.add_argument("--startup-timeout", type=float, default=900)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="append the markdown table to this file")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("make-synthetic", help="write a large synthetic run directory")
    s.add_argument("out")
    s.add_argument("--items", type=int, default=1_000_000)
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--users", type=int, default=5000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_make_synthetic)
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    args.func(args)


if __name__ == "__main__":
    main()
