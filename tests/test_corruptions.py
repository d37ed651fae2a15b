"""harness.corruptions: CIFAR-10-C-style corruptions of 28x28 grey and 32x32 colour images.

Every corruption on both calibrated shapes: shape / dtype / device / range, determinism
for a seed, each severity changes the image, strength grows with severity. Then hand
checks against reference formulas and the libraries CIFAR-10-C used (scipy's Gaussian
filter and zoom, Pillow's BOX resize and JPEG, HSV from matplotlib)."""

from __future__ import annotations

import io

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torchvision.io import decode_jpeg, encode_jpeg

from harness import corruptions as C

SHAPES = {"grey28": (1, 28, 28), "rgb32": (3, 32, 32)}
CASES = [
    pytest.param(name, key, id=f"{name}-{key}") for key, (c, _, _) in SHAPES.items() for name in C.corruptions_for(c)
]
BATCH = 32


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def structured(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth gradients with a disk and a rectangle on top, in moderately saturated colours
    (a grey level plus a chroma offset of +-0.15 per channel), like natural photos."""
    g = gen(seed)

    def u(*shape):
        return torch.rand(*shape, generator=g)

    def colour(lo, hi):
        grey = lo + (hi - lo) * u(n, 1, 1, 1)
        return (grey + 0.3 * (u(n, c, 1, 1) - 0.5)).clamp(0, 1) if c == 3 else grey

    rows, cols = torch.arange(h)[None, :, None].float(), torch.arange(w)[None, None, :].float()
    angle = u(n, 1, 1) * 2 * torch.pi
    t = torch.cos(angle) * cols / w + torch.sin(angle) * rows / h
    t = (t - t.amin((1, 2), keepdim=True)) / (t.amax((1, 2), keepdim=True) - t.amin((1, 2), keepdim=True))
    c0, c1 = colour(0.1, 0.6), colour(0.4, 0.9)
    img = c0 + (c1 - c0) * t[:, None]
    for _ in range(2):
        cy, cx, r = u(n, 1, 1) * h, u(n, 1, 1) * w, (u(n, 1, 1) * 0.2 + 0.15) * min(h, w)
        img = torch.where((((rows - cy) ** 2 + (cols - cx) ** 2) < r**2)[:, None], colour(0.1, 0.9), img)
        y0, x0 = (u(n, 1, 1) * 0.6 * h).long(), (u(n, 1, 1) * 0.6 * w).long()
        rect = (rows >= y0) & (rows < y0 + h // 3) & (cols >= x0) & (cols < x0 + w // 4)
        img = torch.where(rect[:, None], colour(0.1, 0.9), img)
    return img.clamp(0, 1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The batches here are small, so per-operation overhead dominates and intra-op threads
    only add barrier waits (seconds per test when other processes share the cores): run this
    module on one thread, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clean(request) -> dict[str, torch.Tensor]:
    """Clean batches: the first Fashion-MNIST test images (generated grey images when the
    dataset is not installed) and structured colour images."""
    try:
        fmnist = request.getfixturevalue("fashion_mnist")
        grey = fmnist.test_x[:BATCH].float() / 255
    except (pytest.skip.Exception, pytest.FixtureLookupError):
        grey = structured(BATCH, 1, 28, 28, seed=1)
    return {"grey28": grey, "rgb32": structured(BATCH, 3, 32, 32, seed=2)}


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


# ------------------------------------------------------------------ registry and validation


def test_registry_and_tables():
    expected = [
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur", "defocus_blur",
        "motion_blur", "zoom_blur", "contrast", "brightness", "fog", "pixelate", "jpeg", "elastic_transform",
        "saturate",
    ]  # fmt: skip
    assert list(C.CORRUPTIONS) == expected
    assert C.SEVERITIES == (1, 2, 3, 4, 5)
    assert C.corruptions_for(3) == expected
    assert C.corruptions_for(1) == [n for n in expected if n != "saturate"]
    with pytest.raises(ValueError, match="1 or 3 channels"):
        C.corruptions_for(2)
    for name, table in C.PARAMS.items():
        assert set(table) == {28, 32}, name
        assert all(len(v) == 5 for v in table.values()), name
        for size in (28, 32):  # the calibrated sizes use their table as it is
            expected_values = [(v, v) if name == "pixelate" else v for v in table[size]]
            assert [C.params(name, s, size, size) for s in C.SEVERITIES] == expected_values
    # pixelate's downsampled sides are make_cifar_c.py's int(side c)
    factors = (0.95, 0.9, 0.85, 0.75, 0.65)
    for size in (28, 32):
        assert C.PARAMS["pixelate"][size] == tuple(int(size * c) for c in factors)
    # elastic: the same fractions of the image size at 28 and 32
    for a, b in zip(C.PARAMS["elastic_transform"][28], C.PARAMS["elastic_transform"][32]):
        assert a == pytest.approx(tuple(v * 28 / 32 for v in b))


def test_other_sizes_use_the_nearer_table_scaled():
    assert C.reference_size(28, 28) == 28 and C.reference_size(30, 40) == 28 and C.reference_size(31, 64) == 32
    assert C.params("gaussian_blur", 5, 64, 64) == pytest.approx(2.0)  # 1.0 px at 32 -> 2.0 px at 64
    assert C.params("gaussian_blur", 5, 14, 20) == pytest.approx(0.875 / 2)  # 28 table, side 14
    assert C.params("motion_blur", 5, 64, 64) == pytest.approx((18.0, 5.0))
    assert C.params("gaussian_noise", 3, 64, 64) == 0.08  # per pixel: unchanged
    assert C.params("pixelate", 5, 40, 20) == (int(40 * 0.65), int(20 * 0.65))


def test_invalid_arguments_raise():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown corruption 'snow'.*gaussian_noise.*saturate"):
        C.corrupt(x, "snow", 1, gen())
    for bad in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"severity must be one of \(1, 2, 3, 4, 5\)"):
            C.corrupt(x, "contrast", bad, gen())
    with pytest.raises(ValueError, match="saturate needs colour images"):
        C.corrupt(torch.rand(2, 1, 28, 28), "saturate", 1, gen())
    with pytest.raises(ValueError, match="1 or 3 channels"):
        C.corrupt(torch.rand(2, 2, 28, 28), "contrast", 1, gen())
    with pytest.raises(ValueError, match="at least 8x8"):
        C.corrupt(torch.rand(2, 1, 7, 28), "contrast", 1, gen())
    with pytest.raises(ValueError, match="float tensor"):
        C.corrupt((x * 255).to(torch.uint8), "contrast", 1, gen())
    with pytest.raises(TypeError, match="torch.Generator"):
        C.corrupt(x, "contrast", 1, 0)
    with pytest.raises(ValueError, match="severity"):
        C.CORRUPTIONS["fog"](x, 7, gen())


# ------------------------------------------------------------------ properties of every corruption


@pytest.fixture(scope="module")
def corrupted(clean):
    """corrupted(name, key) -> [severity 1..5 outputs] on the clean batch, seed 5, computed once."""
    memo: dict[tuple[str, str], list[torch.Tensor]] = {}

    def get(name: str, key: str) -> list[torch.Tensor]:
        if (name, key) not in memo:
            memo[name, key] = [C.corrupt(clean[key], name, s, gen(5)) for s in C.SEVERITIES]
        return memo[name, key]

    return get


@pytest.mark.parametrize("name,key", CASES)
def test_shape_dtype_device_range_kept(name, key, clean, corrupted):
    x = clean[key]
    before = x.clone()
    for y in corrupted(name, key):
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(x, before)  # the input is not modified


@pytest.mark.parametrize("name", C.corruptions_for(3))
@pytest.mark.parametrize(
    "dtype,shape", [(torch.float64, (3, 16, 20)), (torch.float16, (3, 8, 8)), (torch.float32, (3, 40, 36))]
)
def test_other_dtypes_and_sizes(name, dtype, shape):
    x = structured(4, *shape).to(dtype)
    y = C.corrupt(x, name, 5, gen())
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y.float()).all() and float(y.min()) >= 0 and float(y.max()) <= 1
    assert distance(y.float(), x.float()) > 0


@pytest.mark.parametrize("name,key", CASES)
def test_deterministic_for_a_seed(name, key, clean):
    x = clean[key][:8]
    a = C.corrupt(x, name, 3, gen(11))
    b = C.corrupt(x, name, 3, gen(11))
    c = C.corrupt(x, name, 3, gen(12))
    assert torch.equal(a, b)
    assert torch.equal(a, C.CORRUPTIONS[name](x, 3, gen(11)))
    if name in C.RANDOM:
        assert not torch.equal(a, c)
    else:
        assert torch.equal(a, c)


@pytest.mark.parametrize("name,key", CASES)
def test_strength_grows_with_severity(name, key, clean, corrupted):
    """Every severity changes the image; the mean |corrupted - clean| never falls from one
    severity to the next and severity 5 is clearly stronger than 1. (The tolerance is for
    motion_blur, whose CIFAR-10-C levels 3 and 4 differ by weights below e^-18.)"""
    x = clean[key]
    d = [distance(y, x) for y in corrupted(name, key)]
    assert min(d) > 1e-4, d
    assert all(b >= a - 1e-6 for a, b in zip(d, d[1:])), d
    assert d[-1] > d[0] * 1.2, d


@pytest.mark.parametrize(
    "name", ["gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur", "pixelate", "elastic_transform"]
)
@pytest.mark.parametrize("key", SHAPES)
def test_spatial_corruptions_only_move_and_average_pixels(name, key, clean):
    """Convex combinations of pixels: a constant image stays constant and every output lies
    within its image's range."""
    c, h, w = SHAPES[key]
    flat = torch.full((2, c, h, w), 0.3)
    x = clean[key][:8]
    for s in C.SEVERITIES:
        assert torch.allclose(C.corrupt(flat, name, s, gen()), flat, atol=1e-6)
        y = C.corrupt(x, name, s, gen())
        assert (y >= x.amin((1, 2, 3), keepdim=True) - 1e-6).all()
        assert (y <= x.amax((1, 2, 3), keepdim=True) + 1e-6).all()


# ------------------------------------------------------------------ hand checks: noise


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_gaussian_noise_std_on_mid_grey_is_the_table_sigma(severity):
    x = torch.full((16, 3, 32, 32), 0.5)
    noise = C.corrupt(x, "gaussian_noise", severity, gen()) - x
    sigma = C.PARAMS["gaussian_noise"][32][severity - 1]
    assert float(noise.std()) == pytest.approx(sigma, rel=0.03)
    assert abs(float(noise.mean())) < 0.003


def test_shot_speckle_and_impulse_noise_statistics():
    x = torch.full((16, 1, 28, 28), 0.5)
    for s in C.SEVERITIES:
        photons = C.PARAMS["shot_noise"][28][s - 1]
        y = C.corrupt(x, "shot_noise", s, gen(s))
        assert float(y.mean()) == pytest.approx(0.5, abs=0.01)
        assert float(y.var()) == pytest.approx(0.5 / photons, rel=0.1)  # Poisson(c x) / c: variance x / c
        assert torch.allclose(y * photons, (y * photons).round(), atol=1e-3)  # whole photon counts
        c = C.PARAMS["speckle_noise"][28][s - 1]
        assert float((C.corrupt(x, "speckle_noise", s, gen(s)) - x).std()) == pytest.approx(0.5 * c, rel=0.05)
        amount = C.PARAMS["impulse_noise"][28][s - 1]
        y = C.corrupt(x, "impulse_noise", s, gen(s))
        assert set(torch.unique(y).tolist()) <= {0.0, 0.5, 1.0}
        hit = y != 0.5
        n = hit.numel()
        assert abs(float(hit.float().mean()) - amount) < 4 * (amount * (1 - amount) / n) ** 0.5  # binomial
        assert abs(float((y[hit] == 1).float().mean()) - 0.5) < 4 * (0.25 / int(hit.sum())) ** 0.5


# ------------------------------------------------------------------ hand checks: blur


@pytest.mark.parametrize("key", SHAPES)
def test_gaussian_blur_equals_scipy_gaussian_filter(key):
    c, h, w = SHAPES[key]
    x = torch.rand(4, c, h, w, generator=gen(), dtype=torch.float64)
    for s in C.SEVERITIES:
        sigma = C.PARAMS["gaussian_blur"][h][s - 1]
        # skimage.filters.gaussian (CIFAR-10-C) = scipy's filter, truncate 4, mode 'nearest'
        ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        np.testing.assert_allclose(C.corrupt(x, "gaussian_blur", s, gen()).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("key", SHAPES)
def test_defocus_blur_is_the_smoothed_lattice_disk(key):
    c, h, w = SHAPES[key]
    x = torch.rand(3, c, h, w, generator=gen(), dtype=torch.float64)
    ij = np.arange(-8, 9)
    for s in C.SEVERITIES:
        radius, alias = C.PARAMS["defocus_blur"][h][s - 1]
        disk = ((ij[:, None] ** 2 + ij[None, :] ** 2) <= radius**2).astype(float)
        disk /= disk.sum()
        g1 = np.exp(-(np.array([-1.0, 0.0, 1.0]) ** 2) / (2 * alias**2))
        kernel = ndimage.correlate(disk, np.outer(g1, g1) / g1.sum() ** 2, mode="mirror")  # cv2.GaussianBlur 3x3
        if radius < 1:
            assert np.count_nonzero(kernel > 1e-12) == 9  # the centre pixel, blurred by 3x3
        ref = np.stack([[ndimage.correlate(im, kernel, mode="mirror") for im in img] for img in x.numpy()])
        np.testing.assert_allclose(C.corrupt(x, "defocus_blur", s, gen()).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("key", SHAPES)
def test_motion_blur_of_a_point_is_a_one_sided_gaussian_trail(key):
    """ImageMagick's kernel: out(p) = sum_k w_k x(p + o_k), o_k ~ k (cos a, sin a), |a| <= 45
    deg. A point at q leaves the weights at q - o_k: a trail going left of q, total mass 1,
    w_0 at q itself."""
    c, h, w = SHAPES[key]
    qy, qx = h // 2, w - 2
    x = torch.zeros(8, c, h, w, dtype=torch.float64)
    x[:, :, qy, qx] = 1
    for s in C.SEVERITIES:
        radius, sigma = C.PARAMS["motion_blur"][h][s - 1]
        taps = int(2 * np.ceil(radius) + 1)
        weights = np.exp(-(np.arange(taps) ** 2) / (2 * sigma**2))
        y = C.corrupt(x, "motion_blur", s, gen(s))
        assert torch.allclose(y.sum((2, 3)), torch.ones(8, c, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(y[:, :, qy, qx], torch.tensor(weights[0] / weights.sum(), dtype=torch.float64), atol=1e-6)
        rows, cols = torch.nonzero(y[:, 0] > 1e-9, as_tuple=True)[1:]
        assert (cols <= qx).all() and ((rows - qy).abs() <= (qx - cols) + 1).all()  # left, within +-45 deg
        assert ((rows - qy) ** 2 + (cols - qx) ** 2 <= taps**2).all()  # within the trail's length (+ rounding)
    angles = {tuple(torch.nonzero(im[0] > 1e-3).flatten().tolist()) for im in C.corrupt(x, "motion_blur", 5, gen())}
    assert len(angles) > 4  # a random direction per image


def _clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    """CIFAR-10-C's clipped_zoom (make_cifar_c.py) on an (H, W) image."""
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], z, order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


@pytest.mark.parametrize("key", SHAPES)
@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_equals_cifar_c_clipped_zoom(key, severity):
    c, h, w = SHAPES[key]
    x = torch.rand(2, c, h, w, generator=gen(), dtype=torch.float64)
    zooms = np.arange(1, [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1], 0.01)  # as make_cifar_c.py
    ref = np.stack(
        [[(im + sum(_clipped_zoom(im, z) for z in zooms)) / (len(zooms) + 1) for im in img] for img in x.numpy()]
    )
    np.testing.assert_allclose(C.corrupt(x, "zoom_blur", severity, gen()).numpy(), ref, atol=1e-12)


# ------------------------------------------------------------------ hand checks: weather and digital


@pytest.mark.parametrize("key", SHAPES)
def test_contrast_is_the_scaled_distance_from_the_channel_mean(key, clean):
    x = clean[key]
    for s in C.SEVERITIES:
        c = C.PARAMS["contrast"][x.shape[-1]][s - 1]
        mean = x.mean((2, 3), keepdim=True)
        torch.testing.assert_close(C.corrupt(x, "contrast", s, gen()), ((x - mean) * c + mean).clamp(0, 1))


def _hsv_round_trip(x: torch.Tensor, channel: int, fn) -> torch.Tensor:
    hsv = mcolors.rgb_to_hsv(x.permute(0, 2, 3, 1).numpy())
    hsv[..., channel] = np.clip(fn(hsv[..., channel]), 0, 1)
    return torch.from_numpy(mcolors.hsv_to_rgb(hsv)).permute(0, 3, 1, 2)


def test_brightness_adds_to_the_hsv_value():
    x = torch.rand(4, 3, 32, 32, generator=gen(), dtype=torch.float64)
    x[0, :, :4, :4] = 0  # black: becomes grey
    grey = torch.rand(4, 1, 28, 28, generator=gen(1))
    for s in C.SEVERITIES:
        c = C.PARAMS["brightness"][32][s - 1]
        torch.testing.assert_close(C.corrupt(x, "brightness", s, gen()), _hsv_round_trip(x, 2, lambda v, c=c: v + c))
        torch.testing.assert_close(C.corrupt(grey, "brightness", s, gen()), (grey + c).clamp(max=1))


def test_saturate_scales_the_hsv_saturation():
    x = torch.rand(4, 3, 32, 32, generator=gen(), dtype=torch.float64)
    x[0, :, :4, :4] = 0.5  # grey (hue 0 in skimage and matplotlib: tinted red when b > 0)
    x[0, :, 4:8, :4] = 0  # black
    for s in C.SEVERITIES:
        a, b = C.PARAMS["saturate"][32][s - 1]
        ref = _hsv_round_trip(x, 1, lambda sat, a=a, b=b: sat * a + b)
        torch.testing.assert_close(C.corrupt(x, "saturate", s, gen()), ref)


def test_fog_on_a_constant_image_spans_the_table_formula():
    """out = (x + t F) M / (M + t), F in [0, 1] reaching both ends on the full 32x32 map."""
    v = 0.6
    x = torch.full((4, 3, 32, 32), v)
    for s in C.SEVERITIES:
        t, _ = C.PARAMS["fog"][32][s - 1]
        y = C.corrupt(x, "fog", s, gen(s))
        assert torch.allclose(y.amin((1, 2, 3)), torch.tensor(v * v / (v + t)), atol=1e-6)
        assert torch.allclose(y.amax((1, 2, 3)), torch.tensor(v), atol=1e-6)
        assert torch.equal(y[:, 0], y[:, 2])  # one fog layer for all channels
        assert not torch.equal(y[0], y[1])  # a fractal per image


@pytest.mark.parametrize("key", SHAPES)
def test_pixelate_equals_pillow_box_resize(key):
    c, h, w = SHAPES[key]
    x = torch.randint(0, 256, (4, c, h, w), generator=gen()).float() / 255
    for s in C.SEVERITIES:
        n = C.PARAMS["pixelate"][h][s - 1]
        ref = []
        for img in (x * 255).round().to(torch.uint8).numpy():
            pil = Image.fromarray(img.transpose(1, 2, 0).squeeze(-1) if c == 1 else img.transpose(1, 2, 0))
            a = np.asarray(pil.resize((n, n), Image.BOX).resize((w, h), Image.BOX), dtype=np.float32) / 255
            ref.append(a[None] if c == 1 else a.transpose(2, 0, 1))
        y = C.corrupt(x, "pixelate", s, gen())
        # Pillow rounds to uint8 after each pass
        np.testing.assert_allclose(y.numpy(), np.stack(ref), atol=1 / 255 + 1e-6)
        assert float((y - x).abs().mean()) > 0


@pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
@pytest.mark.parametrize("key", SHAPES)
def test_jpeg_is_a_real_encoder_round_trip(key):
    c, h, w = SHAPES[key]
    x = structured(8, c, h, w, seed=3)
    u8 = (x * 255).round().to(torch.uint8)
    sizes = []
    for s in C.SEVERITIES:
        quality = C.PARAMS["jpeg"][h][s - 1]
        y = C.corrupt(x, "jpeg", s, gen())
        encoded = encode_jpeg(list(u8), quality=quality)
        sizes.append(sum(len(e) for e in encoded))
        torch.testing.assert_close(y, torch.stack(decode_jpeg(encoded)).float() / 255)
        assert distance(y, u8.float() / 255) > 1 / 255  # more than the uint8 rounding
        assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)  # decoded 8-bit values
        # The same libjpeg round trip as Pillow (what CIFAR-10-C used) at that quality
        ref = []
        for img in u8.numpy():
            buf = io.BytesIO()
            Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0)).save(buf, "JPEG", quality=quality)
            a = np.asarray(Image.open(buf), dtype=np.float32) / 255
            ref.append(a[None] if c == 1 else a.transpose(2, 0, 1))
        assert float(np.abs(y.numpy() - np.stack(ref)).mean()) < 0.5 / 255
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]  # quality falls with severity


