"""``tunesmith ui``: one page a person can work in, server-rendered (FastAPI + Jinja2), offline.

Every asset ships in the package (htmx for partial updates, uPlot for the interactive charts: both
vendored in ``static/vendor`` with their licences); nothing is fetched from a CDN. The browser signs
in once with the API key (the same rule as ``tunesmith serve``: loopback by default, a key unless
``--no-auth`` on loopback) and gets an HttpOnly, SameSite=Strict cookie; every form carries a token
derived from the key, so another site cannot post to it. Pages read the project's files through
:mod:`tunesmith.web.views`; what they change, they change through the package's own functions (aliases,
review import), so the CLI and the UI leave the same files. The playground talks to a running
``tunesmith serve`` through this server, which holds the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import httpx
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tunesmith.config import Config, load_config, resolve_path
from tunesmith.errors import UserError
from tunesmith.runs.aliases import promote, rollback
from tunesmith.runs.folder import find_run
from tunesmith.web import views

HERE = Path(__file__).parent
COOKIE = "tunesmith_ui"
#: Where the data page's report goes, in the project folder (as `tunesmith data check -o data-report`).
DATA_REPORT = "data-report"
#: Files of a run folder the run page may show.
RUN_FILES = {"confusion.png", "calibration.png", "loss.png", "report.html", "report.md"}


@dataclass
class UiState:
    """What the pages share.

    Attributes:
        project_dir: The project folder (its ``tunesmith.yaml`` is the project file).
        api_key: The key people sign in with; None with ``--no-auth`` on loopback.
        serve_url: A running ``tunesmith serve``'s ``/v1`` URL for the playground, if any.
        serve_key: The key that server wants.
        jobs: Runs started from the start page: run folder or project file -> the process.
    """

    project_dir: Path
    api_key: str | None
    serve_url: str | None = None
    serve_key: str | None = None
    jobs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def config(self, name: str = "tunesmith.yaml") -> Config:
        path = self.project_dir / name
        cfg, base = load_config(path if path.is_file() else None)
        cfg.project.runs_dir = resolve_path(base, cfg.project.runs_dir).resolve()
        return cfg

    @property
    def runs_dir(self) -> Path:
        return self.config().project.runs_dir

    def token(self, purpose: str) -> str:
        """A value derived from the key: the session cookie (``session``) and the forms' token (``form``)."""
        return hmac.new((self.api_key or "no-auth").encode(), purpose.encode(), hashlib.sha256).hexdigest()


def _form(body: bytes) -> dict[str, str]:
    """An urlencoded form body (htmx and plain forms send this) as a dict of single values."""
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}


