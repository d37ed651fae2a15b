"""Training and measuring on a Ray cluster (``--executor ray``): one Ray task per model the
model cache does not hold, then one per slow measurement of each model; the driver checks what
comes back and writes it into its own caches, exactly where a local run would, so the run
then proceeds as if everything had been cached.

* A training task trains with the same code as a local run (``train.train`` into a temporary
  cache folder on the worker) and returns the cache entry's bytes through Ray's object store;
  the driver verifies them (``cache.load_entry``: key, recipe, profile, data, checksum) and
  writes them atomically. A measurement task rebuilds the model from those bytes, measures one
  kind of evidence (robustness battery, attacks, attention, OOD sets, shifted conformal sets,
  the failure taxonomy) and returns it as arrays (``evidence.pack``); the driver stores it in
  its evidence cache under the key a local run would compute. Nothing half-written reaches a
  cache; no shared file system is needed.
* The data goes to the cluster once: ``ray.put`` of the dataset's tensors, which Ray copies
  to each node's object store the first time a task there needs it.
* Resources: a task asks for the CPU threads a local run would use (and sets torch's thread
  count to it: the thread count changes trained numbers), or ``num_gpus`` (a fraction with
  ``--ray-gpus-per-model``) on a CUDA cluster.
* Faults: a task whose worker dies, or that raises, is retried once; then the run fails with
  the node and the error. Ctrl-C cancels every submitted task.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from . import Origin, origin_path


# Kinds measured as Ray tasks (the others are cheap, or depend on several models at once).
def kinds_for(families: set[str]) -> tuple[str, ...]:
    """The remote kinds (``kinds.Kind.remote``) that tests of these families (pytest markers)
    need, and those every report shows (the failure taxonomy)."""
    from .. import kinds

    needed = {k.name for k in kinds.KINDS.values() if k.in_every_report} | kinds.needed_by(families)
    return tuple(k for k in kinds.remote() if k in needed)


class RayUnavailable(ValueError):
    pass


def connect(address: str | None):
    """Join the cluster at ``address`` (None: start or join a local instance); an address
    that answers nothing is a usage error naming it."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("--executor ray needs Ray: pip install -e '.[ray]'") from exc
    if ray.is_initialized():
        return ray
    kwargs = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        _probe(address)  # ray.init waits minutes on an address where nothing listens
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, a timeout, a bad address: all say the same
        raise RayUnavailable(f"--ray-address {address}: no Ray cluster answers there ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); start one with `ray start --head` "
                             "or give the head's address (host:6379)") from exc
    return ray


def _probe(address: str, timeout: float = 5.0) -> None:
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailable(f"--ray-address {address}: give the head's host:port (e.g. 10.0.0.5:6379), 'auto' for "
                             "the cluster this machine belongs to, or ray://host:10001")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailable(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                             "one with `ray start --head` or give the head's address (host:6379)") from exc


# ============================================================================ the tasks (run on workers)


def _worker_progress(queue, label: str):
    from ..progress import Lines

    node = _node()

    def write(text: str) -> None:
        if queue is not None:
            queue.put(f"{text} [{node}]")

    return Lines(write)


def _node() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def train_task(recipe, data, profile: str, device: str, threads: int, runtime, queue=None) -> dict:
    """Train ``recipe`` on a worker; returns the cache entry's bytes and where it was made."""
    import torch

    from .. import train

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnn-stress-ray-") as tmp:
        res = train.train(recipe, data, profile, device, tmp, runtime=runtime,
                          progress=_worker_progress(queue, recipe.key))
        entry = Path(res.cache_path)
        blob = entry.read_bytes()
    return {"name": entry.name, "key": res.cache_key, "bytes": blob,
            "origin": Origin("ray", _node(), os.getpid(), torch.get_num_threads(), time.perf_counter() - t0).__dict__}


def measure_task(kind: str, name: str, recipe, entry_name: str, entry: bytes, data, profile: str, device: str,
                 threads: int, runtime, settings, named: list[int], queue=None) -> dict:
    """Measure one kind of evidence of one model on a worker; returns it as arrays."""
    import torch

    from .. import train
    from ..evidence import pack
    from ..measure import ModelEvaluation

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnn-stress-ray-") as tmp:
        (Path(tmp) / entry_name).write_bytes(entry)
        res = train.train(recipe, data, profile, device, tmp, runtime=runtime, progress=_worker_progress(None, ""))
    ev = ModelEvaluation(name, res, data, torch.device(device), settings, named=lambda: list(named))
    ev.progress = _worker_progress(queue, name)
    from .. import kinds

    value = kinds.get(kind).measure(ev)
    arrays, spec = pack(value)
    if queue is not None:
        queue.put(f"[{name}] {kind} measured in {time.perf_counter() - t0:.1f}s [{_node()}]")
    return {"arrays": arrays, "spec": spec, "meta": dict(ev.attention_maps), "origin": _node()}


# ============================================================================ the driver


