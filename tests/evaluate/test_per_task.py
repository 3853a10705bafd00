"""Per-task scoring and metrics of a data.mix run, checked against the metrics computed directly."""

import random

import pytest

from tunesmith.data.examples import Example
from tunesmith.evaluate.analysis import paired_comparisons, references
from tunesmith.evaluate.metrics import METRICS
from tunesmith.tasks import get_task
from tunesmith.evaluate.per_task import metrics_by_task, per_task, scoring, task_metric
from tunesmith.report.per_task import HEADER, per_task_table

TASKS = {"intent": {"type": "classification", "weight": 3.0, "labels": ["a", "b"]},
         "faq": {"type": "qa", "weight": 1.0, "labels": None}}


def rows(seed: int, good: float) -> list[dict]:
    """Prediction rows of both tasks; each answer is right with probability ``good``."""
    rng = random.Random(seed)
    out = []
    for i in range(40):
        if i % 2:
            label = rng.choice(["a", "b"])
            pred = label if rng.random() < good else ("b" if label == "a" else "a")
            out.append({"id": f"intent/{i}", "label": label, "reference": label, "prediction": pred,
                        "meta": {"task": "intent"}, "task_type": "classification"})
        else:
            ref = f"open item {i} in settings"
            pred = ref if rng.random() < good else f"call us about {i}"
            out.append({"id": f"faq/{i}", "label": None, "reference": ref, "prediction": pred, "meta": {"task": "faq"},
                        "task_type": "qa"})
    return out


def test_each_example_is_scored_as_its_own_task():
    intent = Example(id="1", prompt="p", target="a", label="a", meta={"task": "intent"})
    faq = Example(id="2", prompt="q", target="x", meta={"task": "faq"})
    assert scoring(intent, "qa", ["z"], TASKS) == ("classification", ["a", "b"])
    assert scoring(faq, "classification", ["z"], TASKS) == ("qa", None)
    assert scoring(faq, "classification", ["z"], None) == ("classification", ["z"])  # a single dataset
    # A row's own type decides what it is scored against, whatever the run's task.
    assert references(rows(0, 1.0)[:2], "classification") == ["open item 0 in settings", rows(0, 1.0)[1]["label"]]


def test_leading_metric_is_the_objectives_where_it_applies():
    assert task_metric("classification", "accuracy") == "accuracy"
    assert task_metric("qa", "accuracy") == "token_f1"
    assert task_metric("summarization", "rougeL") == "rougeL"
    assert task_metric("classification", "loss") == "accuracy"


def test_per_task_metrics_equal_the_metrics_on_each_tasks_rows():
    base, tuned = rows(1, 0.3), rows(2, 0.9)
    report = per_task(TASKS, base, tuned, "accuracy", resamples=200, seed=0, level=0.95, min_count=10)
    assert [t["task"] for t in report] == ["intent", "faq"]
    by_task = metrics_by_task(tuned, TASKS)
    for entry in report:
        tag, kind = entry["task"], TASKS[entry["task"]]["type"]
        mine_t = [r for r in tuned if r["meta"]["task"] == tag]
        mine_b = [r for r in base if r["meta"]["task"] == tag]
        assert entry["count"] == len(mine_t) == 20 and set(entry["metrics"]) == set(get_task(kind).metrics)
        refs = [r["label"] if kind == "classification" else r["reference"] for r in mine_t]
        for name, m in entry["metrics"].items():
            expected = METRICS[name].fn([r["prediction"] for r in mine_t], refs)
            assert m["tuned"]["value"] == pytest.approx(expected) == pytest.approx(by_task[tag][name])
            assert m["baseline"]["value"] == pytest.approx(METRICS[name].fn([r["prediction"] for r in mine_b], refs))
            assert m["tuned"]["low"] <= m["tuned"]["value"] <= m["tuned"]["high"]
            assert m["diff"]["low"] <= m["diff"]["value"] <= m["diff"]["high"] and 0 < m["p_value"] <= 1
        # the same paired comparison as the run's own, restricted to the task's rows
        direct = paired_comparisons(kind, [entry["metric"]], mine_b, mine_t, resamples=200, seed=0, level=0.95,
                                    min_count=10)
        assert entry["metrics"][entry["metric"]] == direct[entry["metric"]].to_dict()
    assert report[0]["metric"] == "accuracy" and report[1]["metric"] == "token_f1"
    # 20 rows per task are under the default minimum: token F1 then has no interval, accuracy an exact one
    small = per_task(TASKS, base, tuned, "accuracy", resamples=200, seed=0, level=0.95)
    assert small[1]["metrics"]["token_f1"]["tuned"]["method"] == "none"
    assert small[0]["metrics"]["accuracy"]["tuned"]["method"] == "exact"


def test_without_a_baseline_or_test_rows():
    tuned = [r for r in rows(3, 0.5) if r["meta"]["task"] == "intent"]
    report = per_task(TASKS, None, tuned, "accuracy", resamples=200, seed=0, level=0.95)
    assert set(report[0]["metrics"]["accuracy"]) == {"tuned"}
    assert report[1]["count"] == 0 and report[1]["metrics"] == {}
    header, table = per_task_table(report)
    assert header == HEADER and all(len(row) == len(HEADER) for row in table)
    assert table[0][4] == "accuracy (leading)" and table[-1][:5] == ["faq", "qa", "1", 0, "no test examples"]
