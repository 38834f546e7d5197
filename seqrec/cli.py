"""Command line: thin wrappers over the library. Every user error exits with code 2 and a message."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqrec.errors import SeqrecError


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_train(args) -> None:
    from seqrec.pipeline import train

    overrides = list(args.set or [])
    if args.quiet:
        overrides.append("train.quiet=true")
    if args.resume:
        import tomllib

        from seqrec.config import apply_overrides, config_from_dict

        run = Path(args.resume)
        if not (run / "config.toml").exists():
            raise SeqrecError(f"--resume {run}: no config.toml there; pass the run directory of an interrupted run")
        cfg = config_from_dict(apply_overrides(tomllib.loads((run / "config.toml").read_text()), overrides))
        train(cfg, data_dir=args.data_dir, resume=run)
        return
    if not args.config:
        raise SeqrecError("give a config file: seqrec train configs/<name>.toml (or --resume <run dir>)")
    train(args.config, data_dir=args.data_dir, runs_dir=args.runs_dir, run_name=args.name, overrides=overrides)


def cmd_evaluate(args) -> None:
    from seqrec.pipeline import evaluate_run, format_metrics, save_evaluation

    ks = [int(k) for k in _csv_list(args.ks)] if args.ks else None
    result = evaluate_run(args.run, device=args.device, sampled=args.sampled or None,
                          mask_seen=False if args.no_mask_seen else None, ks=ks,
                          save_ranks=not args.no_mask_seen)  # the run's ranks stay the default evaluation's
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("valid " + format_metrics(result["valid"]))
        print("test  " + format_metrics(result["test"]))
        if "test_sampled" in result:
            print(f"test (SAMPLED, {result['test_sampled']['sampled_candidates']} negatives; not comparable "
                  "with full ranking) " + format_metrics(result["test_sampled"]))
    save_evaluation(Path(args.run), result)


def cmd_compare(args) -> None:
    from seqrec.evaluate.compare import compare_runs, format_comparison

    result = compare_runs(args.run_a, args.run_b, _csv_list(args.metrics))
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_comparison(result, args.run_a, args.run_b))


def cmd_recommend(args) -> None:
    from seqrec.recommender import Recommender

    if not args.user and not args.history:
        raise SeqrecError("give --user <id> or --history item1,item2,...")
    rec = Recommender.load(args.run)
    out = rec.recommend(user=args.user, history=_csv_list(args.history) if args.history else None, k=args.k,
                        exclude=_csv_list(args.exclude) if args.exclude else None,
                        exclude_seen=not args.include_seen)
    if args.json:
        print(json.dumps(out.to_dict()))
        return
    if out.unknown_items:
        print(f"note: {len(out.unknown_items)} history item(s) unknown to this run, ignored: "
              f"{', '.join(out.unknown_items[:10])}", file=sys.stderr)
    for rank, (item, score) in enumerate(zip(out.items, out.scores, strict=True), 1):
        print(f"{rank:3d}  {item}  {score:.4f}")


def cmd_data_stats(args) -> None:
    from seqrec.data.stats import log_stats

    print(log_stats(args.path, format=args.format, user_col=args.user_col, item_col=args.item_col,
                    time_col=args.time_col, separator=args.sep))


def cmd_models(args) -> None:
    from seqrec.models.registry import MODELS

    for name, (_, model_cls) in MODELS.items():
        doc = (sys.modules[model_cls.__module__].__doc__ or "").strip().splitlines()
        print(f"{name:<14}{doc[0] if doc else ''}")


def cmd_synth(args) -> None:
    from seqrec.data.synthetic import write_markov_log

    path = write_markov_log(args.out, num_users=args.users, num_items=args.items, seed=args.seed)
    print(f"wrote a synthetic log to {path}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqrec", description="Sequential recommendation: train, evaluate, recommend.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train and evaluate an experiment config")
    t.add_argument("config", nargs="?", help="experiment TOML file")
    t.add_argument("--data-dir", help="directory that relative data paths in the config are resolved against")
    t.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs)")
    t.add_argument("--name", help="run directory name (default: config name + time)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    t.add_argument("--resume", metavar="RUN", help="resume an interrupted run directory")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="re-evaluate a saved run (full ranking unless --sampled)")
    e.add_argument("run")
    e.add_argument("--sampled", action="store_true", help="also report sampled-candidate metrics (labelled)")
    e.add_argument("--no-mask-seen", action="store_true", help="let already-seen items be ranked")
    e.add_argument("--ks", help="comma-separated cut-offs, e.g. 5,10,20")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="paired test of two runs on the same test users (is B better than A?)")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--metrics", default="hr@10,ndcg@10,mrr@10", help="comma-separated, e.g. ndcg@10,hr@20")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("recommend", help="next items for a known user or a history")
    r.add_argument("run")
    r.add_argument("--user", help="external user id known to the run")
    r.add_argument("--history", help="comma-separated external item ids, oldest first")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--exclude", help="comma-separated item ids never to recommend")
    r.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_recommend)

    d = sub.add_parser("data", help="inspect interaction logs")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="counts, lengths and time range of a log")
    s.add_argument("path")
    s.add_argument("--format", default="auto")
    s.add_argument("--user-col", default="user")
    s.add_argument("--item-col", default="item")
    s.add_argument("--time-col", default="timestamp")
    s.add_argument("--sep", help="field separator for CSV-like files")
    s.set_defaults(func=cmd_data_stats)

    m = sub.add_parser("models", help="list registered models")
    m.set_defaults(func=cmd_models)

    y = sub.add_parser("synth", help="write a synthetic log with sequential structure (for trying things out)")
    y.add_argument("out")
    y.add_argument("--users", type=int, default=2000)
    y.add_argument("--items", type=int, default=500)
    y.add_argument("--seed", type=int, default=0)
    y.set_defaults(func=cmd_synth)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


_EXTRA_COMMANDS: list = []  # other modules (serving) append a function that adds their sub-commands


def main(argv: list[str] | None = None) -> int:
    _load_extra_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except SeqrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _load_extra_commands() -> None:
    try:
        from seqrec.serve.commands import register  # noqa: F401
    except ImportError:
        return
    if register not in _EXTRA_COMMANDS:
        _EXTRA_COMMANDS.append(register)


if __name__ == "__main__":
    sys.exit(main())
