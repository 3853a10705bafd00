"""The loop after deployment: ``promote``, ``rollback``, ``aliases``, ``monitor`` and ``retrain``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tunesmith.cli.common import JsonOpt, RunsDirOpt, app, emit, handle_errors, lazy, runs_dir_of
from tunesmith.console import console, out_console
from tunesmith.runs.aliases import alias_history, aliases_of, promote as promote_run, rollback as rollback_alias
from tunesmith.runs.store import find_known_run

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file (default: ./tunesmith.yaml if any).")]
ReasonOpt = Annotated[Optional[str], typer.Option("--reason", help="Why, kept in the alias history.")]
ByOpt = Annotated[Optional[str], typer.Option("--by", help="Who (default: the OS user).")]


@app.command()
@handle_errors
def promote(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, run folder or alias (e.g. candidate).")],
    alias: Annotated[str, typer.Option("--as", help="The alias it gets: production, candidate or any name.")] = "production",
    reason: ReasonOpt = None,
    by: ByOpt = None,
    runs_dir: RunsDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give an alias (default production) to a finished run; `tunesmith serve --run production` follows it."""
    folder = runs_dir_of(runs_dir, config)
    move = promote_run(folder, find_known_run(run_ref, folder), alias, by=by, reason=reason)
    if as_json:
        emit(asdict(move))
        return
    before = f" (was {move.previous})" if move.previous else ""
    console.print(f"{alias} -> [bold]{move.run_id}[/]{before}", highlight=False)


@app.command()
@handle_errors
def rollback(
    alias: Annotated[str, typer.Option("--alias", help="The alias to move back.")] = "production",
    reason: ReasonOpt = None,
    by: ByOpt = None,
    runs_dir: RunsDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give an alias back to the run that held it before its latest promotion (repeat to go further back)."""
    move = rollback_alias(runs_dir_of(runs_dir, config), alias, by=by, reason=reason)
    if as_json:
        emit(asdict(move))
        return
    console.print(f"{alias} -> [bold]{move.run_id}[/] (rolled back from {move.previous})", highlight=False)


@app.command()
@handle_errors
def aliases(
    history: Annotated[bool, typer.Option("--history", help="Every move, oldest first, with who, when and why.")] = False,
    alias: Annotated[Optional[str], typer.Option("--alias", help="Only this alias's history.")] = None,
    runs_dir: RunsDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the aliases of the run registry (which run is production), or their history."""
    folder = runs_dir_of(runs_dir, config)
    if not history and alias is None:
        current = aliases_of(folder)
        if as_json:
            emit(current)
            return
        if not current:
            console.print("No aliases yet: tunesmith promote RUN --as production")
        for name, run_id in current.items():
            out_console.print(f"{name}\t{run_id}", highlight=False)
        return
    moves = alias_history(folder, alias)
    if as_json:
        emit([asdict(m) for m in moves])
        return
    table = Table(title="Alias moves")
    for col in ("at", "alias", "action", "run", "previous", "by", "reason"):
        table.add_column(col, overflow="fold")
    for m in moves:
        table.add_row(m.at, m.alias, m.action, m.run_id, m.previous or "–", m.by or "–", m.reason or "–")
    out_console.print(table)


# The monitor and retrain commands import the statistics and the recipes lazily (see cli.common.lazy).
__all__ = ["promote", "rollback", "aliases", "lazy"]
