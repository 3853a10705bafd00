"""The task registry: each task's entry is complete and consistent, and a new one needs only its entry."""

import pytest

from tunesmith.config import load_config
from tunesmith.errors import ConfigError
from tunesmith.evaluate.metrics import METRICS, check_metric
from tunesmith.data.prepare import prepare_splits, small_test_warnings
from tunesmith.project import init_project
from tunesmith.tasks import TASKS, TaskType, get_task, register_task


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_names_registered_metrics_and_has_a_runnable_example(name, tmp_path):
    task = get_task(name)
    assert set(task.allowed_metrics) <= set(METRICS)
    for metric in task.allowed_metrics:
        check_metric(name, metric)  # every metric it lists may judge it
    cfg, base = load_config(init_project(tmp_path / name, name))
    assert cfg.objective.task == name and cfg.objective.primary_metric == task.primary_metric
    # big enough to decide: the test split reaches the minimum for intervals, and little is thrown away
    splits = prepare_splits(cfg, base)
    assert len(splits.test) >= cfg.eval.min_test_examples and not small_test_warnings(cfg, splits)
    acc = splits.accounting()
    assert acc["rejected"] == 0 and sum(acc["removed"].values()) <= 0.02 * acc["rows_read"]
    if name == "qa":  # a passage's questions stay in one split
        seen = {ex.context: "train" for ex in splits.train}
        assert not any(ex.context in seen for ex in splits.test + splits.validation)


def test_unknown_task_and_misfit_metric_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        get_task("clasification")
    with pytest.raises(ConfigError, match="does not apply to task 'classification'"):
        check_metric("classification", "bleu")


def test_a_new_task_is_one_entry(monkeypatch):
    monkeypatch.setattr("tunesmith.tasks.TASKS", dict(TASKS))
    extraction = register_task(TaskType(
        name="extraction", summary="Fill a JSON record from text.", metrics=("json_field_accuracy", "json_valid"),
        primary_metric="json_field_accuracy", example_score="json_field_accuracy",
        system_prompt="Extract the fields as JSON.", preset={}, example_name="extraction-example"))
    assert get_task("extraction") is extraction
    check_metric("extraction", "json_valid")
    with pytest.raises(ValueError, match="already registered"):
        register_task(extraction)
