"""``tunesmith ui``: the web UI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tunesmith.cli.common import JsonOpt, app, handle_errors, lazy
from tunesmith.console import console


@app.command()
@handle_errors
def ui(
    project: Annotated[Path, typer.Option("--project", help="The project folder (with tunesmith.yaml).")] = Path("."),
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free port, printed at start).")] = 8080,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="The key people sign in with (default: $TUNESMITH_API_KEY).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="No sign-in (loopback addresses only).")] = False,
    serve_url: Annotated[Optional[str], typer.Option("--serve", help="A running tunesmith serve's /v1 URL, for the playground.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Open the project in a browser: runs and their reports (live while training), start a run, review data,
    chat with served adapters, monitoring, promote and roll back. Offline: every asset ships in the package."""
    server = lazy("tunesmith.serve.server")
    key = server.check_auth(host, api_key or os.environ.get("TUNESMITH_API_KEY") or None, no_auth)
    web = lazy("tunesmith.web.app")
    state = web.UiState(project.resolve(), key, serve_url.rstrip("/") if serve_url else None,
                        os.environ.get("TUNESMITH_API_KEY") or key)
    sock = server.bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}/"
    if as_json:
        sys.stdout.write(json.dumps({"url": url, "project": str(state.project_dir), "auth": key is not None}) + "\n")
        sys.stdout.flush()
    else:
        console.print(f"tunesmith ui for {state.project_dir} at [bold]{url}[/]"
                      + ("" if key else " (no sign-in: loopback only)"), highlight=False)
    import uvicorn

    uvicorn.Server(uvicorn.Config(web.create_ui(state), log_level="warning", access_log=False)).run(sockets=[sock])
