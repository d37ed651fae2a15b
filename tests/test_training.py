"""The training loop (harness/train.py): runtime switches, progress a person sees, training
that blows up, the per-epoch mixing plans, the profile choice, and the CUDA path (``gpu``)."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import augment, bench, progress, recipes, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_data():
    """Learnable synthetic 28x28 data: the class is the brightest of ten horizontal bands."""
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, 1, 28, 28)).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 4 : 2 * k + 6, :] = 250
    ds = bench.synthetic("fashion-mnist", (1, 28, 28), 10, n, n_test=50)
    return dataclasses.replace(ds, train_x=torch.from_numpy(x), train_y=torch.from_numpy(y).long(),
                               test_x=torch.from_numpy(x[:50]), test_y=torch.from_numpy(y[:50]).long())


def recipe(**kw) -> recipes.Recipe:
    base = recipes.get("fashion-mnist", "baseline", "smoke")
    return dataclasses.replace(base, **{"train_subset": 0, "epochs": 2, "batch_size": 32, **kw})


def test_a_small_recipe_learns_and_reports_one_line_per_epoch(tiny_data, tmp_path):
    lines: list[str] = []
    res = train.train(recipe(), tiny_data, "smoke", "cpu", cache_dir=tmp_path, progress=progress.Lines(lines.append))
    assert res.kept["val_accuracy"] > 0.9
    assert lines[0].startswith("[fashion-mnist/baseline smoke] training: 2 epochs x 17 steps, 540 images on cpu")
    epochs = [ln for ln in lines if "] epoch " in ln]
    assert len(epochs) == 2 and "img/s" in epochs[0] and "left" in epochs[0] and "left" not in epochs[1]
    assert lines[-1].startswith("[fashion-mnist/baseline smoke] trained in ") and "kept epoch" in lines[-1]
    assert all(row["images_per_second"] > 0 for row in res.history)
    # loaded from the cache the second time: one message, no training lines
    again: list[str] = []
    train.train(recipe(), tiny_data, "smoke", "cpu", cache_dir=tmp_path, progress=progress.Lines(again.append))
    assert len(again) == 1 and "loaded from cache" in again[0]


def test_the_live_bar_draws_on_its_file_and_quiet_keeps_the_end_only(tiny_data):
    file = io.StringIO()
    lines: list[str] = []
    bar = progress.Bar(lines.append, file)
    train.Trainer(recipe(epochs=1), tiny_data, CPU, label="[t]", progress=bar).fit()
    bar.finish("done")
    shown = file.getvalue()
    assert "[t]" in shown and "/17 steps [" in shown and ", epoch 1/1 loss " in shown and " img/s]" in shown
    assert [ln for ln in lines if "epoch" in ln] and lines[-1] == "done"
    quiet: list[str] = []
    q = progress.for_output(quiet.append, interactive=True, verbosity=-1)
    train.Trainer(recipe(epochs=1), tiny_data, CPU, label="[t]", progress=q).fit()
    q.finish("end")
    assert quiet == ["end"]
    assert isinstance(progress.for_output(print, False, -2), progress.Silent)
    assert type(progress.for_output(print, False, 0)) is progress.Lines


def test_a_non_finite_loss_stops_training_at_once_and_nothing_is_cached(tiny_data, tmp_path):
    r = recipe(optimizer="sgd", lr=1e30, momentum=0.9)
    with pytest.raises(train.TrainingDiverged, match=r"fashion-mnist/baseline: the training loss became (nan|inf) at "
                                                     r"epoch 1, step \d+ \(learning rate 1e\+30\).*Lower the learning "
                                                     r"rate \(lr = 1e\+29"):
        train.train(r, tiny_data, "smoke", "cpu", cache_dir=tmp_path, progress=progress.Silent())
    assert list(tmp_path.glob("*.pt")) == [] and not list(tmp_path.glob("*.tmp"))  # nothing cached


def test_a_model_at_chance_is_diverged_not_cached(tiny_data, tmp_path):
    r = recipe(lr=1e6)  # Adam at lr 1e6: the weights explode, the predictions collapse to one class
    with pytest.raises(train.TrainingDiverged) as err:
        train.train(r, tiny_data, "smoke", "cpu", cache_dir=tmp_path, progress=progress.Silent())
    msg = str(err.value)
    assert "stayed at chance" in msg or "the training loss became" in msg
    assert list(tmp_path.glob("*.pt")) == [] and not list(tmp_path.glob("*.tmp"))  # nothing cached


def test_mix_plans_are_drawn_on_the_cpu_per_epoch_and_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = augment.MixPlan.draw(200, 28, 28, 0.5, 1.0, 0.0, 0.0, g1)
    b = augment.MixPlan.draw(200, 28, 28, 0.5, 1.0, 0.0, 0.0, g2)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("kind", "lam", "cy", "cx"))
    assert set(np.unique(a.kind)) == {0, 1} and 0.35 < a.kind.mean() < 0.65
    assert np.all(a.lam[a.kind == 0] == 1.0) and np.all((a.lam > 0) & (a.lam <= 1))
    x = torch.rand(8, 1, 28, 28)
    target = F.one_hot(torch.arange(8), 10).float()
    step = int(np.flatnonzero(a.kind == 1)[0])
    out, mixed, hard = a.apply(step, x, target, torch.arange(8).flip(0))
    y1, y2, x1, x2, lam = augment.box_at(28, 28, float(a.lam[step]), int(a.cy[step]), int(a.cx[step]))
    assert torch.equal(out[:, :, y1:y2, x1:x2], x.flip(0)[:, :, y1:y2, x1:x2])
    assert torch.allclose(mixed.sum(1), torch.ones(8)) and mixed[0, 0] == pytest.approx(lam)


def test_runtime_switches_are_part_of_the_cache_key():
    r = recipe()
    keys = {train.cache_key(r, "smoke", "fp", CPU, train.Runtime(amp=a, channels_last=c, fused=f, compile=k))
            for a in (False, True) for c in (False, True) for f in (False, True) for k in (False, True)}
    assert len(keys) == 16
    assert train.cache_key(r, "smoke", "fp", CPU, train.Runtime(deterministic=True)) == \
        train.cache_key(r, "smoke", "fp", CPU, train.Runtime(deterministic=False))
    assert train.Runtime.default(CPU).channels_last and train.Runtime.default(CPU).fused


def test_profile_auto_is_full_on_cuda_and_smoke_on_cpu(monkeypatch):
    from fixtures.options import resolve_profile

    assert resolve_profile("full", "cpu") == "full" and resolve_profile("smoke", "auto") == "smoke"
    assert resolve_profile("auto", "cpu") == "smoke"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto", "auto") == "full"


def test_bench_compares_the_two_loops_on_the_same_recipe(tiny_data):
    out = bench.compare(recipe(hflip=0.5, rotation=10.0), tiny_data, steps=4, rounds=1, device="cpu")
    assert out["usual"]["images"] == out["harness"]["images"] == 4 * 32
    assert out["ratio"] == pytest.approx(out["harness"]["images_per_second"] / out["usual"]["images_per_second"])
    assert out["flops_per_image"] > 1e6 and out["achieved_flops"] > 0
    json.dumps(out, allow_nan=False)
    assert "ratio" in bench.table([out])


# ------------------------------------------------------------------ CUDA (skipped without a GPU)


@pytest.mark.gpu
def test_cuda_training_step_never_waits_for_the_device(tiny_data):
    dev = torch.device("cuda")
    r = recipe(cutmix_alpha=1.0, cutmix_prob=0.5, hflip=0.5, rotation=10.0)
    t = train.Trainer(r, tiny_data, dev, train.Runtime.default(dev))
    t.warm_up(2)
    perm, plan = t._epoch_plan()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        for si in range(5):
            t.step(perm[si * 32 : (si + 1) * 32], plan, si)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_cuda_bf16_training_learns_like_the_cpu(tiny_data, tmp_path):
    res = train.train(recipe(), tiny_data, "smoke", "cuda", cache_dir=tmp_path, progress=progress.Silent())
    cpu = train.train(recipe(), tiny_data, "smoke", "cpu", cache_dir=tmp_path, progress=progress.Silent())
    assert res.kept["val_accuracy"] > 0.9 and abs(res.kept["val_accuracy"] - cpu.kept["val_accuracy"]) < 0.05
    assert math.isfinite(res.history[-1]["train_loss"])
