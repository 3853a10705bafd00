"""The run registry: one SQLite table with every run's config, data hash, metrics and status.

The database is ``<runs_dir>/registry.sqlite``. Run folders stay the source of truth: the
pipeline records a run when it starts and again when it ends, and :func:`sync_registry` (which
``tunesmith runs`` calls first) records folders the table does not know or knows in an older
state: runs made before the registry existed, or whose recording failed. A row whose folder is
gone is kept, with status ``missing``, so its config and metrics are not lost.

Other features tag rows through the same API: a hyperparameter sweep calls
``record_run(runs_dir, run, sweep="lr-search")`` from the pipeline's ``on_start`` hook (a
``sweep`` key in ``status.json`` is read as the tag too), and ``update_run(runs_dir, run_id,
sweep=..., metrics={...})`` sets columns or merges metrics; ``tunesmith runs --sweep NAME``
lists the trials. Writes are single short ``BEGIN IMMEDIATE`` transactions with a busy timeout,
so parallel runs and sweeps can share one database.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape

from tunesmith.config import Config, flatten_config
from tunesmith.report.schema import read_report_if_any
from tunesmith.tasks import TASKS
from tunesmith.errors import UserError
from tunesmith.cache import cache_root
from tunesmith.runs.folder import RunPaths, find_run
from tunesmith.console import console

DB_NAME = "registry.sqlite"
#: Seconds a write waits for another process's transaction before giving up.
TIMEOUT_S = 30.0
#: States a run can be in: ``pruned`` is a sweep trial stopped early, ``missing`` a row whose folder is gone.
STATUSES = ("running", "completed", "failed", "pruned", "missing", "unknown")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,      -- the run folder's name
    path TEXT NOT NULL,       -- the run folder
    project TEXT,             -- project.name
    task TEXT,                -- objective.task
    created TEXT NOT NULL,    -- ISO 8601, UTC
    updated TEXT,             -- status.json's time stamp
    status TEXT NOT NULL,     -- running, completed, failed, pruned, missing, unknown
    method TEXT,              -- adapter.method
    base_model TEXT,          -- model.base
    data_hash TEXT,           -- the splits' hash from data/manifest.json
    metric TEXT,              -- the primary metric's name
    baseline REAL,            -- its value for the untuned model
    tuned REAL,               -- its value for the tuned model
    target REAL,              -- objective.target
    verdict TEXT,             -- met, not met, inconclusive
    error TEXT,               -- why a failed run failed
    sweep TEXT,               -- the sweep a trial run belongs to
    config TEXT NOT NULL DEFAULT '{}',  -- the run's config.yaml as JSON
    metrics TEXT NOT NULL DEFAULT '{}', -- {baseline: {...}, tuned: {...}, train: {...}, higher_is_better: {...}}
    parent TEXT               -- the run this run was retrained from (its lineage.json); added in version 2
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
PRAGMA user_version = 2;
"""
COLUMNS = ("id", "path", "project", "task", "created", "updated", "status", "method", "base_model", "data_hash",
           "metric", "baseline", "tuned", "target", "verdict", "error", "sweep", "config", "metrics", "parent")
#: Columns a later sync from the folder must not overwrite (``metrics`` is merged instead).
_KEPT_ON_SYNC = {"id", "created", "sweep", "metrics"}
#: Training figures ``--sort`` accepts, and whether more is better.
TRAIN_SORT = {"final_train_loss": False, "best_val_loss": False, "tokens_per_second": True, "peak_rss_mb": False,
              "seconds": False}
_WHERE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


# --------------------------------------------------------------------------- storage


