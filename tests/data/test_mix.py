"""Multi-task data (data.mix): per-source reading and splitting, weighted training shares, accounting, config errors."""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_classification_data
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data.examples import Example
from tunesmith.data.mix import mix_counts, mix_train
from tunesmith.data.prepare import Splits, prepare_splits
from tunesmith.errors import ConfigError, DataError

FAQ_PROMPT = "Answer as the bank's help page would."


def write_faq(path: Path, n: int = 30, bad_line: int | None = None) -> Path:
    """A CSV of question/reply rows (prompt/response under other column names); ``bad_line`` gets an empty reply."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "reply"])
        for i in range(n):
            w.writerow([f"How do I change setting number {i} in the app?", "" if i + 2 == bad_line else f"Open settings, then item {i}."])
    return path


MIX = f"""
project: {{seed: 7}}
data:
  dedup: {{near: false}}
  mix:
    - {{path: intent/train.jsonl, task: intent, weight: 3}}
    - {{path: faq/faq.csv, task: faq, weight: 1, task_type: qa, format: prompt_response,
        columns: {{prompt: question, response: reply}}, system_prompt: "{FAQ_PROMPT}"}}
"""


def project(tmp_path: Path, text: str = MIX, bad_line: int | None = None) -> Path:
    write_classification_data(tmp_path / "intent" / "train.jsonl")  # 54 rows, 3 labels
    write_faq(tmp_path / "faq" / "faq.csv", bad_line=bad_line)  # 30 rows
    (tmp_path / "tunesmith.yaml").write_text(text)
    return tmp_path / "tunesmith.yaml"


def alone(tmp_path: Path, text: str) -> Splits:
    """One source prepared as a project of its own."""
    (tmp_path / "alone.yaml").write_text(text)
    cfg, base = load_config(tmp_path / "alone.yaml")
    return prepare_splits(cfg, base)


def content(examples) -> Counter:
    return Counter((ex.prompt, ex.target) for ex in examples)


def test_weights_set_the_training_shares_and_evaluation_is_split_per_source(tmp_path):
    cfg, base = load_config(project(tmp_path))
    splits = prepare_splits(cfg, base)
    shares = Counter(ex.meta["task"] for ex in splits.train)
    total = len(splits.train)
    assert abs(shares["intent"] / total - 0.75) <= 1 / total and abs(shares["faq"] / total - 0.25) <= 1 / total
    # Validation and test are each source's own 80/10/10 split, never resampled.
    intent = alone(tmp_path, "project: {seed: 7}\ndata: {train: intent/train.jsonl, dedup: {near: false}}\n")
    faq = alone(tmp_path, "project: {seed: 7}\nobjective: {task: qa}\ndata: {train: faq/faq.csv, format: prompt_response, "
                          "columns: {prompt: question, response: reply}, dedup: {near: false}}\n")
    for name in ("validation", "test"):
        part = getattr(splits, name)
        assert content(ex for ex in part if ex.meta["task"] == "intent") == content(getattr(intent, name))
        assert content(ex for ex in part if ex.meta["task"] == "faq") == content(getattr(faq, name))
        assert not any("#copy" in ex.id for ex in part)
    assert {ex.meta["task"] for ex in splits.test} == {"intent", "faq"}
    # Training draws only on each source's own training split.
    assert set(content(ex for ex in splits.train if ex.meta["task"] == "intent")) <= set(content(intent.train))
    assert set(content(ex for ex in splits.train if ex.meta["task"] == "faq")) <= set(content(faq.train))
    assert splits.tasks["intent"]["available"] == len(intent.train) and splits.tasks["faq"]["available"] == len(faq.train)
    assert [splits.tasks[t]["test"] for t in ("intent", "faq")] == [len(intent.test), len(faq.test)]


def test_each_task_keeps_its_own_system_prompt_labels_and_ids(tmp_path):
    cfg, base = load_config(project(tmp_path))
    splits = prepare_splits(cfg, base)
    everything = splits.train + splits.validation + splits.test
    intent = [ex for ex in everything if ex.meta["task"] == "intent"]
    faq = [ex for ex in everything if ex.meta["task"] == "faq"]
    assert {ex.system for ex in intent} == {"Classify the message. Answer with one label only, from: "
                                            "card_arrival, exchange_rate, pin_blocked."}
    assert {ex.system for ex in faq} == {FAQ_PROMPT} and {ex.label for ex in faq} == {None}
    assert splits.system_prompt is None and splits.format == "mix"
    assert splits.tasks["intent"]["type"] == "classification" and splits.tasks["faq"]["type"] == "qa"
    assert splits.tasks["intent"]["labels"] == splits.labels == ["card_arrival", "exchange_rate", "pin_blocked"]
    assert splits.tasks["faq"]["labels"] is None and splits.tasks["faq"]["format"] == "prompt_response"
    assert len({ex.id for ex in everything}) == len(everything)
    assert all(ex.id.startswith(ex.meta["task"] + "/") for ex in everything)


def test_rows_read_equal_kept_plus_set_aside_plus_removed(tmp_path):
    cfg, base = load_config(project(tmp_path, bad_line=5))  # one faq row with an empty reply
    splits = prepare_splits(cfg, base)
    acc = splits.accounting()
    assert acc["rows_read"] == 54 + 30
    assert acc["rows_read"] == acc["kept"] + acc["rejected"] + sum(acc["removed"].values())
    assert acc["oversampled"] == sum("#copy" in ex.id for ex in splits.train) > 0  # intent is weighted above its size
    assert acc["removed"]["mix"] == splits.tasks["faq"]["available"] - splits.tasks["faq"]["train"] > 0
    (bad,) = splits.rejected
    assert bad.source.endswith("faq.csv") and bad.line == 5 and "reply" in bad.reason
    # Saved and loaded again, the mix keeps its tasks.
    splits.save(tmp_path / "saved")
    loaded = Splits.load(tmp_path / "saved")
    assert loaded.tasks == json.loads(json.dumps(splits.tasks)) and loaded.data_hash() == splits.data_hash()


def test_a_source_error_names_the_source_file_and_line(tmp_path):
    cfg, base = load_config(project(tmp_path, bad_line=5), ["data.strict=true"])
    with pytest.raises(DataError, match=r"(?s)data.mix\[1\] \(task 'faq'\).*faq.csv:5: field 'reply': empty value"):
        prepare_splits(cfg, base)
    cfg, base = load_config(project(tmp_path, MIX.replace("task_type: qa, format: prompt_response", "task_type: classification")))
    with pytest.raises(DataError, match=r"data.mix\[1\] \(task 'faq'\).*needs labelled rows"):
        prepare_splits(cfg, base)


def test_the_mix_is_deterministic_for_the_seed(tmp_path):
    cfg, base = load_config(project(tmp_path))
    first, again = prepare_splits(cfg, base), prepare_splits(cfg, base)
    assert first.data_hash() == again.data_hash()
    cfg, base = load_config(tmp_path / "tunesmith.yaml", ["project.seed=8"])
    assert prepare_splits(cfg, base).data_hash() != first.data_hash()


def examples(tag: str, n: int) -> list[Example]:
    return [Example(id=f"{tag}/{i}", prompt=f"{tag} {i}", target="x", meta={"task": tag}) for i in range(n)]


def test_oversampling_repeats_evenly_and_undersampling_drops_the_rest():
    mixed = mix_train(examples("a", 10) + examples("b", 10), {"a": 3, "b": 1}, seed=0)
    by_task = Counter(ex.meta["task"] for ex in mixed.train)
    assert by_task == {"a": 15, "b": 5} and mixed.copies == 5 and len(mixed.dropped) == 5
    originals = Counter(ex.id.split("#")[0] for ex in mixed.train if ex.meta["task"] == "a")
    assert set(originals.values()) == {1, 2} and len(originals) == 10  # every original kept, none copied twice
    assert {ex.id for ex in mixed.dropped}.isdisjoint(ex.id for ex in mixed.train)
    even = mix_train(examples("a", 30) + examples("b", 10), {"a": 1, "b": 1}, seed=0)
    copies_of_b = Counter(ex.id.split("#")[0] for ex in even.train if ex.meta["task"] == "b")
    assert set(copies_of_b.values()) == {2} and even.copies == 10 and len(even.dropped) == 10
    assert mixed.counts["a"] == {"available": 10, "train": 15, "share": 0.75}


@pytest.mark.parametrize("available, weights", [({"a": 7, "b": 5, "c": 1}, {"a": 1, "b": 1, "c": 1}),
                                                ({"a": 100, "b": 3}, {"a": 1, "b": 1000}),
                                                ({"a": 9, "b": 9}, {"a": 1e-9, "b": 1})])
def test_counts_follow_weights_within_rounding_and_keep_every_task(available, weights):
    counts = mix_counts(available, weights)
    total, weight_sum = sum(available.values()), sum(weights.values())
    assert all(n >= 1 for n in counts.values())
    assert sum(counts.values()) - total <= sum(1 for t in counts if total * weights[t] / weight_sum < 1)
    for t, n in counts.items():
        assert abs(n - total * weights[t] / weight_sum) < 1 or n == 1


@pytest.mark.parametrize("data, expected", [
    ("  train: x.jsonl\n  mix: [{path: a.jsonl, task: intent}]\n", "data: give data.train or data.mix, not both"),
    ("  mix: [{path: a.jsonl, task: intent, weight: 0}]\n", "data.mix.0.weight: Input should be greater than 0"),
    ("  mix: [{path: a.jsonl, task: intent, weight: -1}]\n", "data.mix.0.weight: Input should be greater than 0"),
    ("  mix: [{path: a.jsonl, task: intent}, {path: b.jsonl, task: intent}]\n", "task tags in data.mix must be unique; repeated: intent"),
    ("  mix: [{path: a.jsonl, task: intent, wieght: 2}]\n", "did you mean 'data.mix.0.weight'?"),
    ("  format: qa\n  mix: [{path: a.jsonl, task: intent}]\n", "set data.format on each source of the mix"),
    ("  test: t.jsonl\n  validation: v.jsonl\n  mix: [{path: a.jsonl, task: intent}]\n", "data.validation and data.test cannot"),
    ("  balance: {strategy: oversample}\n  mix: [{path: a.jsonl, task: intent}]\n", "data.balance.strategy must be none"),
    ("  mix: []\n", "data.mix needs at least one source"),
])
def test_bad_mix_config_is_a_clear_error(tmp_path, data, expected):
    path = tmp_path / "tunesmith.yaml"
    path.write_text("data:\n" + data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_cli_reports_a_bad_mix_with_exit_code_2_and_data_check_reads_files_instead(tmp_path):
    path = tmp_path / "tunesmith.yaml"
    path.write_text("data:\n  train: x.jsonl\n  mix: [{path: a.jsonl, task: intent}]\n")
    result = CliRunner().invoke(app, ["data", "prepare", "-c", str(path), "--json"])
    assert result.exit_code == 2 and "give data.train or data.mix, not both" in result.output.replace("\n", "")
    # data check FILE reads FILE, whatever the project's mix says.
    project(tmp_path)
    data = tmp_path / "intent" / "train.jsonl"
    result = CliRunner().invoke(app, ["data", "check", str(data), "-c", str(tmp_path / "tunesmith.yaml"), "--no-tokens",
                                      "--out", str(tmp_path / "report"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows_read"] == 54


def test_data_prepare_json_shows_the_tasks(tmp_path, tiny_model_dir):
    project(tmp_path, MIX + f"model: {{base: '{tiny_model_dir}', max_seq_len: 96}}\n")
    result = CliRunner().invoke(app, ["data", "prepare", "-c", str(tmp_path / "tunesmith.yaml"), "--out",
                                      str(tmp_path / "prepared"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["adds_up"] and set(summary["tasks"]) == {"intent", "faq"}
    assert summary["tasks"]["faq"]["preview"]["text"].count(FAQ_PROMPT) == 1  # rendered with its own system prompt
    intent = summary["tasks"]["intent"]
    assert abs(intent["share"] - 0.75) <= 1 / summary["splits"]["train"]
    assert (f"Training shares after mixing: intent {intent['share']:.0%} (weight 3: {intent['available']} examples -> "
            f"{intent['train']})") in (tmp_path / "prepared" / "data_report.md").read_text()
