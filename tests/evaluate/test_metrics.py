"""Metrics: golden values, and parity with the reference implementations on the same inputs."""

import collections
import re
import string

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from tunesmith.errors import ConfigError
from tunesmith.evaluate.metrics import METRICS, check_metric, compute_metrics
from tunesmith.tasks import TASKS as TASK_TYPES
from tunesmith.evaluate.normalize import label_key, match_label


# --- the official SQuAD v1.1 evaluation functions, verbatim in logic, as the reference
def _official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction, ground_truth):
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _official_em(prediction, ground_truth):
    return _official_normalize(prediction) == _official_normalize(ground_truth)


def _max_over(fn, prediction, ground_truths):
    return max(fn(prediction, gt) for gt in ground_truths)


QA_PREDS = ["The cat sat", "Paris", "in 1990!", "", "seven working days", "a  b c"]
QA_REFS = [["cat sat on the mat"], ["paris", "Paris, France"], ["1990"], ["nothing"], ["7 working days", "seven days"], ["a b c"]]


def test_squad_metrics_match_the_official_script():
    f1 = METRICS["token_f1"].fn(QA_PREDS, QA_REFS)
    em = METRICS["exact_match"].fn(QA_PREDS, QA_REFS)
    ref_f1 = sum(_max_over(_official_f1, p, r) for p, r in zip(QA_PREDS, QA_REFS)) / len(QA_PREDS)
    ref_em = sum(_max_over(_official_em, p, r) for p, r in zip(QA_PREDS, QA_REFS)) / len(QA_PREDS)
    assert f1 == pytest.approx(ref_f1)
    assert em == pytest.approx(ref_em)


def test_squad_golden_values():
    assert METRICS["token_f1"].fn(["the cat sat"], ["cat sat on mat"]) == pytest.approx(2 / 3)
    assert METRICS["exact_match"].fn(["The Answer."], ["answer"]) == 1.0


def test_classification_metrics():
    preds = ["a", "a", "b", "", "c", "c"]
    refs = ["a", "b", "b", "c", "c", "c"]
    assert METRICS["accuracy"].fn(preds, refs) == pytest.approx(4 / 6)
    assert METRICS["macro_f1"].fn(preds, refs) == pytest.approx(f1_score(refs, preds, labels=["a", "b", "c"], average="macro"))
    # golden: a: P=1/2 R=1 F=2/3; b: P=1 R=1/2 F=2/3; c: P=1 R=2/3 F=4/5
    assert METRICS["macro_f1"].fn(preds, refs) == pytest.approx((2 / 3 + 2 / 3 + 4 / 5) / 3)
    assert METRICS["accuracy"].fn(preds, refs) == pytest.approx(accuracy_score(refs, preds))


@pytest.mark.parametrize("name, reference", [
    ("precision_macro", lambda t, p, L: precision_score(t, p, labels=L, average="macro", zero_division=0)),
    ("recall_macro", lambda t, p, L: recall_score(t, p, labels=L, average="macro", zero_division=0)),
    ("precision_micro", lambda t, p, L: precision_score(t, p, labels=L, average="micro", zero_division=0)),
    ("recall_micro", lambda t, p, L: recall_score(t, p, labels=L, average="micro", zero_division=0)),
    ("micro_f1", lambda t, p, L: f1_score(t, p, labels=L, average="micro", zero_division=0)),
])
def test_precision_recall_f1_match_scikit_learn(name, reference):
    preds = ["a", "a", "b", "", "c", "c", "b", "a"]
    refs = ["a", "b", "b", "c", "c", "c", "a", "a"]
    assert METRICS[name].fn(preds, refs) == pytest.approx(reference(refs, preds, ["a", "b", "c"]))
    # the unparseable answer counts against recall, not as a class: micro precision 5/7, recall 5/8
    assert METRICS["precision_micro"].fn(preds, refs) == pytest.approx(5 / 7)


SUM_PREDS = ["the agent resent the card by post", "the customer has a blocked pin"]
SUM_REFS = ["Ana has not received her card; the agent resent the card by express post.",
            "Ben has a blocked PIN; the agent explained how to unblock it."]


