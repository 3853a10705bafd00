"""The candidate's config: the project's settings, its data pointed at the data version, production's adapter
continued when asked."""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import Config
from tunesmith.data.versions import DataVersion
from tunesmith.recipes.retrain import candidate_config
from tunesmith.runs.folder import RunPaths


def test_candidate_config_points_at_the_version_and_can_continue_production(tmp_path):
    cfg = Config.model_validate({"data": {"train": "x.jsonl", "max_examples": 800, "columns": {"text": "utterance"}},
                                 "train": {"epochs": 3}})
    files = {k: tmp_path / f"{k}.jsonl" for k in ("train", "validation", "test")}
    version = DataVersion([], [], [], [], ["a", "b", "c"], "text_label", "h")
    production = RunPaths(tmp_path / "runs" / "20261201-000000-classification")
    fresh = candidate_config(cfg, files, version, production, continue_production=False)
    assert (fresh.data.train, fresh.data.validation, fresh.data.test) == (files["train"], files["validation"],
                                                                          files["test"])
    assert fresh.data.labels == ["a", "b", "c"] and fresh.data.format == "text_label" and fresh.data.columns == {}
    assert fresh.data.max_examples is None and fresh.train.epochs == 3 and fresh.adapter.init_from is None
    continued = candidate_config(cfg, files, version, production, continue_production=True)
    assert Path(continued.adapter.init_from) == production.root
    assert cfg.data.train == Path("x.jsonl")  # the project's own config is left as it was