class RayExecutor:
    def __init__(self, address: str | None = None, gpus_per_model: float | None = None, progress=None):
        self.address = address
        self.gpus_per_model = gpus_per_model
        self.ray = connect(address)
        self.progress = progress
        self.submitted: list = []

    def _resources(self, device_type: str, threads: int) -> dict:
        if device_type == "cuda":
            return {"num_gpus": self.gpus_per_model or 1, "num_cpus": 1}
        return {"num_cpus": threads}

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.message(text)

    def _relay(self, queue, stop: threading.Event) -> threading.Thread:
        def loop():
            while not stop.is_set():
                try:
                    for line in queue.get_nowait_batch(max(queue.qsize(), 0)) if queue.qsize() else []:
                        self._say(line)
                except Exception:  # noqa: BLE001 - progress never breaks the run
                    pass
                stop.wait(0.5)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t

    def prepare(self, session, kinds=None) -> dict:
        """Train every model the cache lacks, then measure every slow kind the evidence cache
        lacks, as Ray tasks; returns what was done (for the report and the tests)."""
        from ray.util.queue import Queue

        from .. import kinds as kinds_mod

        kinds = kinds_mod.remote() if kinds is None else kinds
        from .. import cache, train
        from ..cache import load_entry
        from ..evidence import unpack

        ray = self.ray
        plan, run = session.plan, session.run
        data = plan.data
        o = plan.options
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or __import__("torch").get_num_threads()
        cache_dir = o.cache_dir or cache.default_cache_dir()
        device = plan.device.type
        queue = Queue()
        stop = threading.Event()
        relay = self._relay(queue, stop)
        done = {"trained": [], "measured": []}
        data_ref = ray.put(data)
        train_remote = ray.remote(max_retries=1, retry_exceptions=True)(train_task)
        measure_remote = ray.remote(max_retries=1, retry_exceptions=True)(measure_task)
        try:
            pending = {}
            for m, recipe in plan.recipes.items():
                if m in plan.providers:
                    continue
                key = train.cache_key(recipe, o.profile, data.fingerprint, plan.device, plan.runtime)
                path = train.cache_path(recipe, o.profile, data, plan.device, plan.runtime, cache_dir)
                if not path.exists():
                    ref = train_remote.options(**self._resources(device, threads)).remote(
                        recipe, data_ref, o.profile, device, threads, plan.runtime, queue)
                    pending[ref] = (m, recipe, key, path)
                    self._say(f"[{m}] training submitted to Ray")
            self.submitted = list(pending)
            for ref, (m, recipe, key, path) in pending.items():
                out = self._get(ref, f"training {m}")
                expected = {"recipe": train.training_recipe(recipe).to_dict(), "profile": o.profile,
                            "data_fingerprint": data.fingerprint}
                with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as f:
                    f.write(out["bytes"])
                try:
                    load_entry(Path(f.name), key, expected)  # what came back is checked before it is kept
                    os.replace(f.name, path)
                finally:
                    Path(f.name).unlink(missing_ok=True)
                from ..io import atomic_write_text

                atomic_write_text(origin_path(path), __import__("json").dumps(out["origin"]))
                done["trained"].append({"model": m, **out["origin"]})
                self._say(f"[{m}] trained on {out['origin']['node']} in {out['origin']['seconds']:.1f}s")
            # measurements: what the evidence cache lacks, for every model
            evcache = run.evidence_cache
            pending = {}
            for m in plan.models:
                if m in plan.providers:
                    continue
                ev = run.evaluation(m)  # loads the model from the cache: no measuring
                entry = ev.result.cache_path
                blob = Path(entry).read_bytes()
                for kind in kinds:
                    stays = kinds_mod.get(kind).driver_only  # e.g. one's own OOD set: files on the driver
                    if (stays is not None and stays(plan.settings)) or evcache is None:
                        continue
                    ev_key = ev.evidence_key(kind)
                    if evcache.read(ev_key) is not None:
                        continue
                    ref = measure_remote.options(**self._resources(device, threads)).remote(
                        kind, m, plan.recipes[m], Path(entry).name, blob, data_ref, o.profile, device, threads,
                        plan.runtime, plan.settings, plan.named_positions(), queue)
                    pending[ref] = (m, kind, ev_key)
            self.submitted = list(pending)
            for ref, (m, kind, ev_key) in pending.items():
                out = self._get(ref, f"measuring {kind} of {m}")
                evcache.write(ev_key, unpack(out["arrays"], out["spec"]), out["meta"])
                done["measured"].append({"model": m, "kind": kind, "node": out["origin"]})
            return done
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            stop.set()
            relay.join(timeout=2)

    def _get(self, ref, what: str):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if hasattr(exc, "cause") else exc
            raise RuntimeError(f"Ray: {what} failed twice (retried once) on {getattr(exc, 'ip', '?')} "
                               f"(pid {getattr(exc, 'pid', '?')}): {type(cause).__name__}: {cause}") from exc
        except ray.exceptions.WorkerCrashedError as exc:
            raise RuntimeError(f"Ray: the worker {what} died twice (retried once): {exc}") from exc

    def cancel(self) -> None:
        for ref in self.submitted:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
