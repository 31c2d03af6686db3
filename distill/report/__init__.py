"""The run report: `report.html` built only from a run directory's files (see `data.py`)."""

from distill.report.data import REPORT_NAME, load_run, write_report

__all__ = ["REPORT_NAME", "load_run", "write_report"]
