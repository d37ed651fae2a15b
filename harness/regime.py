"""The arithmetic a run computes in (its *regime*): what changes the trained numbers between
machines for the same recipe and seed, recorded with every calibration and checked by every run
before a calibrated bound gates it.

The reference arithmetic on x86-64 CPUs: fp32, the AVX2 kernels of ATen, oneDNN and MKL, 1 or
2 threads. The instruction set the kernels use moves the trained numbers between CPUs (an
AVX-512 CPU running natively gave baseline 86.65% and 6 errors at >= 99% confidence at seed 42,
the AVX2 calibration machine 86.74% and 11); with the kernels pinned to AVX2 it reproduced the
AVX2 machine's run bit for bit, at no measurable cost (docs/verdicts.md). ``pin()`` sets the
variables when the harness is imported (they take effect at the first kernel call, so they must
be set before it); ``CNN_STRESS_KERNELS=native`` leaves the kernels to the CPU, and a variable a
user set is kept. ``probe()`` reads back what the kernels actually do (ATen's capability, the
ISA oneDNN dispatched to, MKL's reproducibility mode), so a pin that came too late shows.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

# What the kernels are pinned to (x86-64 only): ATen's vectorised kernels and oneDNN's
# convolutions held to AVX2, and MKL (the linear layers' GEMM, exp) in its cross-vendor
# reproducible mode: MKL takes a generic path on AMD CPUs and its AVX2 path on Intel ones, so
# only COMPATIBLE gives both the same bits (measured: docs/verdicts.md).
REFERENCE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
OPT_OUT = "CNN_STRESS_KERNELS"  # "native": leave the kernels to the CPU (its own regime: no calibrated table)
REFERENCE_THREADS = 2  # a CPU run gated by calibrated bounds uses at most this many threads (1 and 2 are calibrated)
PINNED: dict[str, str] = {}  # what pin() set in this process
HOW_TO_MATCH = ("To gate with them, run in their regime: fp32 (--precision auto on a CPU), the pinned kernels (unset "
                "CNN_STRESS_KERNELS and the variables ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_CBWR), 1 or 2 "
                "threads (--threads 2), the same torch release")


def pin() -> dict[str, str]:
    """Pin the CPU kernels to the reference instruction set (x86-64), unless ``CNN_STRESS_KERNELS
    =native``; variables already set are kept. Returns what it set. Idempotent."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    for k, v in REFERENCE_ENV.items():
        if k not in os.environ:
            os.environ[k] = v
            PINNED[k] = v
    return dict(PINNED)


def _capture_stdout(fn) -> str:
    """What ``fn`` writes to file descriptor 1 (oneDNN and MKL print their verbose lines there)."""
    import tempfile

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        try:
            fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        return f.read().decode(errors="replace")


def _isa_of(text: str | None) -> str | None:
    """An instruction-set family from oneDNN's ISA line or a kernel name: avx512, avx2, or older."""
    if not text:
        return None
    t = text.lower().replace("-", "").replace(" ", "")
    if "avx512" in t or "amx" in t or "avx10" in t:
        return "avx512"
    if "avx2" in t:
        return "avx2"
    if "sse" in t or "gemm:jit" in t or "ref" in t:
        return "sse4.1"
    return None


@functools.lru_cache(maxsize=1)
def probe() -> dict:
    """The kernels this process computes with: ATen's CPU capability, the ISA oneDNN's
    convolution ran with, MKL's reproducibility mode (CNR) and its code path, read back from
    a tiny convolution and matrix product under their verbose modes (a few milliseconds)."""
    import torch

    out = {"machine": platform.machine(), "aten": torch.backends.cpu.get_cpu_capability(), "onednn": None,
           "mkl": None, "pinned": {k: os.environ.get(k) for k in REFERENCE_ENV if os.environ.get(k)}}

    def run():
        with torch.no_grad():
            if torch.backends.mkldnn.is_available():
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    torch.nn.functional.conv2d(torch.ones(2, 1, 28, 28), torch.ones(8, 1, 3, 3))
            if torch.backends.mkl.is_available():
                with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                    a = torch.ones(64, 64)
                    a @ a

    try:
        log = _capture_stdout(run)
    except (OSError, RuntimeError):
        return out
    lines = log.splitlines()
    header = next((ln.split("isa:", 1)[1].strip() for ln in lines if ",isa:" in ln), None)
    conv = next((ln.split(",")[6] for ln in lines if ln.startswith("onednn_verbose") and ",convolution," in ln
                 and len(ln.split(",")) > 6), None)
    out["onednn"] = _isa_of(header) or _isa_of(conv)
    out["onednn_detail"] = header or conv
    path = next((ln.split(" for ", 1)[-1].split(", Lnx")[0] for ln in lines if ln.startswith("MKL_VERBOSE oneMKL")),
                None)
    cnr = next((w for ln in lines if ln.startswith("MKL_VERBOSE SGEMM") for w in ln.split() if w.startswith("CNR:")),
               None)
    out["mkl"] = path
    out["mkl_cnr"] = cnr
    return out


