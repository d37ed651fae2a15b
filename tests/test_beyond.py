"""Beyond the test set, checked against independent implementations: conformal sets against
MAPIE, the coverage floor against simulation, Brier/adaptive/classwise ECE against
scikit-learn, netcal and a numpy loop, OOD AUROC/FPR95 against scikit-learn, the leakage
search on planted near-duplicates, AutoAttack on a model that masks its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from torch import nn

from harness import cards, conformal, leakage, metrics, ood
from harness.gates import Gate, check
from harness.metrics import Samples

POLICY = "gates.toml [default.smoke.default]"


def fails_with(metric: str, kind: str, bound: float, value: float, message: str) -> None:
    """The gate ``<metric>_<kind> = bound`` fails on ``value`` with ``message`` (a regex)."""
    import re

    out = check(Gate(metric, kind, bound, POLICY), value)
    assert out.status == "failed", out
    assert re.fullmatch(message, out.message), out.message

FAST = settings(max_examples=40, deadline=None, database=None)


def problem(seed: int, n: int, k: int, sharpness: float = 2.0):
    """Probabilities (n, k) from random logits and labels drawn from them (calibrated)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * sharpness
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return p, y


# ------------------------------------------------------------------ conformal sets vs MAPIE


def _mapie(p, y, cal, test, method):
    """MAPIE's split-conformal classifier around fixed probabilities (image i -> row i)."""
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Fixed(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            return p[np.asarray(X).ravel().astype(int)]

        def predict(self, X):
            return self.predict_proba(X).argmax(1)

    est = Fixed()
    est.classes_, est.n_features_in_ = np.arange(p.shape[1]), 1
    X = np.arange(len(p))[:, None]
    m = SplitConformalClassifier(est, confidence_level=0.9, conformity_score=method, prefit=True)
    m.conformalize(X[cal], y[cal])
    return m, X


@pytest.mark.parametrize("seed, k", [(0, 5), (1, 10), (2, 3)])
def test_lac_sets_are_mapies(seed, k):
    p, y = problem(seed, 700, k)
    cal, test = slice(0, 300), slice(300, None)
    m, X = _mapie(p, y, cal, test, "lac")
    _, theirs = m.predict_set(X[test])
    q = conformal.calibrate(p[cal], y[cal], 0.1, "lac")
    assert (conformal.sets(p[test], q, "lac") == theirs[:, :, 0]).all()


@pytest.mark.parametrize("seed, k", [(0, 5), (3, 10)])
def test_aps_scores_and_sets_are_mapies_without_its_randomisation(seed, k):
    """MAPIE's APS subtracts u * p_y (u uniform) from every calibration score; ours is the
    deterministic score. Given the same scores, the sets (the class crossing q kept) agree."""
    from mapie.conformity_scores.sets.aps import APSConformityScore

    p, y = problem(seed, 700, k)
    cal, test = slice(0, 300), slice(300, None)
    cum, _ = APSConformityScore().get_true_label_cumsum_proba(y[cal], p[cal], np.arange(k))
    ours = conformal.scores(p[cal], y[cal], "aps")
    np.testing.assert_allclose(cum.ravel(), ours, rtol=0, atol=1e-12)
    m, X = _mapie(p, y, cal, test, "aps")
    m._mapie_classifier.conformity_scores_ = ours.reshape(m._mapie_classifier.conformity_scores_.shape)
    _, theirs = m.predict_set(X[test], conformity_score_params={"include_last_label": True})
    q = conformal.calibrate(p[cal], y[cal], 0.1, "aps")
    assert (conformal.sets(p[test], q, "aps") == theirs[:, :, 0]).all()


def test_coverage_floor_is_the_tail_of_simulated_sound_runs():
    """Exchangeable scores: a run's test coverage falls below coverage_floor(tail) in about
    ``tail`` of runs (20,000 simulated runs of 200 calibration and 300 test scores)."""
    rng = np.random.default_rng(0)
    n_cal, n_test, alpha, tail = 200, 300, 0.1, 0.05
    floor = conformal.coverage_floor(n_cal, n_test, alpha, tail)
    runs = 20_000
    below = 0
    for _ in range(20):
        cal = rng.random((runs // 20, n_cal))
        test = rng.random((runs // 20, n_test))
        k = int(np.ceil((n_cal + 1) * (1 - alpha)))
        q = np.sort(cal, axis=1)[:, k - 1]
        below += int(((test <= q[:, None]).mean(1) < floor).sum())
    assert below / runs <= tail and below / runs > tail / 3, (floor, below / runs)


def _conformal_evidence(p, y, val, test):
    ev = {"labels": y[test], "alpha": 0.1, "n_cal": len(val)}
    for method in conformal.METHODS:
        q = conformal.calibrate(p[val], y[val], 0.1, method)
        inside = conformal.sets(p[test], q, method)
        ev[method] = {"covered": inside[np.arange(len(test)), y[test]], "size": inside.sum(1)}
    return ev


def test_coverage_margin_fails_when_validation_and_test_are_not_exchangeable():
    """The planted defect of the coverage gates: calibrated on a calibrated model's validation
    images, tested where the model became four times sharper without becoming more often right
    (a shift the validation split did not see), the sets are too small and the margin falls
    below 0; on exchangeable halves it stays above."""
    p, y = problem(4, 4000, 10, sharpness=1.0)
    z = np.log(p[2000:]) * 4
    sharp = np.exp(z - z.max(1, keepdims=True))
    shifted_p = np.r_[p[:2000], sharp / sharp.sum(1, keepdims=True)]
    shifted = _conformal_evidence(shifted_p, y, np.arange(2000), np.arange(2000, 4000))
    assert metrics.lac_coverage_margin(shifted) < 0 and metrics.aps_coverage_margin(shifted) < 0
    fails_with("lac_coverage_margin", "min", 0.0, metrics.lac_coverage_margin(shifted),
               r"lac_coverage_margin=-0\.\d+ < min 0 \(gates\.toml \[default\.smoke\.default\]\)")
    fails_with("aps_coverage_margin", "min", 0.0, metrics.aps_coverage_margin(shifted),
               r"aps_coverage_margin=-0\.\d+ < min 0 \(gates\.toml \[default\.smoke\.default\]\)")
    sound = _conformal_evidence(p, y, np.arange(2000), np.arange(2000, 4000))
    assert metrics.lac_coverage_margin(sound) > 0 and metrics.aps_coverage_margin(sound) > 0
    assert 0.85 < metrics.lac_coverage(sound) < 0.95


# ------------------------------------------------------------------ Brier, adaptive and classwise ECE


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(20, 400), k=st.integers(2, 12))
def test_brier_matches_scikit_learn(seed, n, k):
    p, y = problem(seed, n, k)
    onehot = np.eye(k)[y]
    ref = float(((p - onehot) ** 2).sum(1).mean())
    assert metrics.brier(Samples.from_probs(p, y)) == pytest.approx(ref, abs=1e-12)
    if k == 2:  # scikit-learn's binary Brier score is half the two-class sum
        assert metrics.brier(Samples.from_probs(p, y)) == pytest.approx(2 * skm.brier_score_loss(y, p[:, 1]))


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(30, 500), k=st.integers(2, 10), sharp=st.sampled_from([0.5, 2, 6]))
def test_adaptive_ece_matches_netcal_equal_mass_bins(seed, n, k, sharp):
    from netcal.metrics import ECE

    p, y = problem(seed, n, k, sharp)
    s = Samples.from_probs(p, y)
    ref = float(ECE(bins=15, equal_intervals=False, detection=True).measure(s.conf, s.hit.astype(float)))
    assert metrics.adaptive_ece(s) == pytest.approx(ref, abs=1e-9)


def test_classwise_ece_matches_a_numpy_loop():
    p, y = problem(5, 800, 6, 3.0)
    ref = []
    for c in range(6):
        pc, oc = p[:, c], (y == c).astype(float)
        total = 0.0
        for b in range(15):
            lo, hi = b / 15, (b + 1) / 15
            m = (pc >= lo) & ((pc < hi) if b < 14 else (pc <= hi))
            if m.any():
                total += m.sum() / len(p) * abs(pc[m].mean() - oc[m].mean())
        ref.append(total)
    s = Samples.from_probs(p, y, keep_probs=True)
    assert metrics.classwise_ece(s) == pytest.approx(np.mean(ref), abs=1e-12)
    with pytest.raises(metrics.NotApplicable):
        metrics.classwise_ece(Samples.from_probs(p, y))


def test_an_overconfident_model_has_worse_brier_and_adaptive_ece():
    p, y = problem(6, 3000, 10, 1.5)
    z = np.log(p) * 4  # the same ranking, four times sharper
    sharp = np.exp(z - z.max(1, keepdims=True))
    sharp /= sharp.sum(1, keepdims=True)
    a, b = Samples.from_probs(p, y), Samples.from_probs(sharp, y)
    assert metrics.brier(b) > metrics.brier(a) + 0.05
    assert metrics.adaptive_ece(b) > metrics.adaptive_ece(a) + 0.1
    # gates at the calibrated model's value plus its own noise: the sharpened copy fails them
    fails_with("brier", "max", round(metrics.brier(a) + 0.02, 3), metrics.brier(b), r"brier=0\.\d+ > max 0\.\d+ .*")
    fails_with("adaptive_ece", "max", round(metrics.adaptive_ece(a) + 0.02, 3), metrics.adaptive_ece(b),
               r"adaptive_ece=0\.\d+ > max 0\.\d+ .*")


# ------------------------------------------------------------------ OOD detection


@FAST
@given(seed=st.integers(0, 2**31), n1=st.integers(5, 300), n0=st.integers(5, 300), ties=st.booleans())
def test_ood_auroc_and_fpr95_match_scikit_learn(seed, n1, n0, ties):
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(1, 1, n1), rng.normal(0, 1, n0)
    if ties:
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    y = np.r_[np.ones(n1), np.zeros(n0)]
    s = np.r_[pos, neg]
    assert ood.auroc(pos, neg) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert ood.fpr_at_tpr(pos, neg) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_ood_metrics_fail_for_a_model_confident_on_everything():
    """The planted defect of the OOD gates: a model that gives every input, garbage included,
    >= 99% confidence cannot tell them apart."""
    rng = np.random.default_rng(0)
    sound_test = ood.scores(rng.normal(size=(500, 10)) * 0.5 + np.eye(10)[rng.integers(0, 10, 500)] * 8)
    sound_noise = ood.scores(rng.normal(size=(500, 10)) * 0.5)
    blind = ood.scores(np.eye(10)[rng.integers(0, 10, 500)] * 20 + rng.normal(size=(500, 10)) * 0.1)
    good = {"test": sound_test, "uniform": sound_noise}
    bad = {"test": sound_test, "uniform": blind}
    assert metrics.ood_auroc(good, "uniform") > 0.95 and metrics.ood_confident_share(good, "uniform") == 0
    assert metrics.ood_auroc(bad, "uniform") < 0.6 and metrics.ood_confident_share(bad, "uniform") > 0.9
    assert metrics.ood_fpr95(bad, "uniform") > 0.9
    fails_with("ood_auroc", "min", 0.6, metrics.ood_auroc(bad, "uniform"), r"ood_auroc=0(\.[0-5]\d*)? < min 0\.6 .*")
    fails_with("ood_mean_confidence", "max", 0.9, metrics.ood_mean_confidence(bad, "uniform"),
               r"ood_mean_confidence=(1|0\.9\d*) > max 0\.9 .*")
    assert metrics.ood_mean_confidence(good, "uniform") == pytest.approx(np.mean(sound_noise["msp"]))
    with pytest.raises(metrics.NotApplicable, match="'digits' was not measured"):
        metrics.ood_auroc(good, "digits")


def test_pooled_auroc_is_the_auroc_against_the_union_and_fails_a_model_sure_of_garbage():
    """ood_far_auroc / ood_near_auroc: one score's AUROC against every far (near) set pooled,
    checked against scikit-learn on the concatenation; a model sure of noise fails the far one
    while the near one, untouched, passes."""
    from harness.metrics.beyond import pooled_auroc

    rng = np.random.default_rng(1)
    test = ood.scores(rng.normal(size=(400, 10)) * 0.5 + np.eye(10)[rng.integers(0, 10, 400)] * 8)
    sets = {name: ood.scores(rng.normal(size=(300, 10)) * s) for name, s in
            (("uniform", 0.5), ("blank", 1.0), ("shuffled", 3.0), ("digits", 2.0))}
    ev = {"test": test, **sets}
    far = np.concatenate([sets[n]["energy"] for n in ("uniform", "blank", "shuffled")])
    y = np.r_[np.ones(400), np.zeros(len(far))]
    assert pooled_auroc(ev, "energy", "far") == pytest.approx(skm.roc_auc_score(y, np.r_[test["energy"], far]))
    assert metrics.get("ood_far_auroc").compute(ev, index="msp") == pooled_auroc(ev, "msp", "far")
    assert pooled_auroc(ev, "msp", "near") == pytest.approx(ood.auroc(test["msp"], sets["digits"]["msp"]))
    sure = {**ev, "uniform": ood.scores(np.eye(10)[rng.integers(0, 10, 300)] * 30.0),
            "blank": ood.scores(np.eye(10)[rng.integers(0, 10, 300)] * 30.0)}
    fails_with("ood_far_auroc", "min", 0.8, pooled_auroc(sure, "msp", "far"), r"ood_far_auroc=0\.[0-7]\d* < min 0\.8 .*")
    assert pooled_auroc(sure, "msp", "near") == pooled_auroc(ev, "msp", "near")
    with pytest.raises(metrics.NotApplicable, match="no near OOD set was measured"):
        pooled_auroc({"test": test, "uniform": sets["uniform"]}, "msp", "near")
    with pytest.raises(metrics.NotApplicable, match="penultimate features"):
        pooled_auroc(ev, "knn", "far")


class _Data:
    """The parts of a Dataset the OOD sets read."""

    def __init__(self, test_x, name="own", builtin=False):
        self.test_x, self.name, self.builtin = test_x, name, builtin
        self.image_shape = tuple(test_x.shape[1:])
        self.fingerprint = f"fp-{name}-{len(test_x)}"
        c, h, w = self.image_shape
        self.card = cards.card(name) if builtin else cards.DatasetCard(name, c, (h, w), ((0.5,) * c, (0.5,) * c), 0)


def test_every_built_in_set_is_a_sample_of_distinct_images():
    """No set of one image repeated (a blank set of 1,000 black frames was one softmax value gated
    three times): every synthetic image differs from every other, the near-blank ones stay dark."""
    data = _Data(torch.randint(0, 256, (1200, 1, 28, 28), generator=torch.Generator().manual_seed(0),
                               dtype=torch.uint8))
    for name in ood.SYNTHETIC:
        x = ood.synthetic(name, data, 1000)
        assert len({bytes(i.numpy().tobytes()) for i in x}) == 1000, name
    blank = ood.synthetic("blank", data, 1000).float()
    assert blank.mean() < 20 and blank.flatten(1).mean(1).max() < 40 and blank.flatten(1).std(1).min() > 0


def test_a_set_of_the_same_kind_of_images_as_the_test_split_is_left_out():
    """sklearn's digits on a dataset of handwritten digits (other writers' digits as its test
    split) is not out of distribution there: the screen leaves it out and says why; on other data
    (noise images as the test split) it is kept. A copy of test images is caught as near-duplicates."""
    from sklearn.datasets import load_digits

    d = torch.as_tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    digits = (torch.nn.functional.interpolate(d, size=(28, 28), mode="bilinear", align_corners=False)
              .clamp(0, 1) * 255).round().to(torch.uint8)
    own_digits = _Data(digits[1000:], "my-digits")
    r = ood.screen(ood._digits((1, 28, 28), 1000), own_digits.test_x)
    assert not r["ood"] and r["inlier_share"] > ood.INLIER_SHARE_MAX and "the same kind of image" in r["why"]
    assert "digits" in ood.left_out(own_digits) and "digits" not in ood.sets(own_digits)
    noise = _Data(torch.randint(0, 256, (500, 1, 28, 28), generator=torch.Generator().manual_seed(1),
                                dtype=torch.uint8), "noise")
    assert ood.screen(ood._digits((1, 28, 28), 1000), noise.test_x)["ood"]
    copies = ood.screen(digits[1000:1300], own_digits.test_x)
    assert not copies["ood"] and copies["near_duplicates"] == 1.0 and "near-duplicates" in copies["why"]


def test_the_screen_is_kept_in_the_cache(tmp_path):
    data = _Data(torch.randint(0, 256, (200, 1, 28, 28), generator=torch.Generator().manual_seed(2),
                               dtype=torch.uint8), "cached")
    first = ood.left_out(data, None, 300, tmp_path)
    (kept,) = tmp_path.glob("ood-screen_*.json")
    ood._SCREENED.clear()
    kept.write_text('{"uniform": "planted reason"}')  # read back, not screened again
    assert ood.left_out(data, None, 300, tmp_path) == {"uniform": "planted reason"} != first
    ood._SCREENED.clear()


def test_energy_and_max_logit_scores():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    s = ood.scores(z)
    np.testing.assert_allclose(s["maxlogit"], [3, 0])
    np.testing.assert_allclose(s["energy"], np.log(np.exp(z).sum(1)))
    np.testing.assert_allclose(s["msp"], np.exp(z).max(1) / np.exp(z).sum(1))


# ------------------------------------------------------------------ leakage


def test_planted_near_duplicates_are_found_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (600, 1, 12, 12), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (100, 1, 12, 12), generator=g, dtype=torch.uint8)
    test[:5] = train[[3, 50, 99, 400, 599]]  # exact copies
    test[5:10] = (train[[7, 8, 9, 10, 11]].int() // 2 + 40).to(torch.uint8)  # darker, lower contrast
    test[10] = (train[12].int() + torch.randint(-3, 4, (1, 12, 12), generator=g)).clamp(0, 255).to(torch.uint8)
    found = leakage.near_duplicates(train, test)
    assert found.leaked.tolist() == [True] * 11 + [False] * 89
    assert found.nearest[:11].tolist() == [3, 50, 99, 400, 599, 7, 8, 9, 10, 11, 12]
    assert found.exact.tolist() == [True] * 5 + [False] * 95
    s = Samples.from_probs(np.eye(3)[np.r_[np.zeros(11, int), np.ones(89, int)]], np.zeros(100, int))
    assert metrics.leakage_share(found) == pytest.approx(0.11)
    assert metrics.leaked_accuracy_gap(s, found) == pytest.approx(1.0)  # right on the copies, wrong elsewhere
    fails_with("leakage_share", "max", 0.01, metrics.leakage_share(found), r"leakage_share=0\.11 > max 0\.01 .*")


# ------------------------------------------------------------------ AutoAttack


class Quantised(nn.Module):
    """A linear classifier behind input quantisation: its gradient w.r.t. the input is zero
    everywhere (gradient masking), so gradient attacks cannot move it; a black-box search can."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4 * 1.0 + 0 * x)


def _tiny(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(600, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).long()
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    torch.manual_seed(seed)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x[:40], y[:40]


@pytest.mark.skipif(not __import__("harness.autoattack", fromlist=["available"]).available(),
                    reason="torchattacks is not installed (setup.sh installs it)")
def test_autoattack_breaks_a_model_that_masks_its_gradients_where_pgd_cannot():
    from harness import attacks, autoattack

    net, x, y = _tiny()
    masked = Quantised(net).eval()
    eps = 0.15
    with torch.no_grad():
        right = masked(x).argmax(1) == y
    assert right.float().mean() > 0.8
    pgd = attacks.pgd(masked, x, y, eps=eps, steps=10, step_size=eps / 4)
    with torch.no_grad():
        pgd_acc = (masked(pgd).argmax(1) == y).float().mean().item()
    adv, broken = autoattack.run(masked, x, y, eps, n_classes=2)
    with torch.no_grad():
        aa_acc = (masked(adv).argmax(1) == y).float().mean().item()
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert pgd_acc >= right.float().mean().item() - 0.2  # PGD sees a zero gradient (its random start moves a few)
    assert aa_acc < pgd_acc - 0.3, (pgd_acc, aa_acc)  # Square (or FAB) finds what PGD cannot
    assert set(np.unique(broken)) <= {-2, -1, 0, 1, 2, 3}
    assert ((broken >= 0) == ((masked(adv).argmax(1) != y) & right).numpy()).all()
    fails_with("pgd_autoattack_gap", "max", 0.10, pgd_acc - aa_acc, r"pgd_autoattack_gap=0\.\d+ > max 0\.1 .*")
