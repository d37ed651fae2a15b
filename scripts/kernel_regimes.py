"""Which CPU kernels move the trained numbers: a fixed small-CNN training (the smoke recipe's
layers and optimiser: conv, batch norm, linear, channels-last, fused Adam) under several kernel
pinnings, each in a fresh process, printing a hash of the trained weights.

    python scripts/kernel_regimes.py            # one JSON object: the CPU, then one row per regime

Two machines whose rows agree hash for hash computed the same arithmetic bit for bit under that
pinning. It imports torch only (not the harness, which pins the kernels itself), so any torch
can run it; compare machines on the same torch release.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

PINS = {
    "native": {},
    "aten+onednn": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "aten+onednn+mkl": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                        "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "aten+onednn+cbwr": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "aten+onednn+mkl+cbwr": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                             "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"},
    "aten+onednn+compatible": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                               "MKL_CBWR": "COMPATIBLE"},
}
PIN_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def _capture(fn) -> str:
    import tempfile

    sys.stdout.flush()
    fd = os.dup(1)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        try:
            fn()
        finally:
            sys.stdout.flush()
            os.dup2(fd, 1)
            os.close(fd)
        f.seek(0)
        return f.read().decode(errors="replace")


def child(steps: int, bf16: bool) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64 * steps, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64 * steps,), generator=g)
    probe = {}

    def first_step():
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), \
                torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
            step(0)

    def step(i):
        xb = x[i * 64:(i + 1) * 64].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(xb), y[i * 64:(i + 1) * 64])
        opt.zero_grad()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    log = _capture(first_step)
    for i in range(1, steps):
        step(i)
    seconds = time.perf_counter() - t0
    lines = log.splitlines()
    probe["onednn_isa"] = next((ln.split("isa:", 1)[1] for ln in lines if ",isa:" in ln), None)
    probe["onednn_conv"] = sorted({ln.split(",")[6] for ln in lines
                                   if ln.startswith("onednn_verbose") and ",convolution," in ln})
    probe["mkl"] = next((ln.split(" for ", 1)[-1] for ln in lines if ln.startswith("MKL_VERBOSE oneMKL")), None)
    probe["mkl_cnr"] = sorted({w for ln in lines if ln.startswith("MKL_VERBOSE SGEMM") for w in ln.split()
                               if w.startswith("CNR:")})
    digest = hashlib.sha256(b"".join(p.detach().float().numpy().tobytes() for p in model.parameters()))
    return {"aten": torch.backends.cpu.get_cpu_capability(), **probe, "threads": torch.get_num_threads(),
            "hash": digest.hexdigest()[:16], "seconds": round(seconds, 3), "steps": steps, "bf16": bf16,
            "torch": torch.__version__}


def cpu() -> dict:
    out = {"machine": os.uname().machine}
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        lines = info.splitlines()
        out["model"] = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
        flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
        out["flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return out


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]), sys.argv[3] == "1")))
        return
    steps = int(os.environ.get("STEPS", "30"))
    rows = []
    base = {k: v for k, v in os.environ.items() if k not in PIN_VARS}
    runs = [(name, pins, t, False) for name, pins in PINS.items() for t in (1, 2)]
    runs += [("native-bf16", {}, 2, True)]
    for name, pins, threads, bf16 in runs:
        env = {**base, **pins, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.run([sys.executable, __file__, "--child", str(steps), "1" if bf16 else "0"], env=env,
                              capture_output=True, text=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
        rows.append({"regime": name, **row})
    print(json.dumps({"cpu": cpu(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