@contextmanager
def _connect(runs_dir: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the registry of ``runs_dir`` (created on first use) in autocommit mode.

    Raises:
        UserError: The file is not a registry database, stays locked past the timeout, or cannot be
            created.
    """
    path = runs_dir / DB_NAME
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path, timeout=TIMEOUT_S, isolation_level=None)) as con:
            con.row_factory = sqlite3.Row
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                con.executescript(_SCHEMA)
            elif version < 2:  # a version-1 registry gains the lineage column (the run a run was retrained from)
                with _transaction(con):
                    if con.execute("PRAGMA user_version").fetchone()[0] < 2:  # another process may have just done it
                        con.execute("ALTER TABLE runs ADD COLUMN parent TEXT")
                        con.execute("PRAGMA user_version = 2")
            yield con
    except (sqlite3.Error, OSError) as exc:
        raise UserError(f"run registry {path}: {exc}") from None


@contextmanager
def _transaction(con: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking.
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown registry column(s) {sorted(unknown)}; columns: {', '.join(COLUMNS)}")
    return {k: json.dumps(v, default=str) if k in ("config", "metrics") else v for k, v in fields.items()}


def _upsert(con: sqlite3.Connection, row: dict[str, Any]) -> None:
    cols = list(row)
    updates = [f"{c} = excluded.{c}" for c in cols if c not in _KEPT_ON_SYNC]
    if "sweep" in row:
        updates.append("sweep = COALESCE(excluded.sweep, runs.sweep)")
    if "metrics" in row:
        updates.append("metrics = json_patch(runs.metrics, excluded.metrics)")
    con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT(id) DO UPDATE SET {', '.join(updates)}", [row[c] for c in cols])


# --------------------------------------------------------------------------- reading a run folder


def _read(path: Path, parse: Any) -> Any:
    """A JSON/YAML file's content, or None when it is absent or half-written (a killed run)."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _created(run: RunPaths) -> str:
    """When the run started: the time stamp in its folder name, else when its config was written."""
    try:
        local = datetime.strptime(run.id[:15], "%Y%m%d-%H%M%S").astimezone()
    except ValueError:
        local = datetime.fromtimestamp(run.config.stat().st_mtime).astimezone()
    return local.astimezone(timezone.utc).isoformat(timespec="seconds")


def _status(run: RunPaths) -> dict[str, Any]:
    return _read(run.status, json.loads) or {}


def folder_row(run: RunPaths) -> dict[str, Any]:
    """The registry row of a run folder, from its ``config.yaml``, ``status.json``, ``report.json`` and manifest.

    A sweep's tag in ``status.json`` (``sweep``) becomes the row's ``sweep``.
    """
    config = _read(run.config, yaml.safe_load) or {}
    status = _status(run)
    report = read_report_if_any(run.report_json)
    manifest = _read(run.data / "manifest.json", json.loads) or {}
    lineage = _read(run.lineage, json.loads) or {}
    section = lambda name: config.get(name) or {}  # noqa: E731
    task = report.objective.task if report else section("objective").get("task")
    metric = (report.objective.metric if report else section("objective").get("metric")) or \
        (TASKS[task].primary_metric if task in TASKS else None)
    sides = {"baseline": report.baseline.metrics if report and report.baseline else {},
             "tuned": report.tuned.metrics if report else {}}
    metrics = {**sides, "train": report.train.model_dump() if report and report.train else {},
               "higher_is_better": {k: v.higher_is_better for k, v in report.comparison.items()} if report else {},
               "interval": report.interval.to_dict() if report and report.interval else None}
    return {
        "id": run.id, "path": str(run.root.resolve()), "project": section("project").get("name"), "task": task,
        "created": _created(run), "updated": status.get("updated"), "status": status.get("status", "unknown"),
        "method": section("adapter").get("method"), "base_model": section("model").get("base"),
        "data_hash": (report.data.data_hash if report else None) or manifest.get("data_hash"),
        "metric": metric, "baseline": sides["baseline"].get(metric), "tuned": sides["tuned"].get(metric),
        "target": report.objective.target if report else section("objective").get("target"),
        "verdict": report.verdict if report else None,
        "error": status.get("error"), "sweep": status.get("sweep"),
        "config": json.dumps(config, default=str), "metrics": json.dumps(metrics), "parent": lineage.get("parent"),
    }


# --------------------------------------------------------------------------- writing


def record_run(runs_dir: Path, run: RunPaths, **fields: Any) -> dict[str, Any]:
    """Insert or refresh a run's row from its folder; ``fields`` set columns directly.

    The pipeline calls this when a run starts and when it ends (after ``status.json``); a sweep
    calls it with ``sweep="NAME"`` to tag a trial. A sync from the folder keeps ``created``,
    ``sweep`` and metrics added by :func:`update_run`.

    Args:
        runs_dir: The folder holding ``registry.sqlite`` (the project's ``runs_dir``).
        run: The run folder.
        **fields: Columns to set (see :data:`COLUMNS`), e.g. ``sweep="lr-search"``.

    Returns:
        The row written (``config`` and ``metrics`` as JSON text).

    Raises:
        ValueError: A field is not a registry column.
        UserError: The registry cannot be written.
    """
    row = {**folder_row(run), **_checked(fields)}
    with _connect(runs_dir) as con, _transaction(con):
        _upsert(con, row)
    return row


def update_run(runs_dir: Path, run_id: str, **fields: Any) -> None:
    """Set columns of a recorded run; a ``metrics`` mapping is merged into the stored one.

    Raises:
        ValueError: A field is not a registry column.
        UserError: The registry holds no run ``run_id``, or cannot be written.
    """
    values = _checked(fields)
    if not values:
        return
    sets = [f"{c} = json_patch(metrics, ?)" if c == "metrics" else f"{c} = ?" for c in values]
    with _connect(runs_dir) as con, _transaction(con):
        cur = con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", [*values.values(), run_id])
        if cur.rowcount == 0:
            raise UserError(f"no run '{run_id}' in the registry {runs_dir / DB_NAME}")


def sync_registry(runs_dir: Path) -> int:
    """Record the run folders of ``runs_dir`` that the registry lacks or holds in an older state.

    Rows whose folder is gone are marked ``missing`` (kept, not deleted).

    Returns:
        How many rows were written.

    Raises:
        UserError: The registry cannot be read or written.
    """
    if not runs_dir.is_dir():
        return 0
    folders = [RunPaths(p) for p in sorted(runs_dir.iterdir()) if (p / "config.yaml").is_file()]
    with _connect(runs_dir) as con:
        known = {r["id"]: r for r in con.execute("SELECT id, path, status, updated FROM runs")}
        stale = []
        for run in folders:
            row, status = known.get(run.id), _status(run)
            now = (status.get("status", "unknown"), status.get("updated"))
            if row is None or (row["status"], row["updated"]) != now:
                stale.append(folder_row(run))
        names = {run.id for run in folders}
        gone = [r["id"] for r in known.values()
                if r["id"] not in names and r["status"] != "missing" and not Path(r["path"]).is_dir()]
        if stale or gone:
            with _transaction(con):
                for row in stale:
                    _upsert(con, row)
                con.executemany("UPDATE runs SET status = 'missing' WHERE id = ?", [(i,) for i in gone])
    return len(stale) + len(gone)


# --------------------------------------------------------------------------- querying


def _where_clause(item: str) -> tuple[str, list[Any]]:
    """``adapter.r=16`` -> SQL on the stored config; values are read as JSON where they parse, else as text.

    Raises:
        UserError: Not of the form KEY<op>VALUE, or KEY is not a config key.
    """
    match = _WHERE.match(item)
    if not match:
        raise UserError(f"--where {item!r}: expected KEY=VALUE (or !=, <, <=, >, >=), e.g. adapter.r=16")
    key, op, raw = match.groups()
    defaults = flatten_config(Config().model_dump(mode="json"))
    # Keys under mapping-valued settings (data.columns.text) are the user's own.
    if key not in defaults and not any(key.startswith(k + ".") and isinstance(v, dict) for k, v in defaults.items()):
        near = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise UserError(f"--where {item!r}: '{key}' is not a config key{hint}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    expr = f"json_extract(config, '$.{key}')"
    if value is None and op in ("=", "!="):
        return f"{expr} IS {'NOT ' if op == '!=' else ''}NULL", []
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(",", ":"))
    return f"{expr} {op} ?", [value]


def _since(value: str) -> str:
    """An ISO date or date-time (local time unless it has an offset) as the UTC text stored in ``created``.

    Raises:
        UserError: Not an ISO date.
    """
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"--since {value!r}: expected a date such as 2025-01-31 or 2025-01-31T14:00") from None
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _check_choice(name: str, value: str | None, choices: Sequence[str]) -> None:
    if value is not None and value not in choices:
        near = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise UserError(f"--{name} {value!r}: one of {', '.join(choices)}{hint}")


