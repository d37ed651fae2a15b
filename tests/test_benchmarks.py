"""Training-step and augmentation timings (pytest-benchmark). ``nox -s bench`` runs them
with benchmarking on, at full size; in the normal test run (--benchmark-disable) each runs
once on small inputs (``full_size`` false), which checks that they work without spending
minutes on timings nobody reads."""

import pytest
import torch
import torch.nn.functional as F

from harness import augment, models


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture
def full_size(request) -> bool:
    """Benchmark at the sizes the README quotes only when benchmarking (nox -s bench)."""
    return not request.config.getoption("benchmark_disable")
ARCH_DATA = {"small-cnn": ("fashion-mnist", (1, 28, 28), 10), "resnet18": ("cifar100", (3, 32, 32), 100)}


def _trainer(arch: str, device: str, recipe_name: str = "augment", steps: int = 8):
    from harness import bench, recipes, train

    name, shape, k = ARCH_DATA[arch]
    recipe = recipes.get(name, recipe_name, "full")
    data = bench.synthetic(name, shape, k, recipe.batch_size * (steps + 2))
    dev = torch.device(device)
    return train.Trainer(recipe, data, dev, train.Runtime.default(dev)), recipe, data


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", list(ARCH_DATA))
def test_harness_training_step(benchmark, arch, device, full_size):
    """One optimiser step of the harness's own loop (augmentation included), per
    architecture and device: CIFAR's on random tensors of CIFAR's shape (warmed up when
    benchmarking; in the test run one step, which checks it runs)."""
    trainer, recipe, _ = _trainer(arch, device)
    if full_size:
        trainer.warm_up(2)

    def step():
        n = trainer.run_steps(1)
        if device == "cuda":
            torch.cuda.synchronize()
        return n

    assert benchmark(step) == recipe.batch_size


@pytest.mark.parametrize("device", DEVICES)
def test_harness_training_epoch_fashion_mnist_smoke(benchmark, device, full_size):
    """A whole smoke epoch of the small CNN (20,000 images, flip + rotation), validation included
    (1,000 images outside nox -s bench)."""
    from harness import bench, recipes, train

    recipe = recipes.get("fashion-mnist", "augment", "smoke")
    n = 22_300 if full_size else 1_115  # 20,070 train, 2,230 val (1,003 / 112)
    data = bench.synthetic("fashion-mnist", (1, 28, 28), 10, n, n_test=10)
    dev = torch.device(device)

    def epoch():
        trainer = train.Trainer(recipe, data, dev, train.Runtime.default(dev))
        return trainer.run_steps(trainer.steps_per_epoch), trainer.evaluate(trainer.x_val), trainer.steps_per_epoch

    seen, logits, steps = benchmark.pedantic(epoch, rounds=1, iterations=1)
    assert steps == -(-seen // recipe.batch_size) and seen == (20_000 if full_size else 1_004)  # every image once
    assert logits.shape == ((2_230 if full_size else 111), 10)


def test_usual_loop_steps(benchmark):
    """The notebook loop the ratio is taken against (``harness.bench.usual_loop``): PIL images,
    per-sample flip and rotation, a DataLoader, fp32, eager; 10 steps."""
    from harness import bench, recipes

    recipe = recipes.get("fashion-mnist", "augment", "full")
    data = bench.synthetic("fashion-mnist", (1, 28, 28), 10, 64 * 12)
    t = benchmark.pedantic(bench.usual_loop, args=(recipe, data, 10, torch.device("cpu")), rounds=1, iterations=1)
    assert t.images == 640


@pytest.mark.parametrize("op", ["hflip", "rotate", "crop", "cutmix", "jitter"])
def test_augmentation_batch(benchmark, batch, op):
    x, y = batch
    g = torch.Generator().manual_seed(0)
    target = F.one_hot(y, 10).float()
    fn = {
        "hflip": lambda: augment.hflip(x, 0.5, g),
        "rotate": lambda: augment.rotate(x, 10.0, g),
        "crop": lambda: augment.random_crop(x, 4, g),
        "cutmix": lambda: augment.cutmix(x, target, 1.0, g)[0],
        "jitter": lambda: augment.color_jitter(x, 0.2, g),
    }[op]
    out = benchmark(fn)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("batch_size", ["CPU_BATCH", 1000])
@pytest.mark.parametrize("arch", list(ARCH_DATA))
def test_evaluation_batch(benchmark, arch, batch_size, full_size):
    """Evaluation on the CPU in batches of ``evaluate.CPU_BATCH`` against 1,000 (what it was):
    the table's ratio within each group is the speed-up (2,000 images for ResNet-18, 10,000 for
    the small CNN when benchmarking; 16 in the test run)."""
    from harness import evaluate

    name, shape, k = ARCH_DATA[arch]
    n = (2_000 if arch == "resnet18" else 10_000) if full_size else 16
    torch.manual_seed(0)
    model = models.build(arch, name, k).eval()
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8)
    bs = evaluate.CPU_BATCH if batch_size == "CPU_BATCH" else batch_size
    benchmark.group = f"evaluation, {arch}"
    out = benchmark.pedantic(lambda: evaluate.logits_of(model, x, "cpu", bs), rounds=3 if full_size else 1,
                             iterations=1)
    assert out.shape == (n, k)