@pytest.mark.parametrize("kind", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
def test_rouge_matches_rouge_score(kind):
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    # rougeLsum wants one sentence per line; tunesmith splits after . ! and ?
    split = (lambda t: "\n".join(re.split(r"(?<=[.!?])\s+", t))) if kind == "rougeLsum" else (lambda t: t)
    preds, refs = SUM_PREDS + ["It worked. Then it broke."], SUM_REFS + ["It worked. Later it broke again."]
    expected = sum(scorer.score(split(r), split(p))[kind].fmeasure for p, r in zip(preds, refs)) / 3
    assert METRICS[kind].fn(preds, refs) == pytest.approx(expected)


def test_bleu_matches_sacrebleu():
    assert METRICS["bleu"].fn(SUM_PREDS, SUM_REFS) == pytest.approx(sacrebleu.corpus_bleu(SUM_PREDS, [SUM_REFS]).score)
    assert METRICS["bleu"].fn(SUM_REFS, SUM_REFS) == pytest.approx(100.0)


def test_chrf_matches_sacrebleu():
    assert METRICS["chrf"].fn(SUM_PREDS, SUM_REFS) == pytest.approx(sacrebleu.corpus_chrf(SUM_PREDS, [SUM_REFS]).score)


@pytest.mark.parametrize("pred, ref, valid, fields", [
    ('{"name": "Ana", "city": "Leeds"}', '{"name": "Ana", "city": "York"}', 1.0, 0.5),
    ('```json\n{"name": "Ana"}\n```', '{"name": "Ana"}', 1.0, 1.0),
    ("name: Ana", '{"name": "Ana"}', 0.0, 0.0),
    ('[1, 2]', '[1, 2]', 1.0, 1.0),
])
def test_json_metrics(pred, ref, valid, fields):
    assert METRICS["json_valid"].fn([pred], [ref]) == valid
    assert METRICS["json_field_accuracy"].fn([pred], [ref]) == fields


def test_multiple_references_take_the_best():
    assert METRICS["rougeL"].fn(["blocked pin"], [["something else", "blocked pin"]]) == pytest.approx(1.0)


@pytest.mark.parametrize("task", sorted(TASK_TYPES))
def test_every_task_has_metrics(task):
    out = compute_metrics(task, ["x"], ["x"])
    assert set(out) == set(TASK_TYPES[task].metrics)


def test_check_metric_names_the_key():
    check_metric("classification", "accuracy")
    check_metric("qa", "perplexity")
    with pytest.raises(ConfigError, match="objective.metric: unknown metric 'acuracy'; did you mean 'accuracy'"):
        check_metric("classification", "acuracy")
    with pytest.raises(ConfigError, match="does not apply to task 'classification'"):
        check_metric("classification", "bleu")


@pytest.mark.parametrize("generated, expected", [
    ("card_arrival", "card_arrival"),
    ("Card arrival.", "card_arrival"),
    ("  pin-blocked\nbecause...", "pin_blocked"),
    ("The label is exchange_rate", "exchange_rate"),
    ("card_arrival or pin_blocked", None),
    ("I don't know", None),
    ("", None),
])
def test_label_matching(generated, expected):
    assert match_label(generated, ["card_arrival", "pin_blocked", "exchange_rate"]) == expected
    assert label_key("Top Up-Limits") == "top_up_limits"


@pytest.mark.parametrize("name", ["macro_f1", "micro_f1", "precision_macro", "recall_macro", "precision_micro",
                                  "recall_micro", "bleu", "chrf"])
def test_sufficient_statistics_give_the_same_score(name):
    m = METRICS[name]
    if name in ("bleu", "chrf"):
        preds, refs = SUM_PREDS + ["It worked. Then it broke."], SUM_REFS + ["It worked. Later it broke again."]
    else:
        preds, refs = ["a", "a", "b", "", "c", "c", "b", "a"], ["a", "b", "b", "c", "c", "c", "a", "a"]
    assert m.from_stats(m.stats(preds, refs).sum(axis=0)) == pytest.approx(m.fn(preds, refs))
