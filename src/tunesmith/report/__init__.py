"""Reports: the run's JSON summary, markdown page and plots."""

from tunesmith.report.build import build_report, compare_metrics, verdict_for
from tunesmith.report.markdown import render_markdown
from tunesmith.report.plots import plot_loss

__all__ = ["build_report", "compare_metrics", "plot_loss", "render_markdown", "verdict_for"]
