"""The ``tunesmith`` command line, built from the functions' signatures and docstrings, one module per command group.

Human-facing progress goes to stderr; ``--json`` prints one JSON document on stdout.
Exit codes: 0 success, 2 bad input or config, 1 internal error, 3 ``monitor`` alerted.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from tunesmith import __version__
from tunesmith.cli import data, human_eval, loop, project, runs, serve, ui  # noqa: F401  (each registers its commands on the app)
from tunesmith.cli.common import app

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        print(f"tunesmith {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False) -> None:
    """tunesmith: fine-tune a small model that measurably beats the generic one on your task."""


def main() -> None:
    """Entry point of the ``tunesmith`` command."""
    # Deprecation notices from the libraries would bury tunesmith's own progress.
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()
