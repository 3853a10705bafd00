"""The retraining recipe: next data version -> candidate -> both models on both test sets -> gate -> aliases.

:func:`retrain` calls the steps in order; the building blocks live below (data versions in
:mod:`tunesmith.data.versions`, the gate in :mod:`tunesmith.evaluate.gate`, evaluating a run on
other examples in :mod:`tunesmith.ops.reevaluate`, aliases in :mod:`tunesmith.runs.aliases`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunesmith.config import Config, DataConfig, load_config, resolve_path
from tunesmith.console import console
from tunesmith.data.examples import Example
from tunesmith.data.prepare import Splits
from tunesmith.data.quality import clean_example
from tunesmith.data.versions import DataVersion, next_data_version
from tunesmith.errors import UserError
from tunesmith.evaluate.gate import GateDecision, decide
from tunesmith.evaluate.metrics import METRICS
from tunesmith.evaluate.stats import compare_paired
from tunesmith.evaluate.intervals import PairedComparison
from tunesmith.ops.reevaluate import evaluate_run_on
from tunesmith.recipes.finetune import run_pipeline
from tunesmith.report.retrain import RetrainReport, SetComparison, write_retrain_report
from tunesmith.report.schema import read_report
from tunesmith.runs.aliases import promote
from tunesmith.runs.folder import RunPaths
from tunesmith.runs.store import find_known_run

#: Where data versions are written, under the project's runs folder.
VERSIONS_DIR = "data-versions"


@dataclass
class RetrainPlan:
    """What a retraining will do, before it trains: the production run, the data version, the candidate's config."""

    production: RunPaths
    production_config: Config
    production_splits: Splits
    version: DataVersion
    folder: Path
    files: dict[str, Path]
    candidate_config: Config


@dataclass
class RetrainOutcome:
    """A retraining's result (``report`` is None for a dry run, which has ``estimate`` instead)."""

    plan: RetrainPlan
    report: RetrainReport | None = None
    candidate: RunPaths | None = None
    estimate: dict[str, Any] | None = None


def candidate_config(cfg: Config, plan_files: dict[str, Path], version: DataVersion, production: RunPaths,
                     continue_production: bool) -> Config:
    """The project's config, its data pointed at the data version (no split made: train, validation, frozen test)."""
    out = cfg.model_copy(deep=True)
    data = out.data.model_dump()
    data.update(mix=None, prepared=None, train=plan_files["train"], validation=plan_files["validation"],
                test=plan_files["test"], format=version.format, columns={}, labels=version.labels,
                max_examples=None)  # max_examples: the production run's rows were already chosen
    out.data = DataConfig.model_validate(data)
    if continue_production:
        out.adapter.init_from = str(production.root)
    return out


def plan_retrain(cfg: Config, base_dir: Path, *, scratch: Path | None = None) -> RetrainPlan:
    """Find production, build the next data version (written to its folder, or to ``scratch`` for a dry run)
    and the candidate's config.

    Raises:
        UserError: No production run, a data.mix run, no reviewed rows.
    """
    runs_dir = resolve_path(base_dir, cfg.project.runs_dir)
    try:
        production = find_known_run(cfg.retrain.production, runs_dir)
    except UserError as exc:
        raise UserError(f"{exc}. Retraining starts from the run that holds '{cfg.retrain.production}': "
                        f"`tunesmith promote RUN --as {cfg.retrain.production}` first") from None
    prod_cfg, _ = load_config(production.config, stored=True)
    if prod_cfg.data.mix is not None:
        raise UserError(f"run {production.id} is a data.mix run; retrain builds on single-dataset runs")
    splits = Splits.load(production.data)
    new_files = [resolve_path(base_dir, p) for p in cfg.retrain.new_data]
    if not new_files:
        raise UserError("retrain.new_data names no reviewed files: `tunesmith logs export`, then `tunesmith data "
                        "review export/import`, then list the reviewed file under retrain.new_data")
    version = next_data_version(splits, new_files, fresh_fraction=cfg.retrain.fresh_test_fraction,
                                dedup=cfg.data.dedup, seed=cfg.project.seed)
    folder = runs_dir / VERSIONS_DIR / version.version[:12]
    files = version.write(scratch or folder)
    return RetrainPlan(production, prod_cfg, splits, version, folder, files,
                       candidate_config(cfg, files, version, production, cfg.retrain.continue_production))


def _predictions(run: RunPaths) -> dict[str, dict[str, Any]]:
    path = run.predictions / "tuned.jsonl"
    return {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())} if path.is_file() else {}


def _reference(row: dict[str, Any]) -> Any:
    return row["label"] if row.get("task_type") == "classification" else row["reference"]