def sort_value(row: dict[str, Any], sort: str) -> tuple[float | None, bool]:
    """A queried row's value for ``--sort`` (None when it lacks one) and whether more is better."""
    m = row["metrics"]
    if sort in ("metric", "tuned", "baseline"):
        return row["tuned" if sort == "metric" else sort], m.get("higher_is_better", {}).get(row["metric"]) is not False
    if sort in TRAIN_SORT:
        return m.get("train", {}).get(sort), TRAIN_SORT[sort]
    return m.get("tuned", {}).get(sort), m.get("higher_is_better", {}).get(sort) is not False


def _sorted(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Best first by ``sort``; rows without the value go last.

    Raises:
        UserError: No row has a value called ``sort``.
    """
    keyed = [(sort_value(r, sort), r) for r in rows]
    if rows and all(v is None for (v, _), _ in keyed):
        known = sorted({k for r in rows for k in r["metrics"].get("tuned", {})})
        raise UserError(f"--sort {sort!r}: no listed run has it; sort by created, metric, tuned, baseline, "
                        f"{', '.join(TRAIN_SORT)} or a test metric ({', '.join(known) or 'none yet'})")
    present = [(v if up else -v, r) for (v, up), r in keyed if v is not None]
    return [r for _, r in sorted(present, key=lambda t: -t[0])] + [r for (v, _), r in keyed if v is None]


def _row(r: sqlite3.Row, with_config: bool) -> dict[str, Any]:
    row = {k: r[k] for k in r.keys() if k != "config"}
    row["metrics"] = json.loads(r["metrics"])
    if with_config:
        row["config"] = json.loads(r["config"])
    return row


def query_runs(runs_dir: Path, *, status: str | None = None, task: str | None = None, method: str | None = None,
               since: str | None = None, sweep: str | None = None, where: Sequence[str] = (), sort: str = "created",
               limit: int | None = None, with_config: bool = False) -> list[dict[str, Any]]:
    """Rows of the registry that pass every filter, sorted.

    Args:
        runs_dir: The folder holding ``registry.sqlite``.
        status: Only runs in this state (see :data:`STATUSES`).
        task: Only runs of this task.
        method: Only runs of this adapter method.
        since: Only runs created at or after this ISO date or date-time (local time).
        sweep: Only trial runs of this sweep.
        where: ``KEY<op>VALUE`` conditions on the config (``adapter.r=16``, ``train.lr<0.01``), all required.
        sort: ``created`` (newest first); ``metric``/``tuned``/``baseline`` (the primary metric, best first);
            a test metric such as ``macro_f1`` (its tuned value, best first); or a training figure
            (``best_val_loss``, ``final_train_loss``, ``seconds``, ``peak_rss_mb``: lowest first;
            ``tokens_per_second``: highest first).
        limit: At most this many rows (after sorting).
        with_config: Include each run's config (a nested mapping).

    Returns:
        One mapping per run with the registry's columns, ``metrics`` decoded, and ``aliases``: the aliases
        it holds (``production``...).

    Raises:
        UserError: A filter value is invalid, a ``--where`` key is not a config key, or no run has the sort key.
    """
    _check_choice("status", status, STATUSES)
    _check_choice("task", task, TASKS)
    clauses, params = [], []
    for column, value in (("status", status), ("task", task), ("method", method), ("sweep", sweep)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("created >= ?")
        params.append(_since(since))
    for item in where:
        sql, values = _where_clause(item)
        clauses.append(sql)
        params.extend(values)
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: give a positive number")
    sql = ("SELECT * FROM runs" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
           + " ORDER BY created DESC, id DESC")
    if not (runs_dir / DB_NAME).is_file():  # listing must not create a runs folder
        return []
    with _connect(runs_dir) as con:
        rows = [_row(r, with_config) for r in con.execute(sql, params)]
    from tunesmith.runs.aliases import aliases_of  # aliases build on this module

    held: dict[str, list[str]] = {}
    for alias, run_id in aliases_of(runs_dir).items():
        held.setdefault(run_id, []).append(alias)
    for row in rows:
        row["aliases"] = held.get(row["id"], [])
    if sort != "created":
        rows = _sorted(rows, sort)
    return rows[:limit] if limit is not None else rows


def get_run(runs_dir: Path, run_id: str) -> dict[str, Any] | None:
    """One run's row with its config, or None when the registry does not hold it."""
    with _connect(runs_dir) as con:
        r = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if r is None else _row(r, True)


#: Under the cache folder: every runs folder a run was recorded in, so that a run is found by its id from anywhere.
KNOWN_DIRS_FILE = "runs_dirs.json"
KNOWN_DIRS_KEPT = 200


#: Names another file for the list (the test suite keeps its own, subprocesses included).
KNOWN_DIRS_ENV = "TUNESMITH_KNOWN_RUNS_DIRS"


def _known_dirs_file() -> Path:
    env = os.environ.get(KNOWN_DIRS_ENV)
    return Path(env) if env else cache_root() / KNOWN_DIRS_FILE


def known_runs_dirs() -> list[Path]:
    """The runs folders tunesmith has recorded runs in (most recent first) that still hold a registry."""
    try:
        names = json.loads(_known_dirs_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [Path(n) for n in names if isinstance(n, str) and (Path(n) / DB_NAME).is_file()]


def remember_runs_dir(runs_dir: Path) -> None:
    """Add ``runs_dir`` to the folders :func:`known_runs_dirs` lists (written whole, so never half a file)."""
    path = _known_dirs_file()
    here = str(runs_dir.resolve())
    try:
        names = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, ValueError):
        names = []
    # Newest first; folders since deleted drop out, and the list stays short.
    names = [here, *(n for n in names if n != here and (Path(n) / DB_NAME).is_file())][:KNOWN_DIRS_KEPT]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(names, indent=1), encoding="utf-8")
    tmp.replace(path)


