"""nox sessions. All run in the current environment (``./setup.sh`` installs it): torch is a
5 GB wheel, so sessions share one environment instead of building a venv each.

    nox -l                                                     # list sessions
    nox -s "improvement(name='label-smoothing', dataset='fashion-mnist')" -- --profile smoke

Arguments after ``--`` go to pytest.
"""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))
from harness.recipes import BASELINES, IMPROVEMENTS  # noqa: E402

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# Improvements that fix class imbalance need imbalance to fix: they run on a long-tailed
# subsample (class k keeps 0.1**(k/(K-1)) of its training images), baseline included.
LONG_TAILED = {"class-weights": "0.1", "focal-loss": "0.1"}


@nox.session(venv_backend="none")
def tests(session):
    """The harness's own unit and property tests (CPU, a few minutes)."""
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session(venv_backend="none", default=False)
def stress(session):
    """The default stress suite: the dataset's baseline and its seed improvement."""
    session.run("python", "-m", "pytest", "stress_tests", *session.posargs)


@nox.session(venv_backend="none", default=False)
@nox.parametrize("dataset", list(BASELINES))
@nox.parametrize("name", list(IMPROVEMENTS))
def improvement(session, name, dataset):
    """One improvement against the baseline on one dataset, with its comparison report."""
    args = ["--dataset", dataset, "--candidate", name]
    if name in LONG_TAILED:
        args += ["--imbalance", LONG_TAILED[name]]
    session.run("python", "-m", "pytest", "stress_tests", *args, *session.posargs)


@nox.session(venv_backend="none", default=False)
def bench(session):
    """Training speed against the usual notebook loop (ratio, FLOP/s), then pytest-benchmark:
    the harness's training step and epoch, augmentations, the robustness battery, attention.
    Figures are saved under reports/bench/ (JSON) and .benchmarks/ (pytest-benchmark)."""
    import datetime as dt

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    Path("reports/bench").mkdir(parents=True, exist_ok=True)
    session.run("python", "-m", "harness", "bench", "--dataset", "fashion-mnist", "--json",
                f"reports/bench/{stamp}_training.json")
    session.run(
        "python", "-m", "pytest", "tests/test_benchmarks.py", "--benchmark-enable", "--benchmark-only",
        "--benchmark-columns=mean,stddev,rounds,ops", "--benchmark-autosave", *session.posargs,
    )


@nox.session(venv_backend="none")
def lint(session):
    """ruff over the whole repository."""
    session.run("ruff", "check", ".", *session.posargs)


@nox.session(venv_backend="none", default=False)
def report(session):
    """Rebuild a run's report from its results.json (default: reports/latest)."""
    session.run("python", "-m", "harness", "report", *(session.posargs or ["reports/latest"]))
