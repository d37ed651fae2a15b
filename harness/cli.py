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
    result = train.train(
        recipe, ds, args.profile, device=args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache
    )
    preds = result.predictions(ds, "test")
    out = {
        "dataset": args.dataset,
        "recipe": recipe.name,
        "profile": args.profile,
        "recipe_hash": recipe.hash(),
        "cache_key": result.cache_key,
        "test_accuracy": round(metrics.accuracy(preds.probs, preds.labels), 6),
        "test_loss": round(metrics.nll(preds.probs, preds.labels), 6),
        "best_epoch": result.best_epoch,
        "val_accuracy": round(result.kept.get("val_accuracy", float("nan")), 6),
        "train_size": result.train_size,
        "device": str(train.resolve_device(args.device)),
        "cached": result.cached,
        "train_seconds": round(result.train_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if result.temperature is not None:
        out["temperature"] = round(result.temperature, 6)
    print(json.dumps(out))
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
    t.set_defaults(func=_train)

    r = sub.add_parser("report", help="rebuild index.html, summary.md and figures of a run from its results.json")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)

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
