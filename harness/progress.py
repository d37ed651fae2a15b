"""What a person sees while a model trains: a live bar on a terminal, a line per epoch in a
log, a line per model when asked to be quiet.

The training loop calls a ``Progress`` object; which one is a matter of where the output
goes (``for_output``). Inside pytest the plugin writes through pytest's terminal writer, so
the progress is visible while tests run (pytest would otherwise capture it).

* ``Bar``: tqdm over every step of the run, with epoch, loss, accuracy, images per second
  and time left; one line per finished epoch printed above it.
* ``Lines``: one plain line per epoch (CI logs, files), plus start and end lines.
* ``Quiet``: the end line of each training only (``-q``); ``Silent``: nothing (``-qq``).

Measurements (the robustness battery, attacks, attention, the failure taxonomy of each model)
report through ``task``: a bar with units done and time left on a terminal, a start and an
end line in a log, nothing with ``-q``.

Reading the running loss forces the device to finish its queued work, so the bar refreshes
at most every ``REFRESH`` seconds and asks for the numbers only then.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

REFRESH = 0.5  # seconds between live updates


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def epoch_line(label: str, row: dict, epochs: int, best: bool, eta: float | None) -> str:
    return (f"{label} epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.2%}"
            f"  val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}  {row['images_per_second']:.0f} img/s"
            f"  {row['seconds']:.1f}s" + (f"  left {_eta(eta)}" if eta is not None and eta > 0 else "")
            + ("  *" if best else ""))


class Step:
    """One measurement in progress (``Progress.task``): ``advance(n)`` as it goes, ``done(text)``."""

    def advance(self, n: int = 1) -> None:
        pass

    def done(self, text: str) -> None:
        pass


class _LineStep(Step):
    def __init__(self, write):
        self.write = write

    def done(self, text: str) -> None:
        self.write(text)


class _BarStep(_LineStep):
    def __init__(self, write, bar):
        super().__init__(write)
        self.bar = bar

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def done(self, text: str) -> None:
        self.bar.close()
        self.write(text)


class Silent:
    """Reports nothing."""

    def task(self, label: str, total: int, unit: str = "step") -> Step:
        """A measurement of ``total`` units starts (the robustness battery of a model, say)."""
        return Step()

    def start(self, label: str, epochs: int, steps_per_epoch: int, images: int, note: str = "") -> None:
        self.label, self.epochs, self.steps_per_epoch = label, epochs, steps_per_epoch

    def update(self, epoch: int, step: int, images_seen: int, elapsed: float,
               stats: Callable[[], tuple[float, float]]) -> None:
        pass

    def epoch(self, row: dict, best: bool, eta: float | None) -> None:
        pass

    def finish(self, text: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class Quiet(Silent):
    """The end of each training and one-off messages only."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write

    def finish(self, text: str) -> None:
        self.write(text)

    def message(self, text: str) -> None:
        self.write(text)


class Lines(Quiet):
    """A line when training starts, one per epoch, one at the end; a line when a measurement
    starts and one when it ends."""

    def task(self, label: str, total: int, unit: str = "step") -> Step:
        self.write(f"{label}: {total} {unit}s")
        return _LineStep(self.write)

    def start(self, label: str, epochs: int, steps_per_epoch: int, images: int, note: str = "") -> None:
        super().start(label, epochs, steps_per_epoch, images, note)
        self.write(f"{label} training: {epochs} epochs x {steps_per_epoch} steps, {images} images{note}")

    def epoch(self, row: dict, best: bool, eta: float | None) -> None:
        self.write(epoch_line(self.label, row, self.epochs, best, eta))


class Bar(Lines):
    """A live tqdm bar on a terminal (``file``: anything with write and flush)."""

    def __init__(self, write: Callable[[str], None], file=None):
        super().__init__(write)
        self.file = file or sys.stderr
        self.bar = None
        self._last = 0.0

    def task(self, label: str, total: int, unit: str = "step") -> Step:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=label, file=self.file, leave=False, dynamic_ncols=True, unit=unit,
                   mininterval=REFRESH, bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                   "{unit}s [{elapsed}<{remaining}]")
        return _BarStep(self.write, bar)

    def start(self, label: str, epochs: int, steps_per_epoch: int, images: int, note: str = "") -> None:
        from tqdm import tqdm

        Lines.start(self, label, epochs, steps_per_epoch, images, note)  # a line first: the bar starts on its own
        self.bar = tqdm(total=epochs * steps_per_epoch, desc=label, file=self.file, leave=False, dynamic_ncols=True,
                        unit="step", mininterval=REFRESH, bar_format="{desc} {percentage:3.0f}%|{bar}| "
                        "{n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]")
        self._last = 0.0

    def update(self, epoch: int, step: int, images_seen: int, elapsed: float,
               stats: Callable[[], tuple[float, float]]) -> None:
        if self.bar is None:
            return
        self.bar.n = (epoch - 1) * self.steps_per_epoch + step
        now = time.perf_counter()
        if now - self._last >= REFRESH:
            self._last = now
            loss, acc = stats()
            self.bar.set_postfix_str(f"epoch {epoch}/{self.epochs} loss {loss:.3f} acc {acc:.1%} "
                                     f"{images_seen / max(elapsed, 1e-9):.0f} img/s", refresh=False)
            self.bar.refresh()

    def epoch(self, row: dict, best: bool, eta: float | None) -> None:
        line = epoch_line(self.label, row, self.epochs, best, eta)
        if self.bar is not None:
            self.bar.clear()
            self.write(line)
            self.bar.refresh()
        else:
            self.write(line)

    def finish(self, text: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.write(text)


def for_output(write: Callable[[str], None], interactive: bool, verbosity: int = 0, file=None):
    """The progress for an output: a live bar on a terminal, lines elsewhere; ``verbosity``
    -1 (``-q``) keeps only the end lines, -2 (``-qq``) nothing."""
    if verbosity <= -2:
        return Silent()
    if verbosity == -1:
        return Quiet(write)
    return Bar(write, file) if interactive else Lines(write)


def stderr() -> Silent:
    """Progress on this process's stderr (the command line)."""

    def write(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    return for_output(write, sys.stderr.isatty())
