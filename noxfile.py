"""nox sessions. All run in the current environment (``./setup.sh`` installs it): torch is a
5 GB wheel, so sessions share one environment instead of building a venv each.

    nox -l                                                     # list sessions
    nox -s "improvement(name='label-smoothing', dataset='fashion-mnist')"     # one improvement
    nox -s improvements_table                                  # the README's table, from the reports

Arguments after ``--`` go to pytest.
"""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))
from harness.cards import DATASETS  # noqa: E402
from harness.gates import Gates  # noqa: E402
from harness.recipes import BASELINES, DOCUMENTED_EFFECTS, IMPROVEMENTS, LONG_TAILED, gate_profile_of  # noqa: E402

GATES = Gates.load(Path(__file__).parent / "gates.toml")

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# A recipe's effect is decided across training seeds (the exact sign-flip test of the per-seed
# paired changes, Holm across the candidate's effects: harness/compare.py), never on one run:
# each improvement session trains the baseline and the improvement with EFFECT_SEEDS seeds. For a
# true effect of one per-seed sd, the test decides it in 89% of sessions alone, 79% as the first
# of two effects under Holm, 73% of three (2,000 simulated sessions each); at 6 seeds: 65%, 35%,
# 35% (its smallest p, 1/64, barely passes Holm's 0.025). Costs 20 trainings, the baselines
# shared by every session through the model cache. Its seeds (42-51) are not the calibration's
# (1000-1011). The absolute gates judge the mean of the 10 models (gates.toml seed_gates): one
# run's false-alarm budget in all.
EFFECT_SEEDS = "10"
# AutoAttack images for the sessions whose documented effect is judged on it: 100 images take
# about 2 (undefended) to 5 (adversarially trained) minutes per model on 2 CPU cores.
AUTOATTACK = {"fgsm-training": "100"}
# The shipped calibrated tables (gates/*.toml) and how each was made (`nox -s calibrate`); the
# other improvements are not calibrated yet (gates.toml says what they get meanwhile).
CALIBRATIONS = {
    "gates/fashion-mnist.smoke.toml": ["--first-seed", "1000", "--seeds", "12", "--thread-counts", "1,2",
                                       "--candidate", "augment"],
    "gates/fashion-mnist.smoke-improvements.toml": ["--first-seed", "1000", "--seeds", "6", "--thread-counts", "1,2",
                                                    "--skip-baseline",
                                                    "--candidate", "label-smoothing", "--candidate", "cutmix"],
}


@nox.session(venv_backend="none")
def tests(session):
    """The harness's own unit and property tests (CPU, a few minutes)."""
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session(venv_backend="none", default=False)
def stress(session):
    """The default stress suite: the dataset's baseline and its seed improvement."""
    session.run("python", "-m", "pytest", "stress_tests", *session.posargs)


def _improvement(name: str, dataset: str):
    """One session per improvement and dataset, each with its own description: the documented
    effect, and what gates.toml expects to fail on the smoke profile (and why)."""
    effect = DOCUMENTED_EFFECTS[name]
    profile = gate_profile_of(name, "smoke")
    xfail = GATES.expected_failures(dataset, profile, name)
    doc = f"{name} vs the baseline on {dataset}, {EFFECT_SEEDS} seeds each: {effect.text} ({effect.source})."
    if xfail:
        doc += " Expected to fail on smoke: " + "; ".join(f"{k} ({v})" for k, v in xfail.items())

    def run(session):
        args = ["--dataset", dataset, "--candidate", name, "--seeds", EFFECT_SEEDS]
        if name in AUTOATTACK:  # its documented effect is judged on AutoAttack (off by default in smoke)
            args += ["--autoattack", AUTOATTACK[name]]
        if name in LONG_TAILED:  # on a long-tailed subsample at the dataset card's ratio
            args += ["--imbalance", str(DATASETS[dataset].imbalance)]
        session.run("python", "-m", "pytest", "stress_tests", *args, *session.posargs)

    run.__doc__ = doc
    run.__name__ = f"improvement_{name}_{dataset}".replace("-", "_")
    nox.session(name=f"improvement(name='{name}', dataset='{dataset}')", venv_backend="none", default=False)(run)


