"""The loop after deployment: ``promote``, ``rollback``, ``aliases``, ``monitor`` and ``retrain``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from tunesmith.cli.common import JsonOpt, RunsDirOpt, app, emit, handle_errors, lazy, project_config, runs_dir_of
from tunesmith.config import load_config, resolve_path
from tunesmith.console import console, out_console
from tunesmith.errors import EXIT_ALERT, UserError
from tunesmith.runs.aliases import alias_history, alias_holder, aliases_of, promote as promote_run, rollback as rollback_alias
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


def _project(config: Path | None) -> tuple[Any, Path]:
    cfg, project_dir = project_config(config)
    cfg.project.runs_dir = resolve_path(project_dir, cfg.project.runs_dir)
    return cfg, project_dir


@app.command()
@handle_errors
def monitor(
    run_ref: Annotated[Optional[str], typer.Option("--run", help="Run or alias monitored (default: monitor.run, production).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Only requests from this date or time on (ISO, e.g. 2026-12-01).")] = None,
    window: Annotated[Optional[str], typer.Option("--window", help="Time-series window: 30m, 6h, 1d, 1w (default: monitor.window).")] = None,
    log: Annotated[Optional[Path], typer.Option("--log", help="The request log (default: the project's serve.log.path).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default: monitor.out).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare live traffic in the request log with the served run's own training data; alerts exit with code 3.

    Input drift (prompt length, a classifier telling live from training inputs, near-duplicates, PII),
    output drift (labels, answers outside them, or answer length and refusals), the label-free accuracy
    estimate and feedback, each against its threshold in the project file (monitor.thresholds). Writes
    report.md, report.html (with the time series) and report.json; POSTs alerts to monitor.webhook.
    """
    cfg, project_dir = _project(config)
    if window is not None:
        cfg.monitor.window = window
    ref = run_ref or cfg.monitor.run
    folder = cfg.project.runs_dir
    try:
        run = find_known_run(ref, folder)
    except UserError as exc:
        raise UserError(f"{exc}. The monitor compares traffic with the training data of the run that holds "
                        f"'{ref}': `tunesmith promote RUN --as {ref}`, or --run RUN") from None
    alias = ref if alias_holder(folder, ref) == run.id else None
    path = log or (cfg.serve.log.path if cfg.serve.log.path.is_absolute() else project_dir / cfg.serve.log.path)
    requestlog, signals, report = (lazy(f"tunesmith.monitor.{m}") for m in ("requestlog", "signals", "report"))
    rows = requestlog.read_log(path, since)
    result = signals.monitor_traffic(run, rows, cfg.monitor, cfg.data.dedup, alias=alias, log=str(path), since=since,
                                     seed=cfg.project.seed)
    target = out or (cfg.monitor.out if cfg.monitor.out.is_absolute() else project_dir / cfg.monitor.out)
    result.webhook = report.post_webhook(result, cfg.monitor, target / "report.html")
    paths = report.write_monitor_report(result, target)
    if as_json:
        emit({**result.model_dump(mode="json"), "files": {k: str(v) for k, v in paths.items()}})
    else:
        who = f"{alias} ({run.id})" if alias else run.id
        console.print(f"{result.requests} requests to {who}; "
                      + (f"[bold red]{len(result.alerts)} alert(s)[/]" if result.alerts else "[green]no alerts[/]"))
        for line in result.alerts:
            console.print(f"  ALERT {line}", highlight=False, markup=False)
        for s in result.signals:
            if s.status != "alert":
                console.print(f"  {s.status:<18} {s.title}: {s.message}", highlight=False, markup=False)
        if result.webhook:
            console.print(f"Webhook: {result.webhook}", highlight=False)
        print(f"Report: {paths['html']} (also {paths['markdown']}, {paths['json']})")
    if result.alerts:
        raise typer.Exit(EXIT_ALERT)


@app.command()
@handle_errors
def retrain(
    config: Annotated[Path, typer.Option("--config", "-c", help="The project file.")] = Path("tunesmith.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build the data version and print the plan and its cost; train nothing.")] = False,
    by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrain on reviewed traffic; the candidate replaces production only if the gate's statistics say so.

    The next data version is production's training data plus the reviewed rows of retrain.new_data
    (a share held out as a fresh test set), checked by the data step (duplicates, leakage into both
    test sets). The candidate trains, then candidate and production are compared on the same examples
    of production's frozen test split and of the fresh test set (paired intervals and tests), and
    retrain.gate decides. The candidate always gets the alias candidate; production only if it passes.
    """
    cfg, project_dir = load_config(config)
    outcome = lazy("tunesmith.recipes.retrain").retrain(cfg, project_dir, dry_run=dry_run, by=by)
    plan = outcome.plan
    if dry_run:
        planner = lazy("tunesmith.plan.estimate")
        if as_json:
            emit({"production": plan.production.id, "data_version": plan.version.version, "folder": str(plan.folder),
                  "changes": plan.version.changes, "estimate": outcome.estimate})
            return
        console.print(f"Production {plan.production.id}; next data version {plan.version.version[:12]} in {plan.folder}",
                      highlight=False)
        console.print_json(data=plan.version.changes)
        for table in planner.plan_tables(outcome.estimate):
            out_console.print(table)
        return
    report = outcome.report
    if as_json:
        emit({**report.model_dump(mode="json"), "report": str(outcome.candidate.retrain_md)})
        return
    for c in report.comparisons:
        console.print(f"  {c.name} test set ({c.count}): production {c.production:.4f} -> candidate {c.candidate:.4f}, "
                      f"difference {c.difference:+.4f}, p = {c.p_value:.3g} (gate: {c.requirement})", highlight=False)
    if report.promoted:
        console.print(f"[green]Promoted[/]: production -> {report.candidate}", highlight=False)
    else:
        console.print(f"[yellow]Not promoted[/]: {report.candidate} is candidate; production stays {report.production}",
                      highlight=False)
        for reason in report.reasons:
            console.print(f"  {reason}", highlight=False, markup=False)
    print(f"Report: {outcome.candidate.retrain_md}")