def create_ui(state: UiState) -> FastAPI:
    """The UI application over ``state``."""
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = lambda v, d=4: "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    env.filters["short"] = lambda v, n=12: "–" if not v else str(v)[:n]
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, template: str, **ctx: Any) -> HTMLResponse:
        html = env.get_template(template).render(request=request, csrf=state.token("form"), nav=template, **ctx)
        return HTMLResponse(html)

    def signed_in(request: Request) -> bool:
        if state.api_key is None:
            return True
        if hmac.compare_digest(request.cookies.get(COOKIE, ""), state.token("session")):
            return True
        given = request.headers.get("authorization", "")
        return given.lower().startswith("bearer ") and hmac.compare_digest(given[7:].encode(), state.api_key.encode())

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if path.startswith("/static/") or path == "/login" or signed_in(request):
            return await call_next(request)
        if path.startswith("/api/"):
            return JSONResponse({"error": "sign in first"}, status_code=401)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    async def checked_form(request: Request) -> dict[str, str]:
        form = _form(await request.body())
        if not hmac.compare_digest(form.get("csrf", ""), state.token("form")):
            raise UserError("the form's token does not match: reload the page and try again")
        return form

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> HTMLResponse:
        return page(request, "error.html", message=str(exc))

    # ------------------------------------------------------------------ sign in

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/runs") -> HTMLResponse:  # noqa: A002 - the query's name
        return page(request, "login.html", next=next, failed=False)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = _form(await request.body())
        target = form.get("next") or "/runs"
        if not target.startswith("/") or target.startswith("//"):
            target = "/runs"  # only this site's own pages
        if state.api_key is not None and not hmac.compare_digest(form.get("key", "").encode(), state.api_key.encode()):
            return page(request, "login.html", next=target, failed=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, state.token("session"), httponly=True, samesite="strict")
        return response

    @app.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/runs", status_code=303)

    # ------------------------------------------------------------------ runs

    @app.get("/runs", response_class=HTMLResponse)
    async def runs(request: Request, status: str = "", task: str = "", q: str = "", sort: str = "created",
                   order: str = "desc") -> HTMLResponse:
        rows = views.runs_table(state.runs_dir, status=status, task=task, text=q, sort=sort,
                                descending=order != "asc")
        ctx = {"rows": rows, "status": status, "task": task, "q": q, "sort": sort, "order": order,
               "columns": views.RUN_COLUMNS}
        if request.headers.get("hx-request"):
            return page(request, "_runs_table.html", **ctx)
        return page(request, "runs.html", **ctx)

    @app.get("/compare", response_class=HTMLResponse)
    async def compare(request: Request, run: Annotated[list[str] | None, Query()] = None) -> HTMLResponse:
        ids = [r for r in (run or []) if r]
        if not ids:
            raise UserError("choose runs to compare: tick them in the runs table")
        rows = [views.run_page(state.runs_dir, r) for r in ids]
        return page(request, "compare.html", runs=rows)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    async def run_view(request: Request, run_id: str) -> HTMLResponse:
        return page(request, "run.html", run=views.run_page(state.runs_dir, run_id), job=run_id in state.jobs)

    @app.get("/runs/{run_id}/progress", response_class=HTMLResponse)
    async def progress(request: Request, run_id: str, live: int = 0) -> HTMLResponse:
        run = find_run(run_id, state.runs_dir)
        return page(request, "_progress.html", run={"id": run.id, "status": views.run_status(run)},
                    job=run.id in state.jobs, live=bool(live))

    @app.get("/api/runs/{run_id}/metrics")
    async def metrics(run_id: str) -> JSONResponse:
        run = find_run(run_id, state.runs_dir)
        return JSONResponse({**views.loss_history(run), "status": views.run_status(run)["status"]})

    @app.get("/runs/{run_id}/files/{name}")
    async def run_file(run_id: str, name: str) -> Response:
        if name not in RUN_FILES:
            return JSONResponse({"error": f"{name} is not a file the UI shows"}, status_code=404)
        path = find_run(run_id, state.runs_dir).root / name
        return FileResponse(path) if path.is_file() else JSONResponse({"error": "not written yet"}, status_code=404)

    # ------------------------------------------------------------------ start a run

    @app.get("/start", response_class=HTMLResponse)
    async def start_page(request: Request, project: str = "tunesmith.yaml") -> HTMLResponse:
        files = sorted(p.name for p in state.project_dir.glob("*.yaml"))
        chosen = project if project in files else (files[0] if files else "")
        settings = views.project_settings(state.project_dir / chosen) if chosen else {}
        return page(request, "start.html", files=files, chosen=chosen, settings=settings, plan=None)

    def overrides(form: dict[str, str]) -> list[str]:
        out = [f"adapter.method={form['method']}"] if form.get("method") else []
        for key, name in (("adapter.r", "r"), ("train.epochs", "epochs"), ("train.lr", "lr")):
            if form.get(name):
                out.append(f"{key}={form[name]}")
        return out

    def project_file(form: dict[str, str]) -> Path:
        name = Path(form.get("project") or "tunesmith.yaml").name  # only files of the project folder
        path = state.project_dir / name
        if not path.is_file():
            raise UserError(f"no project file {name} in {state.project_dir}")
        return path

    @app.post("/start/plan", response_class=HTMLResponse)
    async def plan(request: Request) -> HTMLResponse:
        from tunesmith.plan.estimate import plan_training

        form = await checked_form(request)
        cfg, base = load_config(project_file(form), overrides(form))
        result = await asyncio.to_thread(plan_training, cfg, base, measure=False)
        return page(request, "_plan.html", plan=result)

    @app.post("/start")
    async def start(request: Request) -> Response:
        form = await checked_form(request)
        path = project_file(form)
        cfg, base = load_config(path, overrides(form))  # a bad value fails here, naming the key, before anything starts
        args = [sys.executable, "-m", "tunesmith", "run", "-c", str(path)]
        for item in overrides(form):
            args += ["--set", item]
        runs_dir = resolve_path(base, cfg.project.runs_dir)
        before = {p.name for p in runs_dir.iterdir()} if runs_dir.is_dir() else set()
        log = state.project_dir / "logs" / "ui-runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{path.stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:  # the run's own progress, for a look when something goes wrong
            proc = subprocess.Popen(args, cwd=state.project_dir, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        for _ in range(600):  # the run folder appears once the data is found and the model resolved
            if runs_dir.is_dir() and (new := {p.name for p in runs_dir.iterdir() if (p / "config.yaml").is_file()}
                                      - before):
                run_id = sorted(new)[-1]
                state.jobs[run_id] = proc
                return RedirectResponse(f"/runs/{run_id}", status_code=303)
            if proc.poll() is not None:
                raise UserError(f"the run stopped before it started (exit code {proc.returncode}): see {log}")
            await asyncio.sleep(0.2)
        raise UserError("the run did not start within two minutes")

    @app.post("/runs/{run_id}/cancel")
    async def cancel(request: Request, run_id: str) -> RedirectResponse:
        await checked_form(request)
        proc = state.jobs.get(run_id)
        if proc is not None and proc.poll() is None:
            # SIGINT: the run stops as after Ctrl-C, records itself as failed and keeps its checkpoints
            # (tunesmith run --resume continues it).
            os.killpg(proc.pid, signal.SIGINT)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    # ------------------------------------------------------------------ monitor and aliases

    @app.get("/monitor", response_class=HTMLResponse)
    async def monitor(request: Request, message: str = "") -> HTMLResponse:
        cfg = state.config()
        m = views.monitor_page(cfg, state.project_dir)
        windows = [w.model_dump(mode="json") for w in m["report"].windows] if m["report"] else []
        return page(request, "monitor.html", m=m, message=message, windows_json=json.dumps(windows))

    @app.get("/monitor/timeline.png")
    async def timeline() -> Response:
        m = views.monitor_page(state.config(), state.project_dir)
        return FileResponse(m["timeline"]) if m["timeline"] else JSONResponse({"error": "no report"}, status_code=404)

    @app.post("/aliases/promote")
    async def promote_alias(request: Request) -> RedirectResponse:
        form = await checked_form(request)
        runs_dir = state.runs_dir
        move = promote(runs_dir, find_run(form.get("run", ""), runs_dir), form.get("alias") or "production",
                       by=form.get("by") or "web ui", reason=form.get("reason") or None)
        return RedirectResponse("/monitor?" + urlencode({"message": f"{move.alias} -> {move.run_id}"}), status_code=303)

    @app.post("/aliases/rollback")
    async def rollback_alias(request: Request) -> RedirectResponse:
        form = await checked_form(request)
        move = rollback(state.runs_dir, form.get("alias") or "production", by=form.get("by") or "web ui",
                        reason=form.get("reason") or None)
        return RedirectResponse("/monitor?" + urlencode({"message": f"{move.alias} -> {move.run_id} (rolled back)"}),
                                status_code=303)

    # ------------------------------------------------------------------ data review

    @app.get("/review", response_class=HTMLResponse)
    async def review(request: Request, file: str = "") -> HTMLResponse:
        cfg = state.config()
        files = [str(p.relative_to(state.project_dir)) for p in views.review_files(state.project_dir, cfg)]
        chosen = file if file in files else (files[0] if files else "")
        queue = views.review_queue(state.project_dir / chosen) if chosen else []
        summary_path = state.project_dir / DATA_REPORT / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        projects = sorted(p.name for p in state.project_dir.glob("*.yaml"))
        return page(request, "review.html", files=files, chosen=chosen, queue=queue, summary=summary,
                    projects=projects)

    @app.post("/data/check")
    async def data_check(request: Request) -> RedirectResponse:
        """``tunesmith data check --no-tokens`` on a project file: its data report, in the project's data-report/."""
        from tunesmith.data.prepare import prepare_splits
        from tunesmith.report.data_report import write_data_report

        form = await checked_form(request)
        cfg, base = load_config(project_file(form))
        splits = await asyncio.to_thread(prepare_splits, cfg, base, False)
        out = state.project_dir / DATA_REPORT
        summary = await asyncio.to_thread(write_data_report, splits, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        return RedirectResponse("/review#data-report", status_code=303)

    @app.get("/data/report.html")
    async def data_report() -> Response:
        path = state.project_dir / DATA_REPORT / "data_report.html"
        return FileResponse(path) if path.is_file() else JSONResponse({"error": "no data report yet"}, status_code=404)

    @app.post("/review/decide", response_class=HTMLResponse)
    async def decide(request: Request) -> HTMLResponse:
        form = await checked_form(request)
        rel = form.pop("file", "")
        path = (state.project_dir / rel).resolve()
        if state.project_dir.resolve() not in path.parents:
            raise UserError(f"{rel} is not a file of the project")
        review_id, decision = int(form.pop("review_id")), form.pop("decision")
        reviewer = form.pop("reviewer", "") or "web ui"
        form.pop("csrf", None)
        edits = {k[len("field."):]: v for k, v in form.items() if k.startswith("field.")}
        counts = views.decide_row(path, review_id, decision, edits, reviewer)
        return page(request, "_decided.html", decision=decision, review_id=review_id, counts=counts)

    # ------------------------------------------------------------------ blind A/B review

    @app.get("/ab", response_class=HTMLResponse)
    async def ab(request: Request, run: str = "", rater: str = "") -> HTMLResponse:
        runs_dir = state.runs_dir
        choices = [r["id"] for r in views.query_runs(runs_dir, status="completed")] if runs_dir.is_dir() else []
        chosen = run or (choices[0] if choices else "")
        ctx = views.ab_state(find_run(chosen, runs_dir), rater) if chosen else {"exported": False}
        return page(request, "ab.html", runs=choices, chosen=chosen, rater=rater, **ctx)

    @app.post("/ab/export")
    async def ab_export(request: Request) -> RedirectResponse:
        from tunesmith.ops.human_eval import export_human_review

        form = await checked_form(request)
        run = find_run(form.get("run", ""), state.runs_dir)
        export_human_review(run, state.config().project.seed)
        return RedirectResponse("/ab?" + urlencode({"run": run.id, "rater": form.get("rater", "")}), status_code=303)

    @app.post("/ab/rate")
    async def ab_rate(request: Request) -> RedirectResponse:
        form = await checked_form(request)
        rater = (form.pop("rater", "") or "").strip()
        if not rater:
            raise UserError("give your name as the rater: each rater's ratings are kept apart")
        run = find_run(form.pop("run", ""), state.runs_dir)
        form.pop("csrf", None)
        cfg, _ = load_config(run.config, stored=True)
        views.rate_item(run, cfg, rater, form)
        return RedirectResponse("/ab?" + urlencode({"run": run.id, "rater": rater}), status_code=303)

    # ------------------------------------------------------------------ playground

    @app.get("/playground", response_class=HTMLResponse)
    async def playground(request: Request) -> HTMLResponse:
        models, error = [], None
        if state.serve_url:
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    r = await client.get(f"{state.serve_url}/models", headers=_serve_auth(state))
                    r.raise_for_status()
                    models = [m["id"] for m in r.json()["data"]]
            except httpx.HTTPError as exc:
                error = f"cannot reach {state.serve_url}: {exc}"
        return page(request, "playground.html", models=models, serve_url=state.serve_url, error=error)

    @app.post("/api/chat")
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if request.headers.get("x-csrf") != state.token("form"):
            return JSONResponse({"error": "bad token: reload the page"}, status_code=403)
        if not state.serve_url:
            return JSONResponse({"error": "no server: start the UI with --serve URL"}, status_code=409)
        payload = {"model": body["model"], "messages": body["messages"], "stream": True,
                   "max_tokens": int(body.get("max_tokens") or 256)}

        async def relay() -> AsyncIterator[bytes]:
            async with httpx.AsyncClient(timeout=None) as client:
                async with client.stream("POST", f"{state.serve_url}/chat/completions", json=payload,
                                         headers=_serve_auth(state)) as r:
                    async for chunk in r.aiter_raw():
                        yield chunk

        return StreamingResponse(relay(), media_type="text/event-stream")

    @app.post("/api/feedback")
    async def feedback(request: Request) -> Response:
        if request.headers.get("x-csrf") != state.token("form"):
            return JSONResponse({"error": "bad token: reload the page"}, status_code=403)
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(f"{state.serve_url}/feedback", content=await request.body(),
                                  headers={**_serve_auth(state), "Content-Type": "application/json"})
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    return app


def _serve_auth(state: UiState) -> dict[str, str]:
    return {"Authorization": f"Bearer {state.serve_key}"} if state.serve_key else {}
