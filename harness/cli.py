"""Command line: ``python -m harness {train,report,compare} ...``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import cards, recipes
from . import data as data_mod
from .cards import gate_profile
from .run import flags


def _train(args) -> int:
    """One model trained (or loaded from the model cache) through the run's plan, as the suite
    would train it: the same datasets (built-in, a folder, a .npz, a registered name), recipes
    and seeds."""
    from pathlib import Path

    from . import metrics
    from .run import Options, Plan, Run

    t0 = time.perf_counter()
    files = [Path(f) for f in args.recipe_file or []]
    if len(files) > 1:
        raise ValueError(f"train trains one model: give one --recipe-file (not {len(files)})")
    opts = Options(dataset=args.dataset, profile=flags.resolve_profile(args.profile, args.device), device=args.device,
                   data_root=args.data_root,
                   candidates=[] if files or args.recipe == "baseline" else [args.recipe],
                   recipe_files=files, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                   deterministic=args.deterministic, compile=args.compile, precision=args.precision,
                   threads=args.threads, seed=args.seed, image_size=args.image_size,
                   use_cache=not args.no_cache, download=not args.no_download)
    from . import progress

    plan = Plan(opts, gates=None)
    name = plan.models[-1]
    run = Run(plan)
    run.progress = progress.stderr()
    result = run.result(name)
    ds, recipe, dev = plan.data, plan.recipes[name], plan.device
    preds = result.predictions(ds, "test")
    smp = metrics.Samples.from_logits(preds.logits, preds.labels)
    out = {
        "dataset": plan.dataset_name,
        "data": ds.source,
        "data_fingerprint": ds.fingerprint,
        "recipe": recipe.name,
        "profile": opts.profile,
        "seed": recipe.seed,
        "recipe_hash": recipe.hash(),
        "cache_key": result.cache_key,
        "test_accuracy": round(metrics.accuracy(smp), 6),
        "test_loss": round(metrics.loss(smp), 6),
        "best_epoch": result.best_epoch,
        "val_accuracy": round(result.kept.get("val_accuracy", float("nan")), 6),
        "train_size": result.train_size,
        "device": str(dev),
        "runtime": plan.runtime.to_dict(),
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
        ds = None
        if not args.synthetic:  # the real images where they are on disk (CIFAR cannot be downloaded here)
            try:
                ds = data_mod.load(name, args.data_root, download=False)
            except data_mod.DatasetNotFoundError as exc:
                print(f"{name}: {str(exc).splitlines()[0]}; timing synthetic images of its shape", file=sys.stderr)
        if ds is None:
            card = cards.card(name)
            ds = bench.synthetic(name, card.shape, card.class_count, recipe.batch_size * (args.steps + 8))
        results.append(bench.compare(recipe, ds, steps=args.steps, rounds=args.rounds, device=dev))
    print(bench.table(results))
    if args.json:
        from .io import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


def _calibrate(args) -> int:
    import shlex
    from pathlib import Path

    from . import calibrate

    if args.rederive:
        from .calibrate.rederive import rederive

        target = Path(args.rederive)
        summary = rederive(target, [Path(p) for p in args.with_tables], Path(args.out) if args.out else target,
                           Path(args.gates), calibrate.Rule(args.confidence, args.false_alarm_budget))
        for model, d in summary["tables"].items():
            print(f"{model}: {calibrate.bounds_count(d)} bounds, {len(d.unbounded)} left unbounded")
        print(f"wrote {args.out or target} (multiplier {summary['meta'].get('multiplier')})")
        return 0
    if not args.dataset:
        raise ValueError("calibrate needs --dataset (or --rederive TABLE.toml)")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    threads = args.thread_counts
    if args.seeds < 2:
        raise ValueError("calibrate needs --seeds 2 or more (5 at least for bounds worth having)")
    profile = flags.resolve_profile(args.profile, "cpu")
    out = Path(args.out) if args.out else Path("gates") / f"{Path(args.dataset).stem}.{gate_profile(profile, args.imbalance)}.toml"
    command = "python -m harness " + " ".join(shlex.quote(a) for a in args.argv)
    if 42 in seeds:
        print("[calibrate] note: seed 42 is the main command's default seed; calibrating on it makes every default run "
              "a calibration run, which can reveal no false alarm (--first-seed 1000)", file=sys.stderr)
    print(f"[calibrate] {args.dataset} {profile}: models baseline{''.join(', ' + c for c in args.candidate or [])}; "
          f"seeds {seeds[0]}-{seeds[-1]} x threads {', '.join(map(str, threads))} = {len(seeds) * len(threads)} runs; "
          f"a run's false-alarm budget {args.false_alarm_budget:g}, split over its bounds", file=sys.stderr)
    summary = calibrate.calibrate(
        args.dataset, profile, seeds, threads, args.candidate or [], out, Path(args.gates),
        calibrate.Rule(args.confidence, args.false_alarm_budget), imbalance=args.imbalance, data_root=args.data_root,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, jobs=args.jobs, command=command,
        progress=lambda line: print(line, file=sys.stderr), recipe_files=tuple(args.recipe_file or ()),
        image_size=args.image_size, arch=args.arch, skip_baseline=args.skip_baseline, autoattack=args.autoattack)
    for model, d in summary["tables"].items():
        n = sum(len(b) if isinstance(b, dict) else 1 for b in d.bounds.values())
        print(f"{model}: {n} bounds, {len(d.unbounded)} left unbounded, {len(d.expected)} expected failure(s)")
        for key, ev in summary["effects"].get(model, ({}, {}, {}))[1].items():
            print(f"  {key} effect: per-seed changes {', '.join(f'{x:+.4g}' for x in ev['per_seed'])}; interval "
                  f"across seeds [{ev['seed_ci'][0]:+.4g}, {ev['seed_ci'][1]:+.4g}]: "
                  f"{'held' if ev['held_across_seeds'] else 'NOT held'}")
    print(f"wrote {out} in {summary['seconds']:.0f}s ({len(summary['results'])} runs)")
    return 0


def _power(args) -> int:
    import json
    from pathlib import Path

    from .audit import power
    from .io import atomic_write_text

    try:
        first, _, last = args.seeds.partition("-")
        seeds = list(range(int(first), int(last or first) + 1))
        sources = [(Path(d).expanduser(), int(t), seeds) for d, _, t in (m.rpartition(":") for m in args.models)]
    except ValueError:
        print(f"--seeds {args.seeds} / --models {args.models}: give --seeds A-B and --models DIR:THREADS",
              file=sys.stderr)
        return 2
    for d, _, _ in sources:
        if not d.is_dir():
            print(f"--models {d}: no such model cache folder", file=sys.stderr)
            return 2
    profile = flags.resolve_profile(args.profile, "cpu")
    result = power.measure(args.dataset, profile, sources, Path(args.gates), tuple(args.model or ["baseline"]),
                           progress=lambda line: print(line, file=sys.stderr))
    summaries = [power.summarise(result, int(n)) for n in args.group.split(",")]
    out = Path(args.out)
    atomic_write_text(out / "power.json", json.dumps({"result": result, "summaries": summaries}) + "\n")
    atomic_write_text(out / "power.md", power.render(result, summaries, f"{args.dataset} {profile}"))
    print((out / "power.md").read_text())
    return 0


def _audit(args) -> int:
    from pathlib import Path

    from . import audit

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out = audit.audit(args.dataset, flags.resolve_profile(args.profile, "cpu"), seeds, args.thread_counts,
                      Path(args.gates), Path(args.out), args.defect_seed,
                      Path(args.cache_dir) if args.cache_dir else None, not args.no_false_alarms, not args.no_defects,
                      progress=lambda line: print(line, file=sys.stderr), variants=tuple(args.variant or ["reference"]),
                      compare_gates=Path(args.compare_gates) if args.compare_gates else None,
                      variant_seeds=args.variant_seeds, models_dir=Path(args.keep_models) if args.keep_models else None)
    print((out / "audit.md").read_text())
    print(f"wrote {out}/audit.md and audit.json")
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
    flags.declare(t.add_argument, ("dataset", "seed", "image-size", "recipe-file", "profile", "device", "data-root",
                                   "cache-dir", "deterministic", "compile", "precision", "threads"),
                  dataset={"default": None, "required": True}, profile={"default": "smoke"},
                  threads={"help": "CPU threads (default: every core)"})
    t.add_argument("--recipe", default="baseline", choices=recipes.names(), help="baseline or an improvement")
    t.add_argument("--no-cache", action="store_true", help="train even if cached, and do not write the cache")
    t.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")
    t.set_defaults(func=_train)

    b = sub.add_parser("bench", help="training speed: the harness's loop against the usual notebook loop, side by side")
    flags.declare(b.add_argument, ("dataset", "device", "data-root"),
                  dataset={"nargs": "+", "default": ["fashion-mnist"], "choices": data_mod.DATASETS,
                           "help": "built-in datasets to time (default: fashion-mnist)"})
    b.add_argument("--recipe", default="augment", choices=recipes.names(), help="default: augment (flip + rotation)")
    b.add_argument("--steps", type=int, default=60, help="optimiser steps per timed round")
    b.add_argument("--rounds", type=int, default=3, help="rounds per loop; the best is kept")
    b.add_argument("--synthetic", action="store_true", help="random images of the dataset's shape (no files needed)")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.set_defaults(func=_bench)

    k = sub.add_parser("calibrate", help="train N seeds at each CPU thread count, measure every gated metric and write "
                       "a gates table whose bounds come from the measured spread, with their evidence")
    flags.declare(k.add_argument, ("dataset", "profile", "seeds", "first-seed", "thread-counts", "candidate",
                                   "recipe-file", "imbalance", "image-size", "arch", "gates", "data-root", "cache-dir",
                                   "autoattack"),
                  dataset={"default": None}, profile={"default": "smoke"},
                  seeds={"default": 12, "help": "training seeds (default 12; at least 5 for useful bounds)"},
                  cache_dir={"help": "model cache root (each thread count trains into its own threads-<t> folder)"})
    k.add_argument("--false-alarm-budget", type=flags.probability("the false-alarm budget"), default=0.05,
                   metavar="ALPHA", help="the chance a sound run of the calibrated recipes fails any bound (default "
                   "0.05), split evenly over every bound written (Bonferroni)")
    k.add_argument("--confidence", type=flags.probability("the confidence"), default=0.95,
                   help="confidence of the tolerance bound (default 0.95)")
    k.add_argument("--out", help="the gates file to write (default gates/<dataset>.<profile>.toml)")
    k.add_argument("--jobs", type=flags.positive_int, default=None, help="runs at a time (default: cores / threads)")
    k.add_argument("--skip-baseline", action="store_true", help="measure the baseline (the candidates' effects pair with "
                   "it) but do not write its table (a calibration of more seeds writes it)")
    k.add_argument("--rederive", metavar="TABLE.toml", help="run nothing: derive TABLE's bounds again by the current "
                   "rule from the values of every run its evidence keeps (written to --out, default TABLE itself)")
    k.add_argument("--with", dest="with_tables", action="append", default=[], metavar="TABLE.toml",
                   help="with --rederive: a table of the same runs holding models TABLE pairs with (its baseline)")
    k.set_defaults(func=_calibrate)

    a = sub.add_parser("audit", help="false alarms of the shipped gates (the main command on uncalibrated seeds at 1 and "
                       "2 threads, from an empty cache) and detection limits (graded planted defects)")
    flags.declare(a.add_argument, ("dataset", "profile", "seeds", "first-seed", "thread-counts", "gates", "cache-dir"),
                  profile={"default": "smoke"},
                  seeds={"default": 15, "help": "seeds the calibration did not use (default 15: 2000-2014)"},
                  first_seed={"default": 2000, "help": "the first of the --seeds seeds (default 2000)"},
                  cache_dir={"help": "model cache of the sound baseline (the false-alarm runs use empty ones)"})
    a.add_argument("--defect-seed", type=flags.parse_seed, default=42,
                   help="the seed of the sound baseline defects are planted in")
    a.add_argument("--out", default="reports/audit")
    a.add_argument("--no-false-alarms", action="store_true")
    a.add_argument("--no-defects", action="store_true")
    a.add_argument("--variant", action="append", choices=["reference", "bf16", "native"],
                   help="regime variants to run (repeatable; default: reference). bf16 and native run the first seeds "
                        "(--variant-seeds): their calibrated bounds must be reported, not gated")
    a.add_argument("--variant-seeds", type=flags.positive_int, default=2, metavar="N",
                   help="seeds run in each variant other than the reference (default 2)")
    a.add_argument("--keep-models", metavar="DIR", help="keep the runs' model caches in DIR (default: deleted after): "
                   "a later audit of the same seeds trains nothing DIR holds and measures again only what the code "
                   "changed (reference-regime models are the same bit for bit)")
    a.add_argument("--compare-gates", metavar="OLD.toml", help="also check the planted defects against this gates file "
                   "(detection limits before and after a change of rule)")
    a.set_defaults(func=_audit)

    w = sub.add_parser("power", help="power of the gates: graded defects planted at evaluation in cached sound models "
                       "(nothing trained), the detection rate per defect and strength with its interval")
    flags.declare(w.add_argument, ("dataset", "profile", "gates"), profile={"default": "smoke"})
    w.add_argument("--models", action="append", required=True, metavar="DIR:THREADS",
                   help="a model cache and the CPU thread count its models were trained at (repeatable): held-out "
                        "models, e.g. DIR/cache-t2-reference:2 of an audit's --keep-models DIR (a calibration's own "
                        "models, ~/.cache/cnn-stress/models/threads-2:2, give an in-sample figure, said so)")
    w.add_argument("--seeds", required=True, metavar="A-B", help="the seeds of the models in each cache, e.g. 1000-1011")
    w.add_argument("--model", action="append", default=None, help="which models of each seed (default: baseline)")
    w.add_argument("--group", default="1", metavar="N[,N...]",
                   help="judge the models one at a time (1) and as --seeds N judges a recipe (default 1; e.g. 1,3,6)")
    w.add_argument("--out", default="reports/power", help="folder for power.md and power.json")
    w.set_defaults(func=_power)

    r = sub.add_parser("report", help="rebuild index.html, summary.md and figures of a run from its results.json")
    r.add_argument("run_dir")
    r.set_defaults(func=_report)

    i = sub.add_parser("improvements", help="the improvements table (recipe change, documented effect, measured "
                       "effect with its interval) from the newest runs' reports")
    i.add_argument("--reports", default="reports")
    flags.declare(i.add_argument, ("gates", "dataset", "profile"), profile={"default": "smoke"})
    i.add_argument("--readme", help="rewrite the table between the README's improvements markers")
    i.set_defaults(func=_improvements)

    c = sub.add_parser("compare", help="print what changed between two runs (e.g. main vs branch)")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.set_defaults(func=_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (data_mod.DatasetNotFoundError, data_mod.DatasetFormatError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
