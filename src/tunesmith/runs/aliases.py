"""Aliases of the run registry: which run is ``production`` (or ``candidate``, or any name), and every move.

Two tables beside ``runs`` in ``registry.sqlite``: ``aliases`` (name -> run, the current holder)
and ``alias_moves`` (every promotion and rollback with who, when and why). A move reads the
holder and writes both tables in one ``BEGIN IMMEDIATE`` transaction, so two promoters at once
queue one behind the other: each move's ``previous`` is the holder the other left, never a lost
update. ``rollback`` undoes promotions in order, as a stack: after v1 -> v2 -> v3, rolling back
twice gives v2, then v1.
"""

from __future__ import annotations

import getpass
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.runs.folder import RunPaths
from tunesmith.runs.store import DB_NAME, _connect, _transaction, get_run, record_run

_TABLES = """
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,    -- production, candidate, any name
    run_id TEXT NOT NULL,     -- the run holding it now
    moved TEXT NOT NULL       -- when it last moved (UTC, ISO 8601)
);
CREATE TABLE IF NOT EXISTS alias_moves (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    action TEXT NOT NULL,     -- promote or rollback
    run_id TEXT NOT NULL,     -- the holder after the move
    previous TEXT,            -- the holder before it
    at TEXT NOT NULL,
    by TEXT,                  -- who moved it
    reason TEXT               -- why
);
"""
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias.

    Attributes:
        alias: The alias moved.
        action: ``promote`` or ``rollback``.
        run_id: The run holding the alias after the move.
        previous: The run that held it before (None for the first promotion).
        at: When (UTC, ISO 8601).
        by: Who.
        reason: Why.
    """

    alias: str
    action: str
    run_id: str
    previous: str | None
    at: str
    by: str | None
    reason: str | None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def _check_name(alias: str) -> None:
    if not ALIAS_NAME.match(alias) or re.match(r"^\d{8}-\d{6}", alias):
        raise UserError(f"alias {alias!r}: use a name of letters, digits, '_', '-' or '.', starting with a letter "
                        "(e.g. production, candidate); run ids cannot be aliases")


@contextmanager
def _registry(runs_dir: Path) -> Iterator[sqlite3.Connection]:
    """The store's connection with the alias tables created on first use."""
    with _connect(runs_dir) as con:
        con.executescript(_TABLES)
        yield con


def alias_holder(runs_dir: Path, alias: str) -> str | None:
    """The run id holding ``alias`` in this runs folder's registry, or None (no registry, no such alias)."""
    if not (runs_dir / DB_NAME).is_file():
        return None
    with _registry(runs_dir) as con:
        row = con.execute("SELECT run_id FROM aliases WHERE name = ?", (alias,)).fetchone()
    return None if row is None else row["run_id"]


def aliases_of(runs_dir: Path) -> dict[str, str]:
    """Every alias of the registry and the run holding it."""
    if not (runs_dir / DB_NAME).is_file():
        return {}
    with _registry(runs_dir) as con:
        return {r["name"]: r["run_id"] for r in con.execute("SELECT name, run_id FROM aliases ORDER BY name")}


def _move(runs_dir: Path, alias: str, action: str, target: str | None, by: str | None, reason: str | None) -> AliasMove:
    at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    with _registry(runs_dir) as con, _transaction(con):
        row = con.execute("SELECT run_id FROM aliases WHERE name = ?", (alias,)).fetchone()
        previous = None if row is None else row["run_id"]
        if action == "rollback":
            target = _rollback_target(con, alias)
        assert target is not None
        con.execute("INSERT INTO aliases (name, run_id, moved) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET run_id = excluded.run_id, moved = excluded.moved",
                    (alias, target, at))
        con.execute("INSERT INTO alias_moves (alias, action, run_id, previous, at, by, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (alias, action, target, previous, at, by or _user(), reason))
    return AliasMove(alias, action, target, previous, at, by or _user(), reason)


def _rollback_target(con: sqlite3.Connection, alias: str) -> str:
    """The holder before the latest promotion still in force: promotions push, rollbacks pop.

    Raises:
        UserError: Nothing to roll back to.
    """
    stack: list[str] = []
    for move in con.execute("SELECT action, run_id FROM alias_moves WHERE alias = ? ORDER BY id", (alias,)):
        if move["action"] == "promote":
            stack.append(move["run_id"])
        elif stack:
            stack.pop()
    if len(stack) < 2:
        raise UserError(f"alias {alias!r} has no earlier holder to roll back to"
                        + (f" (it is held by {stack[-1]} since its first promotion)" if stack else " (never promoted)"))
    return stack[-2]


def promote(runs_dir: Path, run: RunPaths, alias: str = "production", *, by: str | None = None,
            reason: str | None = None) -> AliasMove:
    """Give ``alias`` to a finished run (recorded in the registry first).

    Args:
        runs_dir: The registry's runs folder.
        run: The run to promote.
        alias: ``production``, ``candidate`` or any name.
        by: Who promotes (default: the OS user).
        reason: Why, kept in the history.

    Returns:
        The move made.

    Raises:
        UserError: A bad alias name, or the run did not complete or has no saved adapter.
    """
    _check_name(alias)
    record_run(runs_dir, run)
    row = get_run(runs_dir, run.id)
    if row is None or row["status"] != "completed":
        raise UserError(f"run {run.id} is {row['status'] if row else 'not recorded'}; only a completed run can be "
                        f"promoted to {alias}")
    if not (run.adapter / "adapter_config.json").is_file():
        raise UserError(f"run {run.id} has no saved adapter ({run.adapter}); nothing to serve as {alias}")
    return _move(runs_dir, alias, "promote", run.id, by, reason)


def rollback(runs_dir: Path, alias: str = "production", *, by: str | None = None,
             reason: str | None = None) -> AliasMove:
    """Give ``alias`` back to the run that held it before its latest promotion.

    Raises:
        UserError: The alias was never moved, or has no earlier holder.
    """
    _check_name(alias)
    return _move(runs_dir, alias, "rollback", None, by, reason)


def alias_history(runs_dir: Path, alias: str | None = None) -> list[AliasMove]:
    """Every move (of one alias, or all), oldest first."""
    if not (runs_dir / DB_NAME).is_file():
        return []
    with _registry(runs_dir) as con:
        sql = "SELECT * FROM alias_moves" + (" WHERE alias = ?" if alias else "") + " ORDER BY id"
        return [AliasMove(r["alias"], r["action"], r["run_id"], r["previous"], r["at"], r["by"], r["reason"])
                for r in con.execute(sql, (alias,) if alias else ())]