def paired(metric: str, production: list[dict[str, Any]], candidate: list[dict[str, Any]], cfg: Config) -> PairedComparison:
    """Candidate (as ``tuned``) against production (as ``baseline``) on the rows both answered, matched by id.

    Raises:
        UserError: The two share no test example.
    """
    prod = {r["id"]: r for r in production}
    both = [r for r in candidate if r["id"] in prod]
    if not both:
        raise UserError("production and candidate share no test example to compare on")
    return compare_paired(metric, [prod[r["id"]]["prediction"] for r in both], [r["prediction"] for r in both],
                          [_reference(r) for r in both], resamples=cfg.eval.bootstrap_resamples,
                          seed=cfg.project.seed, level=cfg.eval.confidence, min_count=cfg.eval.min_test_examples)


def judge_candidate(plan: RetrainPlan, candidate: RunPaths, cfg: Config) -> tuple[dict[str, PairedComparison], GateDecision]:
    """Both models on the frozen test split (stored predictions) and the fresh test set (evaluated now); the gate."""
    metric = cfg.objective.primary_metric
    cand_cfg, _ = load_config(candidate.config, stored=True)
    cand_splits = Splits.load(candidate.data)
    comparisons = {"frozen": paired(metric, list(_predictions(plan.production).values()),
                                    list(_predictions(candidate).values()), cfg)}
    fresh: list[Example] = [clean_example(ex, cfg.data.clean) for ex in plan.version.fresh_test]
    if fresh:
        console.print(f"Fresh test set: {len(fresh)} reviewed rows; evaluating production and candidate on it")
        prod_rows = evaluate_run_on(plan.production, plan.production_config, plan.production_splits, fresh,
                                    "production (fresh)").predictions
        cand_rows = evaluate_run_on(candidate, cand_cfg, cand_splits, fresh, "candidate (fresh)").predictions
        comparisons["fresh"] = paired(metric, prod_rows, cand_rows, cfg)
    report = read_report(candidate.report_json)
    warnings = list((report.forgetting or {}).get("warnings", []))
    groups = (report.fairness or {}).get("groups") or {}
    flagged = [f"{groups.get('attribute')} (ratio {groups.get('ratio')})"] if groups.get("flagged") else []
    higher = METRICS[metric].higher_is_better if metric in METRICS else True
    return comparisons, decide(comparisons, cfg.retrain.gate, forgetting_warnings=warnings, fairness_flagged=flagged,
                               higher_is_better=higher)


def retrain(cfg: Config, base_dir: Path, *, dry_run: bool = False, by: str | None = None) -> RetrainOutcome:
    """Retrain on reviewed traffic and promote the candidate only if the gate says it beats production.

    Args:
        cfg: The project config (``retrain`` section: new data, fresh test share, gate).
        base_dir: The folder relative paths are resolved against.
        dry_run: Build the data version and estimate the training cost (``tunesmith plan``), train nothing.
        by: Who retrains, for the alias history.

    Returns:
        The plan, and unless a dry run: the candidate run and the report (``retrain.json``/``.md`` in its folder).

    Raises:
        UserError: No production run, no reviewed rows, a bad config.
    """
    if dry_run:  # nothing is written to the runs folder
        from tunesmith.plan.estimate import plan_training

        with tempfile.TemporaryDirectory() as scratch:
            plan = plan_retrain(cfg, base_dir, scratch=Path(scratch))
            return RetrainOutcome(plan, estimate=plan_training(plan.candidate_config, base_dir))
    plan = plan_retrain(cfg, base_dir)
    lineage = {"parent": plan.production.id, "data_version": plan.version.version,
               "parent_data_hash": plan.version.parent_hash, "built_from": plan.version.sources,
               "data_folder": str(plan.folder)}
    candidate = run_pipeline(plan.candidate_config, base_dir,
                             on_start=lambda run: run.lineage.write_text(json.dumps(lineage, indent=2)))
    comparisons, decision = judge_candidate(plan, candidate, cfg)
    runs_dir = resolve_path(base_dir, cfg.project.runs_dir)
    moves = {cfg.retrain.candidate_alias: promote(runs_dir, candidate, cfg.retrain.candidate_alias, by=by,
                                                  reason=f"retrained from {plan.production.id}").run_id}
    if decision.promote:
        reason = "retrain gate passed: " + "; ".join(c.reason for c in decision.checks if c.name in ("fresh", "frozen"))
        moves[cfg.retrain.production] = promote(runs_dir, candidate, cfg.retrain.production, by=by, reason=reason).run_id
    report = RetrainReport(
        production=plan.production.id, candidate=candidate.id, data_version=plan.version.version,
        data_folder=str(plan.folder), changes=plan.version.changes,
        comparisons=[SetComparison.of(n, c, getattr(cfg.retrain.gate, n)) for n, c in comparisons.items()],
        checks=decision.to_dict()["checks"], promoted=decision.promote, reasons=decision.reasons, aliases=moves,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_retrain_report(report, candidate.retrain_json, candidate.retrain_md)
    return RetrainOutcome(plan, report, candidate)
