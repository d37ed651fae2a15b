"""Deployed forms of a trained model: what ships, not the eager PyTorch model that trained.

* ``onnx``: the model exported with ``torch.onnx`` (the TorchScript exporter: 0.14 s for the
  small CNN against 5.5 s for the dynamo exporter, which also stores the weights beside the
  graph in a second file), run by onnxruntime on the CPU.
* ``int8``: that ONNX graph quantized with onnxruntime's *static* quantization: QDQ format,
  int8 weights per output channel, int8 activations whose ranges are calibrated (min/max) on a
  stated number of training images, never test images. Static, because dynamic quantization
  quantizes only the weights of linear and recurrent layers and computes the convolutions of a
  CNN in float: it would leave most of this model as it was.

Every form is checked before anything is measured on it: the ONNX graph must reproduce the
float model's logits on a fixed batch within a numerical tolerance (``check``); a form that
does not raises ``ExportMismatch`` naming the form and the largest difference. ``build`` writes
each file into the folder it is given, with its sha256 beside it; a file whose checksum does not
match is rebuilt. (Keying the files in the model cache by their source model is not wired yet.)

Only a model's forward pass is exported, so the images it takes are those the harness feeds
every model: float32, N x C x H x W, values in [0, 1] (normalisation is inside the model).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

FORMS = ("onnx", "int8")
FORM_MARK = "@"  # "baseline@int8": the baseline's int8 form
OPSET = 17
CALIBRATION_IMAGES = 512  # training images the int8 activation ranges are calibrated on
CALIBRATION_SEED = 20261207
CHECK_IMAGES = 64  # the size of the fixed batch an export is checked on
# An fp32 export computes the same arithmetic in other kernels: logits agree to float rounding
# (3e-8 measured on the small CNN). The bound is on the largest absolute logit difference
# relative to the logits' own scale, far above rounding and far below any real change.
EXPORT_TOLERANCE = 1e-4
HERE = Path(__file__).resolve().parent


class DeployError(RuntimeError):
    """A model cannot be exported or quantized (the message says which form and why)."""


class ExportMismatch(DeployError):
    """An exported form computes something other than the model it came from."""


def require() -> None:
    """onnx and onnxruntime are installed, or one clear error saying how to install them."""
    missing = [m for m in ("onnx", "onnxruntime") if _missing(m)]
    if missing:
        raise DeployError(f"deployed forms need {' and '.join(missing)}: pip install -e '.[deploy]' (setup.sh installs "
                          "it)")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def split_form(model: str) -> tuple[str, str | None]:
    """``baseline@s43@int8`` -> (``baseline@s43``, ``int8``); a model that is no deployed form
    -> (model, None)."""
    head, sep, tail = model.rpartition(FORM_MARK)
    if sep and tail in FORMS:
        return head, tail
    return model, None


def parse_forms(text: str) -> tuple[str, ...]:
    """``onnx,int8`` -> ("onnx", "int8"), each checked."""
    forms = tuple(dict.fromkeys(f.strip().lower() for f in str(text).split(",") if f.strip()))
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        raise ValueError(f"unknown deployed form {', '.join(bad) or repr(text)}: give one or more of {', '.join(FORMS)}")
    return forms


def code_version() -> str:
    """What decides a deployed form besides its source model: this file, onnx and onnxruntime."""
    import onnx
    import onnxruntime

    h = hashlib.sha256((HERE / "deploy.py").read_bytes())
    h.update(f"onnx {onnx.__version__} onnxruntime {onnxruntime.__version__} opset {OPSET}".encode())
    return h.hexdigest()[:16]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- running a form
class OrtModule(nn.Module):
    """An onnxruntime session as a module: ``forward(x)`` gives the float32 logits, on ``x``'s
    device, of float images in [0, 1]. It has no gradients (a deployed form cannot be attacked
    by gradient; attacks transfer from the float model) and no layers to hook (no Grad-CAM)."""

    differentiable = False  # kinds that differentiate the model do not apply (ModelEvaluation.evidence)

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape, self.input_type = inp.name, list(inp.shape), inp.type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def __getstate__(self):  # a session does not pickle: the file does
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(Path(state["path"]))


# ---------------------------------------------------------------------------- building a form
@dataclass(frozen=True)
class Form:
    """One deployed form on disk, as checked."""

    form: str
    path: Path
    sha256: str
    bytes: int
    check_max_diff: float  # largest |logit difference| from the float model on the check batch
    check_images: int
    calibration_images: int = 0  # int8: training images its activation ranges come from
    calibration_seed: int | None = None

    def to_dict(self) -> dict:
        return {"form": self.form, "file": self.path.name, "sha256": self.sha256, "bytes": self.bytes,
                "check_max_diff": self.check_max_diff, "check_images": self.check_images,
                "calibration_images": self.calibration_images, "calibration_seed": self.calibration_seed}


def _atomic_target(path: Path):
    """A temporary path beside ``path`` to write to, renamed onto it on success."""
    @contextlib.contextmanager
    def ctx():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    return ctx()


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The model's forward pass as an ONNX graph (batch size free), written atomically."""
    import warnings

    model = model.eval().to("cpu")
    with _atomic_target(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(model, (example[:1].to("cpu", torch.float32),), str(tmp), input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        except Exception as exc:
            raise DeployError(f"torch.onnx cannot export the model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc


def calibration_images(train_x: torch.Tensor, n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``n`` training images (uint8 -> float in [0, 1]), chosen by ``seed``: what int8's
    activation ranges are calibrated on."""
    n = min(int(n), len(train_x))
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(train_x), generator=g)[:n]
    return (train_x[idx].float() / 255.0).numpy()


def quantize_int8(onnx_path: Path, images: np.ndarray, path: Path, per_channel: bool = True,
                  batch_size: int = 64) -> None:
    """Static int8 quantization (QDQ, symmetric int8 weights per channel, int8 activations whose
    ranges are the min/max over ``images``), written atomically."""
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the tools log a warning per 1-D weight they quantize per tensor
    try:
        with tempfile.TemporaryDirectory() as work, _atomic_target(path) as tmp:
            pre = Path(work) / "pre.onnx"
            q.quant_pre_process(str(onnx_path), str(pre))  # shape inference and graph folding, as recommended
            q.quantize_static(str(pre), str(tmp), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                              weight_type=q.QuantType.QInt8, activation_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax)
    except Exception as exc:
        raise DeployError(f"onnxruntime cannot quantize {onnx_path.name} to int8: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    finally:
        root.setLevel(level)


def max_logit_diff(model: nn.Module, form: nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        a = model.eval().to("cpu")(images.to("cpu", torch.float32)).float()
        b = form(images.to("cpu", torch.float32)).float()
    if a.shape != b.shape:
        raise ExportMismatch(f"the exported form returns {tuple(b.shape)} where the model returns {tuple(a.shape)}")
    if not torch.isfinite(b).all():
        raise ExportMismatch("the exported form gives non-finite logits where the model gives finite ones")
    return float((a - b).abs().max())


def check(model: nn.Module, form: nn.Module, images: torch.Tensor, what: str,
          tolerance: float = EXPORT_TOLERANCE) -> float:
    """The exported fp32 graph reproduces the model's logits on ``images`` (the fixed check
    batch): the largest absolute difference at most ``tolerance`` x the logits' largest
    magnitude (at least 1). Returns the difference; raises ``ExportMismatch`` naming ``what``."""
    diff = max_logit_diff(model, form, images)
    with torch.no_grad():
        scale = max(1.0, float(model(images.to("cpu", torch.float32)).abs().max()))
    if not diff <= tolerance * scale:
        raise ExportMismatch(
            f"{what} changes the model beyond numerical tolerance: its logits differ from the PyTorch model's by up to "
            f"{diff:.3g} on the {len(images)} images of the check batch (tolerance {tolerance:g} x {scale:.3g}); "
            "nothing is measured on it. An operator the exporter translates differently (a custom layer, a "
            "train-mode BatchNorm or Dropout, an in-place trick) is the usual cause")
    return diff


def build(model: nn.Module, form: str, folder: Path, stem: str, check_batch: torch.Tensor, train_x: torch.Tensor,
          n_calibration: int = CALIBRATION_IMAGES, per_channel: bool = True,
          calibration: np.ndarray | None = None) -> Form:
    """The deployed ``form`` of ``model`` in ``folder`` (``<stem>.<form>.onnx``): read from there
    when its checksum matches the one recorded beside it, else exported (and quantized), checked
    and recorded. ``check_batch``: float images the export is checked on; ``train_x``: the uint8
    training images int8 is calibrated on (``calibration`` overrides them: a planted defect)."""
    require()
    if form not in FORMS:
        raise ValueError(f"unknown deployed form {form!r}: one of {', '.join(FORMS)}")
    folder = Path(folder)
    path = folder / f"{stem}.{form}.onnx"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("sha256") == sha256_of(path):
                return Form(form, path, meta["sha256"], path.stat().st_size, meta["check_max_diff"],
                            meta["check_images"], meta.get("calibration_images", 0), meta.get("calibration_seed"))
        except (OSError, ValueError, KeyError):
            pass  # damaged: rebuilt below
    if form == "onnx":
        export_onnx(model, check_batch, path)
        fp32 = path
    else:  # quantized from the checked fp32 export (built or read from the cache first)
        fp32 = build(model, "onnx", folder, stem, check_batch, train_x).path
    diff = check(model, OrtModule(fp32), check_batch, f"the ONNX export ({fp32.name})")
    n_cal, seed = 0, None
    if form == "int8":
        images = calibration if calibration is not None else calibration_images(train_x, n_calibration)
        n_cal, seed = len(images), (None if calibration is not None else CALIBRATION_SEED)
        quantize_int8(fp32, images, path, per_channel=per_channel)
        diff = max_logit_diff(model, OrtModule(path), check_batch)  # int8 changes logits: measured, gated later
    out = Form(form, path, sha256_of(path), path.stat().st_size, diff, len(check_batch), n_cal, seed)
    with _atomic_target(meta_path) as tmp:
        tmp.write_text(json.dumps(out.to_dict(), indent=1))
    return out


def cpu_isa() -> str:
    """The int8 instruction set onnxruntime's kernels can use on this CPU (VNNI computes int8
    dot products without the 16-bit saturation of plain AVX2): part of a deployed form's regime."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), [])
    except OSError:
        flags = []
    for flag, label in (("avx512_vnni", "avx512-vnni"), ("avx_vnni", "avx-vnni"), ("avx512bw", "avx512"),
                        ("avx2", "avx2")):
        if flag in flags:
            return label
    import platform

    return platform.machine().lower() or "unknown"


# ---------------------------------------------------------------------------- speed and size
def speed(model: nn.Module, shape: tuple[int, ...], folder: Path, batch_sizes=(1, 64), reps: int = 20,
          forms=FORMS) -> list[dict]:
    """Latency per image and throughput of eager torch and each deployed form of ``model`` on
    this CPU at each batch size (best of ``reps`` timed passes after one warm-up), with each
    form's file size and its speed relative to eager torch: rows for a table (``nox -s bench``
    prints it; timings are figures to read, never assertions)."""
    import io
    import time

    g = torch.Generator().manual_seed(0)
    x_u8 = (torch.rand(max(batch_sizes) * 2 + CALIBRATION_IMAGES, *shape, generator=g) * 255).to(torch.uint8)
    check_batch = x_u8[:CHECK_IMAGES].float() / 255
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    runners = {"torch": (model.eval(), len(buf.getvalue()))}
    for form in forms:
        f = build(model, form, folder, "speed", check_batch, x_u8)
        runners[form] = (OrtModule(f.path), f.bytes)
    rows = []
    for bs in batch_sizes:
        xb = x_u8[:bs].float() / 255
        best = {}
        for name, (run, _) in runners.items():
            with torch.no_grad():
                run(xb)
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    run(xb)
                    times.append(time.perf_counter() - t0)
            best[name] = min(times)
        for name, (_, size) in runners.items():
            rows.append({"form": name, "batch": bs, "ms_per_image": 1e3 * best[name] / bs,
                         "images_per_s": bs / best[name], "speedup_vs_torch": best["torch"] / best[name],
                         "bytes": size, "size_vs_torch": size / runners["torch"][1]})
    return rows


def speed_table(rows: list[dict]) -> str:
    from tabulate import tabulate

    return tabulate([[r["form"], r["batch"], f"{r['ms_per_image']:.3f}", f"{r['images_per_s']:.0f}",
                      f"{r['speedup_vs_torch']:.2f}x", f"{r['bytes'] / 1e6:.2f}", f"{r['size_vs_torch']:.2f}x"]
                     for r in rows],
                    headers=["form", "batch", "ms / image", "images / s", "speed vs torch", "MB", "size vs torch"])


def main(argv=None) -> int:
    """``python -m harness.deploy``: the speed and size table of the seed models' deployed forms
    on this CPU (random weights: speed does not depend on them)."""
    import argparse

    from . import models

    ap = argparse.ArgumentParser(prog="python -m harness.deploy", description=main.__doc__)
    ap.add_argument("--arch", action="append", choices=["small-cnn", "resnet18"])
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args(argv)
    shapes = {"small-cnn": ("fashion-mnist", (1, 28, 28), 10), "resnet18": ("cifar100", (3, 32, 32), 100)}
    for arch in a.arch or ["small-cnn", "resnet18"]:
        ds, shape, k = shapes[arch]
        torch.manual_seed(0)
        model = models.build(arch, ds, k, shape[0], shape)
        with tempfile.TemporaryDirectory() as work:
            rows = speed(model, shape, Path(work), reps=a.reps)
        print(f"\n{arch} ({ds} shape {'x'.join(map(str, shape))}), {torch.get_num_threads()} threads, CPU int8 ISA "
              f"{cpu_isa()}")
        print(speed_table(rows))
    return 0


# ---------------------------------------------------------------------------- a user's own artifact
CONVENTION_IMAGES = 256  # training images a file's input convention is checked on
CONVENTION_MARGIN = 0.2  # accuracy another input convention must gain to be named as the file's


def load_artifact(path: Path, data, what: str | None = None) -> OrtModule:
    """A user's ONNX file as a model of the run, checked against the data before anything runs:
    one image input of N x C x H x W float32 with the data's channels and size, one logit per
    class, and the input convention the harness feeds (values in [0, 1], RGB order): where the
    file is clearly more accurate on training images fed 0-255 values or BGR channels, one
    error names the convention it expects. Each mismatch is one ``ValueError`` saying what to
    change."""
    require()
    path = Path(path)
    what = what or f"--weights {path}"
    if not path.is_file():
        raise ValueError(f"{what}: no such file")
    try:
        model = OrtModule(path)
    except Exception as exc:  # noqa: BLE001 - the file is the problem, whatever the reason
        raise ValueError(f"{what}: onnxruntime cannot load it as an ONNX model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    c, h, w = data.image_shape
    inputs = model.session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{what} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the harness feeds "
                         "one: the images")
    shape, dtype = model.input_shape, model.input_type
    if dtype != "tensor(float)":
        raise ValueError(f"{what} takes {dtype} images; the harness feeds float32 in [0, 1]: export the model with "
                         "a float32 input (put any conversion inside the model)")
    if len(shape) != 4:
        raise ValueError(f"{what} takes inputs of rank {len(shape)} ({shape}); the harness feeds N x C x H x W images")
    dims = [d if isinstance(d, int) else None for d in shape[1:]]
    if dims[0] != c and dims[2] == c and dims[0] in (None, h):
        raise ValueError(f"{what} takes channels last ({shape}: N x H x W x C); the harness feeds channels first "
                         f"(N x {c} x {h} x {w}): export it with a transpose inside, or from the N x C x H x W model")
    want = [c, h, w]
    for name, got, exp in zip(("channels", "height", "width"), dims, want):
        if got is not None and got != exp:
            raise ValueError(f"{what} takes images of {name} {got} ({shape}); {data.name} images are {c} x {h} x {w} "
                             f"(N x C x H x W): use --image-size, or the model made for this data")
    x_u8 = data.train_x[:CONVENTION_IMAGES]
    y = data.train_y[:CONVENTION_IMAGES]
    x = x_u8.float() / 255.0
    try:
        out = model(x[:2])
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{what} fails on a batch of 2 images of {c} x {h} x {w} in [0, 1]: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''} (a fixed batch size? export it "
                         "with a dynamic batch axis)") from exc
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise ValueError(f"{what} returns {tuple(out.shape)} for 2 images; it must return ({2}, {data.num_classes}): "
                         f"one logit per class of {data.name}")

    def accuracy(images: torch.Tensor) -> float:
        return float((model(images).argmax(1) == y).float().mean())

    base = accuracy(x)
    others = {"pixel values 0-255 (the harness feeds [0, 1]: divide by 255 inside the model)": x * 255.0}
    if c == 3:
        others["BGR channel order (the harness feeds RGB: reverse the channels inside the model)"] = x.flip(1)
    for convention, images in others.items():
        acc = accuracy(images)
        if acc >= base + CONVENTION_MARGIN:
            raise ValueError(f"{what} expects {convention}: on {len(y)} training images it is right on {acc:.0%} of "
                             f"them given that, on {base:.0%} as the harness feeds them")
    return model


__all__ = ["CALIBRATION_IMAGES", "DeployError", "ExportMismatch", "FORMS", "Form", "OrtModule", "build", "check",
           "code_version", "cpu_isa", "export_onnx", "load_artifact", "parse_forms", "quantize_int8", "require", "speed", "speed_table", "split_form"]


if __name__ == "__main__":
    raise SystemExit(main())