def query_known_runs(**filters: Any) -> list[dict[str, Any]]:
    """:func:`query_runs` over every known runs folder, merged (each row has its folder in ``runs_dir``)."""
    sort, limit = filters.pop("sort", "created"), filters.pop("limit", None)
    rows = [{**r, "runs_dir": str(d)} for d in known_runs_dirs() for r in query_runs(d, **filters)]
    rows = _sorted(rows, sort) if sort != "created" else sorted(rows, key=lambda r: (r["created"] or "", r["id"]),
                                                                  reverse=True)
    return rows[:limit] if limit is not None else rows


def find_known_run(ref: str, runs_dir: Path) -> RunPaths:
    """A run by alias (``production``) or id in ``runs_dir``, by folder path, or by id in any known runs folder.

    Raises:
        UserError: No such run anywhere (the message lists where it looked).
    """
    from tunesmith.runs.aliases import alias_holder  # aliases build on this module

    holder = alias_holder(runs_dir, ref) if "/" not in ref and "\\" not in ref else None
    if holder is not None:
        return find_run(holder, runs_dir)
    try:
        return find_run(ref, runs_dir)
    except UserError as exc:
        for folder in known_runs_dirs():
            if (folder / ref / "config.yaml").is_file():
                return RunPaths(folder / ref)
        places = ", ".join(str(d) for d in known_runs_dirs()) or "none yet"
        raise UserError(f"{exc}; nor in the runs folders tunesmith knows ({places})") from None


def note_run(runs_dir: Path, run: RunPaths) -> None:
    """:func:`record_run` for the pipeline: a registry that cannot be written costs a warning, not the run.

    The folder keeps everything, and the next ``tunesmith runs`` records it.
    """
    try:
        record_run(runs_dir, run)
        remember_runs_dir(runs_dir)
    except OSError as exc:  # the cache folder cannot be written: runs are still listed from their own folder
        console.print(f"[yellow]warning:[/] cannot note {runs_dir} among the known runs folders ({exc})")
    except UserError as exc:
        console.print(f"[yellow]warning:[/] {escape(str(exc))}; `tunesmith runs` will record run {run.id} later")
