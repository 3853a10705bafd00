"""``tunesmith serve`` and the request log's commands (``tunesmith logs ...``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tunesmith.config import resolve_path
from tunesmith.console import console
from tunesmith.cli.common import JsonOpt, app, emit, handle_errors, lazy, project_config, runs_dir_of
from tunesmith.errors import UserError


def _pairs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"{item!r}: give NAME=PATH", param_hint="--adapter")
        out[name] = path
    return out


@app.command()
@handle_errors
def serve(
    run_refs: Annotated[Optional[list[str]], typer.Option("--run", help="A run whose adapter is served under its run id (repeatable; default: serve.runs).")] = None,
    adapters: Annotated[Optional[list[str]], typer.Option("--adapter", help="NAME=PATH: an adapter folder served as NAME (repeatable).")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="The base model (default: the runs', else model.base).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to bind (default: serve.host, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default: serve.port, 8000; 0: any free port).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="The key clients must send (default: $TUNESMITH_API_KEY).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without a key (loopback addresses only).")] = False,
    shadow: Annotated[Optional[str], typer.Option("--shadow", help="A run or alias (e.g. candidate) that also answers every request to the first --run, unseen by clients; the log keeps both answers.")] = None,
    canary: Annotated[Optional[str], typer.Option("--canary", help="NAME:SHARE, e.g. candidate:0.1: that share of the first --run's requests is answered by NAME instead.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file (default: ./tunesmith.yaml if any).")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option("--runs-dir", help="Folder of runs (default: from the project file, else ./runs).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the base model and runs' adapters behind an OpenAI-compatible API (/v1/chat/completions, ...).

    Every adapter shares one base model and one running batch; each run's adapter answers with the
    system prompt, label list and chat template it was trained with. Requests and answers go to the
    request log (serve.log), PII scrubbed; POST /v1/feedback rates an answer. Stop with Ctrl-C or
    SIGTERM: requests in flight are finished first.
    """
    cfg, project_dir = project_config(config)
    cfg.project.runs_dir = runs_dir_of(runs_dir, config) if runs_dir or config else resolve_path(project_dir, cfg.project.runs_dir)
    server = lazy("tunesmith.serve.server")
    opts = server.ServeOptions(runs=list(run_refs or cfg.serve.runs), adapters={**cfg.serve.adapters, **_pairs(adapters)},
                               base=base, host=host or cfg.serve.host, port=cfg.serve.port if port is None else port,
                               api_key=api_key, no_auth=no_auth, project_dir=project_dir, shadow=shadow,
                               canary=canary)
    if canary is not None:
        try:
            server.parse_canary(canary)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--canary") from None
    server.check_auth(opts.host, opts.api_key or os.environ.get(cfg.serve.api_key_env), opts.no_auth)
    sock = server.bind(opts.host, opts.port)
    state = server.build_state(cfg, opts, status=lambda msg: console.print(msg, highlight=False))

    def announce(info: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
            return
        console.print(f"Serving {', '.join(info['models'])} at [bold]{info['url']}[/]"
                      + ("" if info["auth"] else " (no API key: loopback only)")
                      + (f"; request log {info['log']}" if info["log"] else "; request log off"), highlight=False)

    server.run_server(state, sock, announce)


logs_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The request log of tunesmith serve: what was asked, and what users thought.")
app.add_typer(logs_app, name="logs")


@logs_app.command("export")
@handle_errors
def logs_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write (chat messages rows).")],
    since: Annotated[Optional[str], typer.Option("--since", help="Only requests from this date or time on (ISO, e.g. 2026-12-01).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only requests to this served model.")] = None,
    only_feedback: Annotated[bool, typer.Option("--only-feedback", help="Only requests that got feedback.")] = False,
    log: Annotated[Optional[Path], typer.Option("--log", help="The log file (default: the project's serve.log.path).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file (default: ./tunesmith.yaml if any).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write logged requests with their answers (corrections replacing them) as chat `messages` rows.

    Each row is marked needs_review: true with its provenance (ratings, comments), so production
    traffic goes through `tunesmith data review` before it trains the next model.
    """
    cfg, project_dir = project_config(config)
    path = log or (cfg.serve.log.path if cfg.serve.log.path.is_absolute() else project_dir / cfg.serve.log.path)
    if not path.is_file():
        raise UserError(f"no request log at {path} (tunesmith serve writes it; serve.log.path, or --log FILE)")
    result = lazy("tunesmith.monitor.requestlog").export_log(path, out, since, model, only_feedback)
    if as_json:
        emit(result.__dict__)
        return
    console.print(f"{result.rows} requests -> {result.out} ({result.with_feedback} with feedback, {result.corrected} "
                  "corrected), each needs_review: true; next: tunesmith data review export", highlight=False)
