"""Command line: ``python -m harness {train,report,compare} ...``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import data as data_mod
from . import recipes


def _train(args) -> int:
    from . import metrics, train

    t0 = time.perf_counter()
    if args.recipe_file:
        recipe = recipes.from_file(args.recipe_file, args.dataset, args.profile)
    else:
        recipe = recipes.get(args.dataset, args.recipe, args.profile)
    ds = data_mod.load(args.dataset, args.data_root, download=not args.no_download)
    dev = train.resolve_device(args.device)
    runtime = train.Runtime.default(dev, deterministic=args.deterministic, compile=args.compile)
    result = train.train(
        recipe, ds, args.profile, device=dev, cache_dir=args.cache_dir, use_cache=not args.no_cache, runtime=runtime,
    )
    preds = result.predictions(ds, "test")
    smp = metrics.Samples.from_logits(preds.logits, preds.labels)
    out = {
        "dataset": args.dataset,
        "data": ds.source,
        "data_fingerprint": ds.fingerprint,
        "recipe": recipe.name,
        "profile": args.profile,
        "recipe_hash": recipe.hash(),
        "cache_key": result.cache_key,
        "test_accuracy": round(metrics.accuracy(smp), 6),
        "test_loss": round(metrics.loss(smp), 6),
        "best_epoch": result.best_epoch,
        "val_accuracy": round(result.kept.get("val_accuracy", float("nan")), 6),
        "train_size": result.train_size,
        "device": str(dev),
        "runtime": runtime.to_dict(),
        "cached": result.cached,
        "train_seconds": round(result.train_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if result.temperature is not None:
        out["temperature"] = round(result.temperature, 6)
    print(json.dumps(out, allow_nan=False))
    return 0


def _bench(args) -> int:
    from . import bench, train

    dev = train.resolve_device(args.device)
    results = []
    for name in args.dataset:
        recipe = recipes.get(name, args.recipe, "full")
        if args.synthetic or name != "fashion-mnist":
            shape, k = ((1, 28, 28), 10) if name == "fashion-mnist" else ((3, 32, 32), 100 if name == "cifar100" else 10)
            ds = bench.synthetic(name, shape, k, recipe.batch_size * (args.steps + 8))
        else:
            ds = data_mod.load(name, args.data_root, download=False)
        results.append(bench.compare(recipe, ds, steps=args.steps, rounds=args.rounds, device=dev))
    print(bench.table(results))
    if args.json:
        from .report import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


def _report(args) -> int:
    from . import report

    path = report.rebuild(args.run_dir)
    print(f"rebuilt {path}")
    return 0


def _compare(args) -> int:
    from . import report

    print(report.compare_runs(args.run_a, args.run_b))
    return 0


def _improvements(args) -> int:
    from pathlib import Path

    from .gates import Gates
    from .report import catalogue

    text = catalogue.table(Path(args.reports), Gates.load(args.gates), args.dataset, args.profile)
    if args.readme:
        catalogue.rewrite_readme(Path(args.readme), text)
        print(f"rewrote the improvements table in {args.readme}")
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="Train, report and compare CNN stress runs.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe (or load it from the model cache) and print a JSON summary")
    t.add_argument("--dataset", required=True, choices=data_mod.DATASETS)
    t.add_argument("--recipe", default="baseline", choices=recipes.names(), help="baseline or an improvement")
    t.add_argument("--recipe-file", help="a TOML recipe file (overrides --recipe); see README")
    t.add_argument("--profile", default="smoke", choices=recipes.PROFILES)
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    t.add_argument("--data-root", help=f"where the datasets are (also ${data_mod.DATA_ROOT_ENV})")
    t.add_argument("--cache-dir", help="model cache folder (also $CNN_STRESS_CACHE)")
    t.add_argument("--no-cache", action="store_true", help="train even if cached, and do not write the cache")
    t.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")
    t.add_argument("--deterministic", action="store_true", help="bit-exact reruns on CUDA (no cudnn.benchmark)")
    t.add_argument("--compile", action="store_true", help="train with torch.compile")
    t.set_defaults(func=_train)

    b = sub.add_parser("bench", help="training speed: the harness's loop against the usual notebook loop, side by side")
    b.add_argument("--dataset", nargs="+", default=["fashion-mnist"], choices=data_mod.DATASETS)
    b.add_argument("--recipe", default="augment", choices=recipes.names(), help="default: augment (flip + rotation)")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    b.add_argument("--steps", type=int, default=60, help="optimiser steps per timed round")
    b.add_argument("--rounds", type=int, default=3, help="rounds per loop; the best is kept")
    b.add_argument("--synthetic", action="store_true", help="random images of the dataset's shape (no files needed)")
    b.add_argument("--data-root")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.set_defaults(func=_bench)

    r = sub.add_parser("report", help="rebuild index.html, summary.md and figures of a run from its results.json")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)

    i = sub.add_parser("improvements", help="the improvements table (recipe change, documented effect, measured "
                       "effect with its interval) from the newest runs' reports")
    i.add_argument("--reports", default="reports")
    i.add_argument("--gates", default="gates.toml")
    i.add_argument("--dataset", default="fashion-mnist")
    i.add_argument("--profile", default="smoke")
    i.add_argument("--readme", help="rewrite the table between the README's improvements markers")
    i.set_defaults(func=_improvements)

    c = sub.add_parser("compare", help="print what changed between two runs (e.g. main vs branch)")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.set_defaults(func=_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (data_mod.DatasetNotFoundError, data_mod.DatasetFormatError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
