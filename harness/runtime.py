"""How a recipe is executed, not what it is: the device, and the ``Runtime`` (precision, memory
format, optimiser kernel, compilation, determinism, the CPU kernels' instruction set). Training
code: its source is in the model-cache key (``cache.CODE_FILES``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


@dataclass(frozen=True)
class Runtime:
    """How a recipe is executed (not what it is): precision, memory format, optimiser kernel,
    compilation, determinism, and the kernels' instruction set. The fields that change the
    computed numbers are part of the model-cache key (``key_fields``).

    Precision: fp32 on a CPU, bf16 autocast on CUDA (``precision="auto"``). bf16 on a CPU is a
    switch (``--precision bf16``): it trains another model (seed 42 on an AVX-512 BF16 CPU:
    85.53% and 38 errors at >= 99% confidence in bf16, 86.65% and 6 in fp32) and bought little
    there (the two smoke models in 83 s against 89-100 s in fp32), so the calibrated verdicts are
    fp32's and a bf16 run on a CPU reports those bounds without gating on them
    (``harness.regime``). Measured on this project's 2-core CPU (small CNN, batch 64, best of
    3 x 100 steps): channels-last 1.15x the default layout, the fused Adam kernel a further 1.2x,
    bf16 autocast 0.57x (emulated: no AVX-512 BF16), torch.compile no faster after a 32 s
    compile. On CUDA: bf16 autocast, channels-last, fused optimisers and cudnn.benchmark (off
    with ``deterministic``) are the standard fast path.
    """

    amp: bool = False  # bf16 autocast in training (and in evaluation on CUDA)
    channels_last: bool = True
    fused: bool = True  # fused optimiser kernel where torch has one for the device
    compile: bool = False
    deterministic: bool = False  # CUDA: cudnn.deterministic and no benchmark (the CPU path is deterministic)
    kernels: str = ""  # the CPU kernels' instruction set (harness.regime.kernels_label); "cuda" on a GPU

    @classmethod
    def default(cls, device: torch.device, deterministic: bool = False, compile: bool = False,
                precision: str = "auto") -> Runtime:
        from . import regime

        device = resolve_device(device)
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}: use auto (bf16 on CUDA, fp32 on a CPU), fp32 or bf16")
        amp = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        kernels = "cuda" if device.type == "cuda" else regime.kernels_label()
        return cls(amp=amp, channels_last=True, fused=True, compile=compile, deterministic=deterministic,
                   kernels=kernels)

    @property
    def precision(self) -> str:
        return "bf16" if self.amp else "fp32"

    def key_fields(self) -> dict:
        """What changes the trained weights' numbers: in the model-cache key."""
        return {"amp": self.amp, "channels_last": self.channels_last, "fused": self.fused, "compile": self.compile,
                "kernels": self.kernels}

    def to_dict(self) -> dict:
        # CPU thread count: it changes the trained numbers (1 vs 2 threads differ after 20 Adam
        # steps), so it is recorded; not keyed, so that a cache shared by machines with
        # different core counts (or xdist workers) serves one model per recipe to all of them
        return {**self.key_fields(), "precision": self.precision, "deterministic": self.deterministic,
                "cpu_threads": torch.get_num_threads()}
