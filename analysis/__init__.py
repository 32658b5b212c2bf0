"""Analysis of raystudy runs: read the Parquet result tables, draw the paper's figures, write a report."""

from analysis import figures
from analysis.report import build_report
from analysis.results import Results, load_results

__all__ = ["Results", "load_results", "build_report", "figures"]