for _dataset in BASELINES:
    for _name in IMPROVEMENTS:
        _improvement(_name, _dataset)


@nox.session(venv_backend="none", default=False)
def calibrate(session):
    """Regenerate the shipped calibrated gates tables (gates/*.toml): every seed at each CPU
    thread count, every gated metric, bounds by the stated rule with their evidence. Hours on 2
    CPU cores (models and evidence are cached: a rerun after a metric change takes minutes)."""
    for out, args in CALIBRATIONS.items():
        if session.posargs and out not in session.posargs:
            continue
        session.run("python", "-m", "harness", "calibrate", "--dataset", "fashion-mnist", "--profile", "smoke",
                    *args, "--out", out)


@nox.session(venv_backend="none", default=False)
def false_alarms(session):
    """How often the shipped gates fail sound models (the main command on 15 seeds the
    calibration did not use, 2000-2014, at 1 and 2 CPU threads, each from an empty cache: 30
    runs, and a bf16 and a native-kernels run whose calibrated bounds must be reported, not
    gated) and which planted defects each gate family catches, at which strength
    (reports/audit/). Hours on 2 CPU cores."""
    session.run("python", "-m", "harness", "audit", "--dataset", "fashion-mnist", "--variant", "reference",
                "--variant", "bf16", "--variant", "native", "--variant-seeds", "1", *session.posargs)


@nox.session(venv_backend="none", default=False)
def improvements_table(session):
    """Rewrite the README's improvements table from the newest reports (run the improvement
    sessions first: a missing one is listed as not measured)."""
    session.run("python", "-m", "harness", "improvements", "--readme", "README.md", *session.posargs)


@nox.session(venv_backend="none", default=False)
def bench(session):
    """Training speed against the usual notebook loop (ratio, FLOP/s), then pytest-benchmark:
    the harness's training step and epoch, augmentations, the robustness battery, attention,
    report writing; then the main command fresh and rerun, with where its time went.
    Figures are saved under reports/bench/ (JSON) and .benchmarks/ (pytest-benchmark)."""
    import datetime as dt

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    Path("reports/bench").mkdir(parents=True, exist_ok=True)
    session.run("python", "-m", "harness", "bench", "--dataset", "fashion-mnist", "--json",
                f"reports/bench/{stamp}_training.json")
    # eager torch vs the ONNX export vs static int8 (onnxruntime): latency, throughput, file size, ratios
    session.run("python", "-m", "harness.deploy")
    session.run(
        "python", "-m", "pytest", "tests/test_benchmarks.py", "--benchmark-enable", "--benchmark-only",
        "--benchmark-columns=mean,stddev,rounds,ops", "--benchmark-autosave", *session.posargs,
    )
    # The README's main command twice on empty caches of its own: a fresh clone (two models to
    # train and measure), then a rerun (models, evidence and figures cached). Each run prints
    # where its time went ("time: ..."); the wall time includes Python's and pytest's start-up.
    import time

    cache = Path(f"reports/bench/cache-{stamp}")
    for label in ("fresh clone: empty caches", "rerun: models, evidence and figures cached"):
        t0 = time.perf_counter()
        session.run("python", "-m", "pytest", "stress_tests", "--dataset", "fashion-mnist", "-q", "--cache-dir",
                    str(cache), "--report-dir", "reports/bench/runs", success_codes=[0, 1])
        session.log(f"main command, {label}: {time.perf_counter() - t0:.1f} s wall")


@nox.session(venv_backend="none")
def lint(session):
    """ruff over the whole repository."""
    session.run("ruff", "check", ".", *session.posargs)


@nox.session(venv_backend="none", default=False)
def report(session):
    """Rebuild a run's report from its results.json (default: reports/latest)."""
    session.run("python", "-m", "harness", "report", *(session.posargs or ["reports/latest"]))
