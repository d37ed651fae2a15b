"""Uncertainty to the field's protocol, checked against independent implementations: randomised
APS and RAPS on a case computed by hand and by simulation (exact coverage between the floor and
the ceiling), RAPS's parameters chosen apart from its calibration; the feature OOD scores
against a direct numpy Mahalanobis and k-th-neighbour distance; the risk-controlling threshold
against scipy's binomial test and by simulation of its guarantee."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import conformal, ood, ood_features, risk_control
from harness.metrics.beyond import size_strata


def test_raps_score_and_set_by_hand():
    """p = (0.5, 0.3, 0.2), true class 1 (rank 2), u = 0.5, lam = 0.1, k_reg = 1:
    E = 0.5 (above) + 0.5 x 0.3 + 0.1 x (2 - 1) = 0.75. At q = 0.75 the set holds rank 1
    (0 + 0.25 + 0 = 0.25) and rank 2 (0.75), not rank 3 (0.8 + 0.1 + 0.2 = 1.1)."""
    p = np.array([[0.5, 0.3, 0.2]])
    assert conformal.raps_scores(p, np.array([1]), np.array([0.5]), 0.1, 1)[0] == pytest.approx(0.75)
    keep = conformal.raps_sets(p, 0.75, np.array([0.5]), 0.1, 1)
    assert keep.tolist() == [[True, True, False]]
    # randomised APS (lam = 0): the top class out when u * p_top > q; kept again without empty sets
    assert conformal.raps_sets(p, 0.2, np.array([0.5]))[0].tolist() == [False, False, False]
    assert conformal.raps_sets(p, 0.2, np.array([0.5]), allow_empty=False)[0].tolist() == [True, False, False]
    # ranks follow the probabilities, classes in any order
    assert conformal.ranks(np.array([[0.2, 0.5, 0.3]]), np.array([2])).tolist() == [2]


def _problem(rng, n, k=10, sharpness=3.0):
    logits = rng.normal(size=(n, k)) * sharpness
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])  # calibrated by construction: exchangeable
    return p, y


def test_randomised_aps_covers_exactly_between_floor_and_ceiling():
    """Exchangeable calibration and test images: randomised APS's coverage is exact, so over
    many runs its mean is 1 - alpha within 1 / (n + 1), and no run leaves [floor, ceiling] at a
    tail of 1 in 100 more than a few times in 200."""
    rng = np.random.default_rng(0)
    n_cal, n_test, alpha = 500, 500, 0.1
    floor = conformal.coverage_floor(n_cal, n_test, alpha, 0.01)
    ceiling = conformal.coverage_ceiling(n_cal, n_test, alpha, 0.01)
    covs = []
    for _ in range(200):
        p, y = _problem(rng, n_cal + n_test)
        fit = conformal.fit_randomised(p[:n_cal], y[:n_cal], alpha, "aps_rand")
        conformal.SEED += 1  # fresh draws each run (restored below)
        inside = conformal.randomised_sets(p[n_cal:], fit)
        covs.append(inside[np.arange(n_test), y[n_cal:]].mean())
    conformal.SEED -= 200
    covs = np.array(covs)
    assert abs(covs.mean() - (1 - alpha)) < 0.01
    assert ((covs < floor) | (covs > ceiling)).sum() <= 10


def test_raps_chooses_its_parameters_on_a_part_it_does_not_calibrate_on():
    rng = np.random.default_rng(1)
    p, y = _problem(rng, 1000)
    fit = conformal.fit_randomised(p, y, 0.1, "raps")
    assert fit["n_tune"] == 300 and fit["n_cal"] == 700 and fit["lam"] in conformal.LAMBDAS
    assert not fit["allow_empty"] and fit["k_reg"] >= 1
    sets = conformal.randomised_sets(p, fit)
    assert sets.sum(1).min() >= 1  # the top class always kept
    aps_rand = conformal.randomised_sets(p, conformal.fit_randomised(p, y, 0.1, "aps_rand"))
    assert sets.sum(1).mean() <= aps_rand.sum(1).mean() + 0.5  # the penalty keeps the sets small


def test_size_strata_merge_empty_sets_with_single_ones_and_need_enough_images():
    covered = np.array([0] * 30 + [1] * 40 + [1] * 60 + [0] * 5)
    size = np.array([0] * 30 + [1] * 40 + [2] * 60 + [3] * 5)
    strata = size_strata(covered, size)
    assert strata == {"0-1": {"images": 70, "coverage": pytest.approx(40 / 70)},
                      "2": {"images": 60, "coverage": 1.0}}  # size 3: 5 images, no stratum


def test_feature_scores_are_the_direct_mahalanobis_and_kth_neighbour_distance():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % 4
    means = torch.randn(4, 8, generator=g) * 3
    z = means[y] + torch.randn(600, 8, generator=g)
    q = torch.randn(50, 8, generator=g) * 2
    out = ood_features.scores(z, y, {"q": q}, k=5)["q"]
    zn, qn = z.double().numpy(), q.double().numpy()
    mu = np.stack([zn[y.numpy() == c].mean(0) for c in range(4)])
    centred = zn - mu[y.numpy()]
    prec = np.linalg.inv(centred.T @ centred / len(zn))
    d2 = np.min([np.einsum("ij,jk,ik->i", qn - m, prec, qn - m) for m in mu], axis=0)
    # pytorch-ood: minus half the squared distance under the unnormalised scatter (a scale of 1/N)
    np.testing.assert_allclose(out["mahalanobis"], -0.5 * d2 / len(zn), rtol=2e-3)
    unit = zn / np.linalg.norm(zn, axis=1, keepdims=True)
    qu = qn / np.linalg.norm(qn, axis=1, keepdims=True)
    dist = np.sqrt(((qu[:, None, :] - unit[None]) ** 2).sum(-1))
    np.testing.assert_allclose(out["knn"], -np.sort(dist, axis=1)[:, 4], rtol=1e-5)


def test_the_tap_reads_the_input_of_the_last_linear_layer():
    from harness import models

    m = models.build("small-cnn", "fashion-mnist", 10).eval()
    x = torch.rand(3, 1, 28, 28)
    with ood_features.Tap(m) as tap:
        logits = m(x)
        z = tap.take()
    assert z.shape == (3, 128)
    head = ood_features.penultimate(m)
    torch.testing.assert_close(head(z.float()), logits, rtol=1e-5, atol=1e-5)
    assert ood_features.Tap(torch.nn.Conv2d(1, 1, 1)).layer is None  # no linear head: no feature scores


def test_near_and_far_sets():
    assert ood.group("digits") == "near" and ood.group("own") == "near" and ood.group("cifar100") == "near"
    assert {ood.group(n) for n in ood.SYNTHETIC} == {"far"}


def test_the_risk_threshold_is_the_lowest_grid_point_passing_the_exact_binomial_test():
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    conf = rng.random(4000)
    hit = rng.random(4000) < conf  # calibrated: the error rate falls with the confidence
    fit = risk_control.threshold(conf, hit, 0.1)
    level = risk_control.DELTA / len(risk_control.GRID)
    for t in risk_control.GRID:
        inside = conf >= t
        n, k = int(inside.sum()), int((~hit[inside]).sum())
        passes = n > 0 and binomtest(k, n, 0.1, alternative="less").pvalue <= level
        if passes:
            assert fit["threshold"] == pytest.approx(t)
            assert fit["validation_accepted"] == n and fit["validation_errors"] == k
            assert fit["upper"] <= 0.1  # the Clopper-Pearson bound at that level
            break
    else:
        assert fit["threshold"] is None


def test_the_risk_guarantee_holds_on_new_images():
    """Calibrated confidences: the chosen threshold's error on a large fresh sample is under the
    risk in (far) more than 1 - delta of 200 runs; nothing is accepted where no point passes."""
    rng = np.random.default_rng(4)
    over = found = 0
    for _ in range(200):
        conf = rng.random(6000)  # a Fashion-MNIST validation split's size
        fit = risk_control.threshold(conf, rng.random(6000) < conf, 0.1)
        t = fit["threshold"]
        if t is None:  # no grid point passes on this draw: nothing accepted, which is safe
            continue
        found += 1
        fresh = rng.random(200_000)
        fresh = fresh[fresh >= t]
        over += (1 - fresh.mean()) > 0.1 + 1e-3  # the expected error above t is 1 - mean(conf | conf >= t)
    assert over == 0 and found >= 180
    assert risk_control.threshold(np.full(100, 0.9), np.zeros(100, bool), 0.05)["threshold"] is None
    assert risk_control.error_ceiling(1000, 0.05) > 0.05