def kernels_label(p: dict | None = None) -> str:
    """A short name for the kernels a process computes with: ``avx2`` (the reference: ATen and
    oneDNN at AVX2, MKL in COMPATIBLE mode), ``avx512``, ``default`` (no vector extensions),
    ``mixed(...)`` where ATen and oneDNN disagree, ``+mkl:<mode>`` where MKL is not in COMPATIBLE
    mode, or the machine's architecture where there is no x86 vector capability (``aarch64``)."""
    p = p or probe()
    aten = (p.get("aten") or "").lower()
    if not aten.startswith(("avx", "default")):
        return (aten or p.get("machine") or "unknown").lower()
    families = {_isa_of(aten) or aten, p.get("onednn")} - {None}
    if families == {"avx2"} or families == {"avx512"}:
        label = families.pop()
    elif families <= {"default", "sse4.1"}:
        label = "default"
    else:
        label = "mixed(" + ",".join(sorted(families)) + ")"
    cnr = p.get("mkl_cnr")
    if cnr and cnr != "CNR:COMPATIBLE":
        label += "+mkl:" + cnr.split(":", 1)[1].lower()
    return label


def of_run(device: str, precision: str, threads: int, runtime_fields: dict | None = None) -> dict:
    """The regime of a run (or of a model's training): what a calibrated table is checked against."""
    import torch

    r = {"device": device, "precision": precision, "torch": torch.__version__.split("+")[0]}
    if device == "cpu":
        r["kernels"] = kernels_label()
        r["threads"] = int(threads)
    for k in ("channels_last", "fused", "compile"):
        if runtime_fields and k in runtime_fields:
            r[k] = bool(runtime_fields[k])
    return r


def describe(r: dict) -> str:
    """``cpu, fp32, avx2 kernels, 2 threads, torch 2.14.1``."""
    parts = [r.get("device", "?"), r.get("precision", "?")]
    if r.get("kernels"):
        parts.append(f"{r['kernels']} kernels")
    if r.get("threads"):
        parts.append(f"{r['threads']} thread{'s' if r['threads'] != 1 else ''}")
    if r.get("torch"):
        parts.append(f"torch {r['torch']}")
    return ", ".join(parts)


def mismatch(run: dict, table: dict | None, threads: list[int] | None = None) -> list[str]:
    """What differs between a run's regime and a calibrated table's (empty: the table applies).
    ``threads``: the thread counts the table was calibrated at (a run at another count computes
    other numbers than any calibration run)."""
    if not table:
        return ["no regime recorded (calibrated before regimes were; rerun the calibration)"]
    out = []
    for k in ("device", "precision", "kernels", "torch", "channels_last", "fused", "compile"):
        if k in table and k in run and run[k] != table[k]:
            out.append(f"{k} {run[k]} (calibrated: {table[k]})")
    if threads and run.get("device") == "cpu" and run.get("threads") not in threads:
        out.append(f"{run.get('threads')} CPU threads (calibrated: {', '.join(map(str, threads))})")
    return out


def default_threads(workers: int = 1) -> int:
    """CPU threads for a run gated by calibrated bounds: the reference count, or fewer where the
    machine (shared by ``workers`` processes) has fewer cores."""
    cores = os.cpu_count() or 1
    return max(1, min(REFERENCE_THREADS, cores // max(1, workers)))
