"""Weak segments (harness/segments.py): the image properties against independent
implementations, the search's family-wise error and power, the shift test, the metadata CSV."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from harness import segments as seg
from harness.metrics import segments as seg_metrics


def _images(n=64, c=1, seed=0, size=16):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(n, c, size, size), dtype=np.uint8))


def test_grey_properties_match_independent_implementations():
    x = _images(40)
    p = seg.properties(x, chunk=7)  # chunks must not change anything
    g = x[:, 0].double().numpy() / 255.0
    np.testing.assert_allclose(p["brightness"], g.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(p["contrast"], g.std((1, 2)), rtol=1e-5)
    lap = np.stack([ndimage.laplace(im, mode="constant")[1:-1, 1:-1] for im in g])
    np.testing.assert_allclose(p["sharpness"], lap.reshape(len(g), -1).var(1), rtol=1e-4)
    ent = [stats.entropy(np.bincount(im.ravel(), minlength=256), base=2) for im in x[:, 0].numpy()]
    np.testing.assert_allclose(p["entropy"], ent, rtol=1e-5)


def test_foreground_and_extent_of_a_drawn_object():
    x = torch.zeros(2, 1, 20, 20, dtype=torch.uint8)
    x[0, 0, 4:10, 5:15] = 200  # a 6 x 10 box on black
    p = seg.properties(x)
    assert p["foreground"][0] == pytest.approx(60 / 400)
    assert p["extent"][0] == pytest.approx(60 / 400)
    assert p["foreground"][1] == 0 and p["extent"][1] == 0  # no object: nothing is foreground
    x[0, 0, 15, 2] = 255  # one far pixel stretches the bounding box, not the foreground
    q = seg.properties(x)
    assert q["foreground"][0] == pytest.approx(61 / 400)
    assert q["extent"][0] == pytest.approx((15 - 4 + 1) * (15 - 2) / 400)


def test_colour_properties_and_colourfulness():
    x = _images(10, c=3, seed=1)
    p = seg.properties(x)
    assert set(seg.COLOUR_PROPERTIES) <= set(p)
    f = x.double().numpy() / 255.0
    r, g, b = f[:, 0].reshape(10, -1), f[:, 1].reshape(10, -1), f[:, 2].reshape(10, -1)
    rg, yb = r - g, 0.5 * (r + g) - b
    want = np.hypot(rg.std(1), yb.std(1)) + 0.3 * np.hypot(rg.mean(1), yb.mean(1))  # Hasler & Suesstrunk
    np.testing.assert_allclose(p["colourfulness"], want, rtol=1e-5)
    np.testing.assert_allclose(p["red"], r.mean(1), rtol=1e-6)
    grey = 0.299 * f[:, 0] + 0.587 * f[:, 1] + 0.114 * f[:, 2]
    np.testing.assert_allclose(p["brightness"], grey.mean((1, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="uint8 NCHW"):
        seg.properties(x.float())


def test_holm_and_clopper_pearson_against_their_definitions():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    m = len(p)
    order = np.argsort(p)
    want = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        want[i] = running
    np.testing.assert_allclose(seg.holm(p), want)
    for k, n in ((0, 20), (7, 20), (20, 20), (3, 250)):
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        lo, hi = seg.clopper_pearson([k], [n])
        assert lo[0] == pytest.approx(ci.low, abs=1e-9) and hi[0] == pytest.approx(ci.high, abs=1e-9)


def _world(n=2000, seed=0, weak=True):
    """Properties of n images and outcomes: errors at 10% everywhere, and (``weak``) at 60% on
    the darkest fifth."""
    rng = np.random.default_rng(seed)
    cols = {"brightness": rng.random(n), "contrast": rng.random(n), "sharpness": rng.random(n)}
    err = rng.random(n) < 0.10
    if weak:
        dark = cols["brightness"] < np.quantile(cols["brightness"], 0.2)
        err |= dark & (rng.random(n) < 0.55)
    conf = np.where(err, rng.uniform(0.5, 1.0, n), rng.uniform(0.6, 1.0, n))
    return cols, ~err, conf


def test_search_finds_a_planted_weak_segment_and_names_it():
    cols, hit, conf = _world()
    cands = seg.candidates(cols, len(hit))
    found = seg.search(cands, hit, conf)
    assert found.searched == len(cands) == 3 * 5 + 3 * 25
    assert found.segments, "the dark fifth was not found"
    names = [s["name"] for s in found.segments]
    assert any(n.startswith("brightness q1 of 5") and "&" not in n for n in names)
    assert all("brightness q1" in n for n in names)  # nothing else is weak
    w = found.worst
    lo, hi = w["accuracy_ci"]
    assert lo <= w["accuracy"] <= hi and w["p_holm"] <= seg.ALPHA and w["images"] >= found.min_size
    assert seg_metrics.weak_segment_accuracy_ratio(found) == pytest.approx(w["accuracy"] / hit.mean())


def test_search_family_wise_error_holds_without_a_weakness():
    """No segment is weak by construction: Holm at 5% flags any in at most about 5% of worlds."""
    flagged = sum(bool(seg.search(seg.candidates(c, len(h)), h, f).segments)
                  for c, h, f in (_world(n=1000, seed=s, weak=False) for s in range(40)))
    assert flagged <= 6  # P(Binomial(40, 0.05) > 6) < 0.02
    cols, hit, conf = _world(n=1000, seed=3, weak=False)
    found = seg.search(seg.candidates(cols, 1000), hit, conf)
    if not found.segments:
        assert seg_metrics.weak_segment_accuracy_ratio(found) == 1.0
        assert seg_metrics.weak_segment_confident_error_rate(found) == 0.0


def test_segments_respect_the_minimum_size_and_categorical_metadata():
    rng = np.random.default_rng(0)
    n = 600
    cols = {"brightness": rng.random(n), "meta:camera": np.array(["a"] * 540 + ["b"] * 40 + ["c"] * 20, dtype=object)}
    cands = seg.candidates(cols, n)
    assert all(seg.min_size(n) <= len(m) <= n - seg.min_size(n) for _, m in cands)
    labels = {p.label for parts, _ in cands for p in parts if p.column == "meta:camera"}
    assert labels == {"= a"}  # b (40) and c (20) are below the 50-image minimum
    hit = np.ones(n, bool)
    hit[560:] = False  # camera c and the end of b fail
    found = seg.search(seg.candidates(cols, n, smallest=20), hit, np.full(n, 0.995))
    assert found.worst["name"] == "meta:camera = c" and found.worst["confident_error_rate"] == 1.0


def test_ks_permutation_matches_scipy_and_is_calibrated():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.3, 1, size=250)
    d, p = seg.ks_permutation(a, b, permutations=499)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert p < 0.01
    ties_a, ties_b = rng.integers(0, 4, 300).astype(float), rng.integers(0, 4, 300).astype(float)
    assert seg.ks_permutation(ties_a, ties_b)[0] == pytest.approx(stats.ks_2samp(ties_a, ties_b).statistic)
    ps = [seg.ks_permutation(rng.normal(size=200), rng.normal(size=200), permutations=199, seed=s)[1]
          for s in range(60)]
    assert 0.25 < np.mean(ps) < 0.75 and np.mean(np.array(ps) <= 0.05) <= 0.15  # about uniform under no shift


def test_shift_flags_a_darker_batch_and_not_a_same_one():
    rng = np.random.default_rng(1)
    train = {"brightness": rng.normal(0.3, 0.05, 2000), "contrast": rng.normal(0.2, 0.03, 2000)}
    same = {"brightness": rng.normal(0.3, 0.05, 500), "contrast": rng.normal(0.2, 0.03, 500)}
    dark = {"brightness": rng.normal(0.2, 0.05, 500), "contrast": rng.normal(0.2, 0.03, 500)}
    assert not any(r["shifted"] for r in seg.shift(train, same).values())
    rows = seg.shift(train, dark)
    assert rows["brightness"]["shifted"] and not rows["contrast"]["shifted"]
    assert rows["brightness"]["outside_range"] > 0.1


def test_metadata_csv_is_checked_once_with_what_to_fix(tmp_path):
    names = ("test/cat/a.png", "test/cat/b.png", "test/dog/c.png")
    f = tmp_path / "meta.csv"
    f.write_text("path,source\ncat/a.png,web\ntest/cat/b.png,phone\ndog/c.png,web\n")
    meta = seg.read_metadata(f, names, 3)
    assert list(meta["source"]) == ["web", "phone", "web"]
    f.write_text("id,iso\n0,100\n1,200\n2,400\n")
    assert list(seg.read_metadata(f, None, 3)["iso"]) == [100.0, 200.0, 400.0]
    for text, message in (("id,iso\n0,100\n1,200\n", "1 of 3 test images have no row"),
                          ("file,iso\nx,1\n", "no 'id' or 'path' column"),
                          ("id,iso\n0,1\n7,2\n", "id 7 is outside the test split"),
                          ("path,iso\nnope.png,1\n", "is not a test image of this dataset"),
                          ("id\n0\n1\n2\n", "add a column per property")):
        f.write_text(text)
        with pytest.raises(seg.MetadataError, match=message):
            seg.read_metadata(f, names, 3)
    with pytest.raises(seg.MetadataError, match="no such file"):
        seg.read_metadata(tmp_path / "missing.csv", names, 3)
