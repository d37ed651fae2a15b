"""Open a run's index.html in headless Chromium and check that every figure loaded.

    python scripts/check_report_browser.py reports/latest/index.html

The page's inline script writes ``data-figures-loaded="<loaded>/<total>"`` on <body> at
window load; this dumps the DOM after load (``--dump-dom``) and reads it back. Exit status
0 when every image loaded, 1 when some did not, 2 when no browser or no attribute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=5000")


def find_chromium() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if Path(c).is_file():
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: str | Path, chromium: str | None = None, timeout: float = 90.0) -> str:
    """The DOM of ``page`` after load, serialised by headless Chromium."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError("no Chromium found (looked for " + ", ".join(CHROMIUM_CANDIDATES) + ")")
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        proc = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": profile},
        )
    if proc.returncode != 0 or "<html" not in proc.stdout.lower():
        raise RuntimeError(f"chromium exited {proc.returncode}; stderr tail: {proc.stderr[-2000:]}")
    return proc.stdout


def figures_loaded(dom: str) -> tuple[int, int] | None:
    """(loaded, total) from <body data-figures-loaded="k/n">, or None when absent."""
    m = re.search(r'<body[^>]*\bdata-figures-loaded="(\d+)/(\d+)"', dom)
    return (int(m.group(1)), int(m.group(2))) if m else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", help="a run's index.html (or its run directory)")
    args = p.parse_args(argv)
    page = Path(args.page)
    if page.is_dir():
        page = page / "index.html"
    if not page.is_file():
        print(f"error: no such page: {page}", file=sys.stderr)
        return 2
    try:
        dom = dump_dom(page)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = figures_loaded(dom)
    if counts is None:
        print("error: the page did not report data-figures-loaded (load script missing or did not run)", file=sys.stderr)
        return 2
    loaded, total = counts
    print(f"{loaded}/{total} figures loaded")
    return 0 if loaded == total else 1


if __name__ == "__main__":
    sys.exit(main())