def test_robustness_battery_on_a_smoke_subset(benchmark, full_size):
    """The whole robustness battery (14 corruptions x 5 severities, worst-placement occlusion,
    scale, shifts, rotations, flip; FGSM and PGD-10 at four budgets on 250 images) for one
    small CNN on the smoke profile's 1,000-image subset. Target: within 60 s on 2 CPU cores
    (measured 23.5 + 5.7 s on the CI machine kind, 2026-11-23, model trained on smoke)."""
    from harness import data, stress

    n = 1000 if full_size else 40  # outside nox -s bench: every condition, on 40 images
    try:
        ds = data.load("fashion-mnist", download=False)
        x, y = ds.test_x[:n], ds.test_y[:n]
    except data.DatasetNotFoundError:
        g = torch.Generator().manual_seed(0)
        x, y = (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10).eval()
    b = stress.battery("fashion-mnist", (1, 28, 28), "smoke")

    def battery():
        rob = stress.run_robustness(model, x, y, b, "cpu")
        adv = stress.run_adversarial(model, x[: b.attack_samples], y[: b.attack_samples], b, "cpu")
        return rob, adv

    rob, adv = benchmark.pedantic(battery, rounds=1, iterations=1)
    assert set(rob) == set(b.robustness_conditions()) and set(adv) == set(b.adversarial_conditions())
    assert stress.stress_subset(10_000, 1000).shape == (1000,)


def test_attention_metrics_for_256_images(benchmark):
    """Every attention metric (Grad-CAM maps, concentration, deletion/insertion against random
    maps, the randomisation check on 64 of the images) for 256 images of the small CNN.
    Target: within 20 s on 2 CPU cores."""
    from harness import explain

    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 28, 28, generator=g)
    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10).eval()
    out = benchmark.pedantic(lambda: explain.attention_summary(model, x), rounds=1, iterations=1)
    assert out["maps"].shape == (256, 28, 28) and len(out["gini"]) == 256


@pytest.mark.parametrize("figures", ["drawn", "from cache"])
def test_report_writing(benchmark, full_size, figures, tmp_path):
    """Every report file of a two-model run on 10,000 test images (the smoke profile's test
    split): every figure drawn, or every figure copied from the figure cache (a rerun whose
    models and evidence are cached)."""
    import copy
    import itertools

    from test_report import make_run

    from harness import report

    record, arrays = make_run(n=10_000 if full_size else 500, seed=3)
    cache = tmp_path / "figures"
    if figures == "from cache":
        report.write_run(copy.deepcopy(record), tmp_path / "warm", arrays, figure_cache=cache)
    runs = itertools.count()

    def write():
        return report.write_run(copy.deepcopy(record), tmp_path / f"run{next(runs)}", arrays,
                                figure_cache=cache if figures == "from cache" else None)

    out = benchmark.pedantic(write, rounds=1 if not full_size else 3, iterations=1)
    assert all(f["ok"] and f["cached"] == (figures == "from cache") for f in out["figures"].values())


@pytest.fixture(scope="module")
def deployed_small_cnn(tmp_path_factory):
    """The small CNN (random weights: speed does not depend on them) and its ONNX and int8 forms."""
    pytest.importorskip("onnxruntime")
    from harness import deploy

    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10, 1, (1, 28, 28)).eval()
    x = (torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    folder = tmp_path_factory.mktemp("deployed")
    forms = {f: deploy.OrtModule(deploy.build(model, f, folder, "m", x[:64].float() / 255, x, n_calibration=128).path)
             for f in deploy.FORMS}
    return {"torch": model, **forms}


@pytest.mark.parametrize("batch_size", [1, 64])
@pytest.mark.parametrize("form", ["torch", "onnx", "int8"])
def test_inference_per_deployed_form(benchmark, deployed_small_cnn, form, batch_size):
    """Inference of one batch by eager torch, the ONNX export and its static int8 form
    (``python -m harness.deploy`` prints the same as ratios, with the file sizes)."""
    run = deployed_small_cnn[form]
    x = torch.rand(batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(2))

    def infer():
        with torch.no_grad():
            return run(x)

    assert benchmark(infer).shape == (batch_size, 10)


def test_deploy_speed_table_reports_ratios_and_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    from harness import deploy

    torch.manual_seed(0)
    model = models.build("small-cnn", "fashion-mnist", 10, 1, (1, 28, 28))
    rows = deploy.speed(model, (1, 28, 28), tmp_path, batch_sizes=(1, 8), reps=1)
    assert [(r["form"], r["batch"]) for r in rows] == [(f, b) for b in (1, 8) for f in ("torch", "onnx", "int8")]
    for r in rows:
        assert r["ms_per_image"] > 0 and r["images_per_s"] > 0 and r["bytes"] > 0
        if r["form"] == "torch":
            assert r["speedup_vs_torch"] == 1.0 and r["size_vs_torch"] == 1.0
    int8 = next(r for r in rows if r["form"] == "int8")
    assert 0.2 < int8["size_vs_torch"] < 0.35  # int8 weights: a quarter of fp32, plus scales
    table = deploy.speed_table(rows)
    assert "speed vs torch" in table and "size vs torch" in table
