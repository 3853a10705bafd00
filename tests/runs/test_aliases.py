"""Aliases: promote, rollback as a stack, history, atomic moves under concurrent promoters, alias lookup."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from tunesmith.errors import UserError
from tunesmith.runs.aliases import alias_history, alias_holder, aliases_of, promote, rollback
from tunesmith.runs.folder import RunPaths, write_status
from tunesmith.runs.store import DB_NAME, find_known_run, get_run, query_runs


def fake_run(runs_dir: Path, run_id: str, status: str = "completed", adapter: bool = True,
             parent: str | None = None) -> RunPaths:
    """A run folder as the pipeline leaves it, without training anything."""
    run = RunPaths(runs_dir / run_id)
    run.root.mkdir(parents=True)
    run.config.write_text("objective: {task: classification}\nadapter: {method: lora}\n")
    write_status(run, status)
    if adapter:
        run.adapter.mkdir()
        (run.adapter / "adapter_config.json").write_text("{}")
    if parent:
        run.lineage.write_text(json.dumps({"parent": parent}))
    return run


def test_promote_rollback_and_history(tmp_path):
    runs = tmp_path / "runs"
    v1, v2, v3 = (fake_run(runs, f"2026120{i}-000000-classification") for i in (1, 2, 3))
    assert promote(runs, v1, reason="first").previous is None
    promote(runs, v2, by="ana", reason="better on fresh traffic")
    move = promote(runs, v3)
    assert (move.run_id, move.previous) == (v3.id, v2.id)
    assert alias_holder(runs, "production") == v3.id
    assert rollback(runs).run_id == v2.id
    assert rollback(runs, reason="v2 regressed").run_id == v1.id  # a stack: back twice is v1, not v3
    with pytest.raises(UserError, match="no earlier holder"):
        rollback(runs)
    history = alias_history(runs, "production")
    assert [(m.action, m.run_id, m.previous) for m in history] == [
        ("promote", v1.id, None), ("promote", v2.id, v1.id), ("promote", v3.id, v2.id),
        ("rollback", v2.id, v3.id), ("rollback", v1.id, v2.id)]
    assert history[1].by == "ana" and history[1].reason == "better on fresh traffic"
    promote(runs, v3, "candidate")
    assert aliases_of(runs) == {"candidate": v3.id, "production": v1.id}
    listed = {r["id"]: r["aliases"] for r in query_runs(runs)}
    assert listed[v1.id] == ["production"] and listed[v3.id] == ["candidate"] and listed[v2.id] == []
    # Every command that takes a run takes an alias.
    assert find_known_run("production", runs).id == v1.id
    assert find_known_run("candidate", runs).id == v3.id


def test_only_completed_runs_with_an_adapter_are_promoted(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="failed"):
        promote(runs, fake_run(runs, "20261201-000000-classification", status="failed"))
    with pytest.raises(UserError, match="no saved adapter"):
        promote(runs, fake_run(runs, "20261202-000000-classification", adapter=False))
    with pytest.raises(UserError, match="alias"):
        promote(runs, fake_run(runs, "20261203-000000-classification"), "20261203-000000-x")
    with pytest.raises(UserError, match="never promoted"):
        rollback(runs)


def test_lineage_is_recorded(tmp_path):
    runs = tmp_path / "runs"
    v1 = fake_run(runs, "20261201-000000-classification")
    v2 = fake_run(runs, "20261202-000000-classification", parent=v1.id)
    promote(runs, v2)
    assert get_run(runs, v2.id)["parent"] == v1.id


def test_a_version_one_registry_gains_the_lineage_column(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with sqlite3.connect(runs / DB_NAME) as con:  # the registry as tunesmith 0.x wrote it
        con.executescript("CREATE TABLE runs (id TEXT PRIMARY KEY, path TEXT NOT NULL, project TEXT, task TEXT, "
                          "created TEXT NOT NULL, updated TEXT, status TEXT NOT NULL, method TEXT, base_model TEXT, "
                          "data_hash TEXT, metric TEXT, baseline REAL, tuned REAL, target REAL, verdict TEXT, "
                          "error TEXT, sweep TEXT, config TEXT NOT NULL DEFAULT '{}', "
                          "metrics TEXT NOT NULL DEFAULT '{}'); PRAGMA user_version = 1;")
    v1 = fake_run(runs, "20261201-000000-classification", parent="20261130-000000-classification")
    promote(runs, v1)
    assert get_run(runs, v1.id)["parent"] == "20261130-000000-classification"


def _promote_many(runs_dir: str, run_ids: list[str], rounds: int) -> None:
    for i in range(rounds):
        promote(Path(runs_dir), RunPaths(Path(runs_dir) / run_ids[i % len(run_ids)]), reason=f"round {i}")


def test_moves_are_atomic_under_two_concurrent_promoters(tmp_path):
    runs = tmp_path / "runs"
    ids = [fake_run(runs, f"2026120{i}-000000-classification").id for i in range(1, 5)]
    promote(runs, RunPaths(runs / ids[0]))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_promote_many, args=(str(runs), ids[k::2], 15)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    history = alias_history(runs, "production")
    assert len(history) == 1 + 2 * 15  # no move lost
    for before, after in zip(history, history[1:]):
        assert after.previous == before.run_id  # each move saw the holder the one before it left
    assert alias_holder(runs, "production") == history[-1].run_id
