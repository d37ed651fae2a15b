"""Run reports: the run record -> results.json, summary.md, figures, index.html.

Split by concern: ``io`` (run folders, predictions; atomic files: ``harness.io``), ``tables`` (every table,
from the record alone), ``plan`` (which figures, where), ``figures`` (matplotlib),
``markdown`` (summary.md), ``html`` (index.html), ``render`` (write and rebuild a run),
``diff`` (what changed between two runs).
"""

from .diff import compare_runs
from .io import INDEX, RESULTS, SUMMARY, ReportError, load_results
from .render import rebuild, render_all, write_run

__all__ = [
    "INDEX", "RESULTS", "SUMMARY", "ReportError", "compare_runs", "load_results", "rebuild", "render_all", "write_run",
]