# ------------------------------------------------------------------ CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", C.corruptions_for(3))
def test_cuda_keeps_the_device_and_matches_cpu(name):
    x = structured(8, 3, 32, 32)
    xc = x.cuda()

    def cuda_gen():
        return torch.Generator(device="cuda").manual_seed(0)

    y = C.corrupt(xc, name, 4, cuda_gen())
    assert y.device == xc.device and y.dtype == xc.dtype and y.shape == xc.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y, C.corrupt(xc, name, 4, cuda_gen()), atol=1e-6)
    if name not in C.RANDOM:  # no random numbers: the same result as on CPU
        assert torch.allclose(y.cpu(), C.corrupt(x, name, 4, gen()), atol=1e-4)
    with pytest.raises(ValueError, match="generator is on cpu"):
        C.corrupt(xc, name, 4, gen())
    h = C.corrupt(xc.half(), name, 4, cuda_gen())
    assert h.dtype == torch.float16 and h.device == xc.device


# ------------------------------------------------------------------ cost


@pytest.mark.parametrize("key", SHAPES)
def test_battery_cost(benchmark, key):
    """The whole battery (every corruption x 5 severities) on 64 images; with
    --benchmark-disable (the default run) it runs once."""
    c, h, w = SHAPES[key]
    x = structured(64, c, h, w)

    def battery():
        g = gen()
        return sum(float(C.corrupt(x, n, s, g).mean()) for n in C.corruptions_for(c) for s in C.SEVERITIES)

    assert benchmark(battery) > 0
