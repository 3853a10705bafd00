"""Console output and progress bars shared by every long step."""

from __future__ import annotations

import resource
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Human-facing messages go to stderr so that ``--json`` output on stdout stays machine-readable.
console = Console(stderr=True, highlight=False)
#: Results (tables) go to stdout; when piped, wide enough that run ids and labels are not cut.
# Piped output is read by programs and people with wide screens: never cropped to a guessed width.
out_console = Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)


def make_progress(transient: bool = False) -> Progress:
    """A progress bar with count, elapsed and remaining time, and a free-text field for live figures."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / (1024 * 1024)
