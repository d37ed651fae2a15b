"""Power (harness/audit/power.py): defects planted in stored logits do exactly what they say, the
detection rate's interval is the exact one, and on a trained model the gates catch a planted
defect that a sound model passes, while a model missing from the cache is skipped, not trained."""

from __future__ import annotations

import numpy as np
import pytest
from planted import write_idx_world
from scipy.stats import binomtest

from harness.audit import power


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_chosen_share_is_exact_and_the_same_images_each_time():
    ids = np.arange(10_000)
    for share in power.SHARES:
        picked = power.chosen(ids, share)
        assert abs(picked.mean() - share) <= 1e-4
        assert np.array_equal(picked, power.chosen(ids, share))
    assert not (power.chosen(ids, 0.1) & ~power.chosen(ids, 0.2)).any()  # a larger share contains the smaller


def test_handing_over_narrowly_moves_only_the_chosen_predictions_without_confidence():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 5)) * 4
    ids = np.arange(len(z))
    top = z.argmax(1)
    narrow = power.hand_over(z, ids, 2, 0.3, confident=False)
    moved = top != narrow.argmax(1)
    expected = (top == 2) & power.chosen(ids, 0.3)
    assert np.array_equal(moved, expected)
    second = np.argsort(-z, 1)[:, 1]
    assert np.array_equal(narrow.argmax(1)[moved], second[moved])  # to the runner-up
    assert _softmax(narrow)[moved].max(1).max() < 0.51  # never a confident error
    confident = power.hand_over(z, ids, 2, 0.3, confident=True)
    assert np.allclose(np.sort(_softmax(confident)[moved], 1), np.sort(_softmax(z)[moved], 1))  # as sure as before
    assert np.array_equal(confident.argmax(1)[moved], second[moved])
    untouched = ~moved
    assert np.array_equal(confident[untouched], z[untouched]) and np.array_equal(narrow[untouched], z[untouched])


def test_the_most_confused_pair_and_its_swap():
    labels = np.array([0] * 50 + [1] * 50 + [2] * 50)
    z = np.eye(3)[labels] * 5.0
    z[50:70] = np.eye(3)[2] * 5  # class 1 read as class 2 twenty times
    assert power.most_confused(z, labels, 3) == (1, 2)
    swapped = power.swap_pair(z, np.arange(150), 1, 2, 1.0)
    pred = swapped.argmax(1)
    assert (pred[:50] == 0).all() and (pred[70:100] == 2).all() and (pred[100:] == 1).all()


@pytest.mark.parametrize("hits, n", [(0, 24), (12, 24), (24, 24), (22, 24), (3, 10)])
def test_the_interval_is_clopper_pearson(hits, n):
    ci = binomtest(hits, n).proportion_ci(0.95, method="exact")
    assert power.interval(hits, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_planted_defects_are_caught_by_gates_the_sound_model_passes(tmp_path):
    from harness import train
    from harness.data import load
    from harness.metrics import Samples
    from harness.metrics import get as metric
    from harness.recipes import get

    write_idx_world(tmp_path / "data", n_train=600, n_test=300)
    cache = tmp_path / "cache"
    ds = load("fashion-mnist", str(tmp_path / "data"))
    sound = train.train(get("fashion-mnist", "baseline", "smoke"), ds, "smoke", "cpu", cache)
    p = sound.predictions(ds, "test")
    t = metric("temperature").compute(Samples.from_logits(p.logits, p.labels, keep_probs=True))
    gates = tmp_path / "g.toml"  # the fitted temperature within a factor 2 of the sound model's, both sides
    gates.write_text(f"[fashion-mnist.smoke.default]\ntemperature_min = {t / 2}\ntemperature_max = {t * 2}\n"
                     "accuracy_min = 0.3\nclass_accuracy_min = 0.5\n")
    defects = [power.Planted("flattened", 3.0), power.Planted("sharpened", 3.0),
               power.Planted("handed-confidently", 1.0, 1), power.Planted("sharpened", 1.0)]
    result = power.measure("fashion-mnist", "smoke", [(cache, 2, [42, 43])], gates, defects=defects,
                           progress=lambda _: None, data_root=str(tmp_path / "data"))
    assert result["skipped"] == [f"baseline seed 43, 2 thread(s): not in {cache}"]  # not trained
    (row,) = result["rows"]
    gates = {k: __import__("harness.gates", fromlist=["Gate"]).Gate.from_state(g)
             for k, g in result["gates_of"]["baseline"].items()}
    assert len(row["sound"]) == 3 + 10 and power._detections(row, gates, row["sound"]) == []  # every class
    assert power._detections(row, gates, row["defects"]["logits / 3"]) == ["temperature_min"]  # fitted at a third
    assert power._detections(row, gates, row["defects"]["logits x 3"]) == ["temperature_max"]
    assert power._detections(row, gates, row["defects"]["Trouser handed confidently on 100%"]) == \
        ["class_accuracy[Trouser]_min"]
    assert power._detections(row, gates, row["defects"]["logits x 1"]) == []  # no change, no detection
    summary = power.summarise(result)
    assert summary["defects"]["logits x 1"]["detected"] == 0
    assert summary["defects"]["logits / 3"] == {"judged": 1, "detected": 1, "rate": 1.0,
                                                "interval": list(power.interval(1, 1))}
    assert summary["gates"] == {"temperature_min": 1, "temperature_max": 1, "class_accuracy[Trouser]_min": 1}
    text = power.render(result, [summary], "test")
    assert "| logits / 3 | 1 | 1 | 100% |" in text and "Skipped (not in the model cache)" in text


def test_recipes_judged_on_several_seeds_are_groups_of_consecutive_seeds():
    """The seed is the unit: one thread count (the most measured), N consecutive seeds a group."""
    rows = [{"model": m, "threads": t, "seed": s} for m in ("baseline", "augment") for t in (1, 2)
            for s in range(1000, 1012)]
    g3 = power.groups(rows, 3)
    assert len(g3) == 8 and all({r["threads"] for r in g} == {2} and len({r["model"] for r in g}) == 1 for g in g3)
    assert [r["seed"] for r in g3[0]] == [1000, 1001, 1002]
    assert len(power.groups(rows, 6)) == 4 and len(power.groups(rows, 1)) == 24
    assert len(power.groups(rows, 5)) == 4  # 12 seeds: two groups of 5 per model, two seeds left out
