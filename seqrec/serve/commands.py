"""`seqrec serve`, `seqrec predict` and `seqrec export`: added to the CLI through `register`."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from seqrec.errors import SeqrecError

DEFAULT_STATE_DIR = Path(os.environ.get("SEQREC_STATE_DIR", Path.home() / ".local" / "state" / "seqrec"))


def _state_paths(run_dir: Path, state_dir: Path) -> Path:
    """Per-run folder in the state dir: the run's name plus a hash of its absolute path."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return state_dir / f"{run_dir.resolve().name}-{digest}"


def _read_token(token_file: str | None) -> str | None:
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise SeqrecError(f"--token-file {path} does not exist; write the token into it (one line)")
        token = path.read_text().strip()
        if not token:
            raise SeqrecError(f"--token-file {path} is empty; put the bearer token in it")
        return token
    return os.environ.get("SEQREC_TOKEN") or None


def _threads(n: int) -> None:
    import torch

    if n < 1:
        raise SeqrecError(f"--threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def build_engine(args, log=print):
    """Load the run, open (seed) the store, build the index: shared by serve and predict."""
    from seqrec.artifact import load_run
    from seqrec.serve.engine import Engine
    from seqrec.serve.store import open_store

    run_dir = Path(args.run)
    run = load_run(run_dir)
    state = _state_paths(run_dir, Path(args.state_dir))
    store_path = args.store or (state / "histories.sqlite")
    store = open_store(store_path, run.histories, run.vocab, source=str(run_dir.resolve()))
    params = {}
    if getattr(args, "ef_search", None):
        params["ef_search"] = args.ef_search
    if getattr(args, "nprobe", None):
        params["nprobe"] = args.nprobe
    if args.seen_limit is not None and args.seen_limit < run.model.max_len:
        raise SeqrecError(f"--seen-limit {args.seen_limit} is below the model's max_len ({run.model.max_len}); "
                          "the model would see less history than it was trained on")
    engine = Engine(run, store, index=args.index, ann_threshold=args.ann_threshold, seen_limit=args.seen_limit,
                    index_cache=None if args.no_index_cache else state, log=log, **params)
    return engine, store_path


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory made by `seqrec train`")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                   help="where the history store and index cache live (default: $SEQREC_STATE_DIR or "
                        "~/.local/state/seqrec)")
    p.add_argument("--store", help="history store file (SQLite; ':memory:' keeps nothing); default: "
                                   "<state-dir>/<run>-<hash>/histories.sqlite, seeded from the run on first use")
    p.add_argument("--index", default="auto", choices=["auto", "exact", "hnsw", "ivf"],
                   help="retrieval: exact matrix product, faiss HNSW/IVF, or auto (exact below --ann-threshold)")
    p.add_argument("--ann-threshold", type=int, default=100_000, help="catalogue size from which auto uses HNSW")
    p.add_argument("--ef-search", type=int, help="HNSW search depth (default 128; higher = better recall, slower)")
    p.add_argument("--nprobe", type=int, help="IVF lists searched (default 32)")
    p.add_argument("--no-index-cache", action="store_true", help="rebuild the faiss index instead of reusing it")
    p.add_argument("--seen-limit", type=int, help="read at most this many recent events per user (seen-item "
                                                  "masking looks that far back; default: the whole history)")
    p.add_argument("--threads", type=int, default=1, help="torch/faiss threads per request (default 1)")


def cmd_serve(args) -> None:
    from seqrec.serve.app import ServeSettings, create_app

    host_ok = args.host in ("127.0.0.1", "localhost", "::1")
    settings = ServeSettings(max_history=args.max_history, max_k=args.max_k, max_batch=args.max_batch,
                             max_body_bytes=args.max_body_bytes, token=_read_token(args.token_file),
                             writes=not args.read_only, protect_reads=args.protect_reads,
                             insecure_writes=args.insecure_writes)
    settings.check()  # refuse unsafe settings before spending time on loading
    if not host_ok and settings.writes and not settings.token:
        raise SeqrecError(f"--host {args.host} exposes unauthenticated writes beyond this machine; set a token")
    _threads(args.threads)
    log = (lambda *_: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    engine, store_path = build_engine(args, log)
    if engine.index is not None and engine.index.kind != "exact":
        recall = engine.measure_recall(10)
        if recall is not None:
            log(f"ANN recall@10 against exact on {min(256, len(engine.run.histories.users))} known users: {recall:.3f}")
    app = create_app(engine, settings)
    log(f"serving {engine.run.path} ({engine.num_items:,} items, retrieval {engine.index_kind}, store {store_path}) "
        f"on http://{args.host}:{args.port} (docs at /docs)")
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    engine.store.close()


def cmd_predict(args) -> None:
    from seqrec.serve.predict import parse_users, predict

    _threads(args.threads)
    log = (lambda *_: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    if args.store is None and not args.live:
        args.store = ":memory:"  # the run's own histories, not the live store (use --live for that)
    engine, _ = build_engine(args, log)
    rows = predict(engine, args.out, parse_users(args.users), k=args.k, batch_size=args.batch_size,
                   exclude_seen=not args.include_seen, skip_unknown=args.skip_unknown, progress=not args.quiet)
    log(f"wrote {rows:,} rows to {args.out}")


def cmd_export(args) -> None:
    from seqrec.artifact import load_run
    from seqrec.serve.export import export_onnx

    if args.format != "onnx":
        raise SeqrecError(f"--format {args.format}: only onnx is supported")
    run = load_run(args.run)
    path = export_onnx(run.model, args.out, output=args.output, opset=args.opset)
    print(f"wrote {path} (input 'items' int64 (batch, length ≤ {run.model.max_len}), left-padded with 0; "
          f"output {'user vector' if args.output == 'user' else 'scores over items 0..N'})")
    if args.output == "user" and args.item_table:
        import numpy as np
        import torch

        with torch.inference_mode():
            np.save(args.item_table, run.model.item_embeddings().float().numpy())
        print(f"wrote the item table (row = internal id; vocab.parquet maps ids) to {args.item_table}")


def register(sub) -> None:
    s = sub.add_parser("serve", help="HTTP next-item service (FastAPI + uvicorn)")
    _add_engine_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token-file", help="file holding the bearer token for writes (else $SEQREC_TOKEN)")
    s.add_argument("--read-only", action="store_true", help="no /events endpoint")
    s.add_argument("--insecure-writes", action="store_true", help="accept /events without a token (loopback only)")
    s.add_argument("--protect-reads", action="store_true", help="require the token for reads too")
    s.add_argument("--max-history", type=int, default=1000, help="items allowed in an explicit history")
    s.add_argument("--max-k", type=int, default=1000)
    s.add_argument("--max-batch", type=int, default=256, help="requests per /recommend/batch, events per /events")
    s.add_argument("--max-body-bytes", type=int, default=1_000_000)
    s.add_argument("--log-level", default="warning")
    s.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_serve)

    p = sub.add_parser("predict", help="batch top-k for many users to Parquet/CSV")
    _add_engine_args(p)
    p.add_argument("--users", default="all", help="'all', a comma list, or a file with one user id per line")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--out", required=True, help="output file; .parquet or .csv decides the format")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    p.add_argument("--skip-unknown", action="store_true", help="leave out users with no known history")
    p.add_argument("--live", action="store_true", help="use the serving store's histories (with /events) "
                                                       "instead of the run's")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("export", help="export the model for other runtimes (ONNX)")
    e.add_argument("run")
    e.add_argument("--format", default="onnx")
    e.add_argument("--out", required=True)
    e.add_argument("--output", default="user", choices=["user", "scores"],
                   help="user: the user vector (B, D), for ANN serving; scores: (B, N+1) over the catalogue")
    e.add_argument("--item-table", help="with --output user: also save the item table as .npy")
    e.add_argument("--opset", type=int, default=17)
    e.set_defaults(func=cmd_export)
