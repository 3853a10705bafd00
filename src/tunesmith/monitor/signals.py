"""From the request log and a run folder to the monitoring report: every signal against the run's own training data.

The reference is the served run's stored training split (its data folder, hashed in its
manifest), so the user supplies none. Input signals cover every request sent to the run (under
its id or its alias); output signals only the answers this run gave (an alias may have moved).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from tunesmith.config import DedupConfig, MonitorConfig, window_seconds
from tunesmith.data.prepare import Splits
from tunesmith.data.io import read_jsonl
from tunesmith.monitor.drift import (REFUSAL, domain_classifier, has_pii, label_shift, length_drift, near_duplicate_share,
                                     proportion, psi, word_count)
from tunesmith.monitor.estimate import Calibration, estimate_accuracy
from tunesmith.monitor.schema import Example, MonitorReport, Signal, Window
from tunesmith.runs.folder import RunPaths


def user_text(row: dict[str, Any]) -> str:
    """The last user message of a logged request (what the training inputs are comparable with)."""
    users = [m.get("content", "") for m in row["messages"] if m.get("role") == "user"]
    return users[-1] if users else ""


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(timezone.utc)


def _negative(rating: int) -> bool:
    """A rating on the log's 1-5 scale (thumbs down is 1) that says the answer was bad."""
    return rating <= 2


def _enough(signal: Signal, count: int, cfg: MonitorConfig) -> Signal:
    if count < cfg.min_requests and signal.status == "alert":
        signal.status = "too little traffic"
        signal.message += f" (only {count} requests; at least {cfg.min_requests} may alert)"
    return signal


def _test_signal(name: str, title: str, test: Any, threshold: float | None, count: int, cfg: MonitorConfig,
                 effect_name: str) -> Signal:
    """A test-based signal: it alerts when the test is significant and the effect reaches the threshold."""
    significant = test.p_value < cfg.alpha
    big = threshold is not None and test.effect >= threshold
    alert = significant and big
    message = (f"{effect_name} {test.effect:.3f} (threshold {threshold if threshold is not None else '–'}), "
               f"p = {test.p_value:.3g} ({'significant' if significant else 'not significant'} at {cfg.alpha:g})")
    detail = {k: v for k, v in test.detail.items() if k != "live_scores"}
    return _enough(Signal(name=name, title=title, value=round(test.effect, 6), threshold=threshold,
                          p_value=test.p_value, count=count, status="alert" if alert else "ok", message=message,
                          detail={"statistic": test.statistic, **detail}), count, cfg)


def _share_signal(name: str, title: str, k: int, n: int, threshold: float | None, cfg: MonitorConfig,
                  above: bool = True) -> Signal:
    """A share with its exact interval; it alerts when the whole interval is beyond the threshold."""
    if n == 0:
        return Signal(name=name, title=title, threshold=threshold, status="not applicable", message="no requests")
    share, low, high = proportion(k, n, 1 - cfg.alpha)
    alert = threshold is not None and (low > threshold if above else high < threshold)
    return _enough(Signal(name=name, title=title, value=round(share, 6), threshold=threshold, interval=[low, high],
                          count=n, status="alert" if alert else "ok",
                          message=f"{k} of {n} ({share:.1%}, interval {low:.1%}-{high:.1%})"), n, cfg)


def _window_rows(rows: Sequence[dict[str, Any]], seconds: float) -> list[tuple[str, list[dict[str, Any]]]]:
    if not rows:
        return []
    start = _when(rows[0]["created"]).timestamp()
    start -= start % seconds  # windows on the clock (midnight UTC for 1d), not on the first request
    buckets: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault(int((_when(r["created"]).timestamp() - start) // seconds), []).append(r)
    return [(datetime.fromtimestamp(start + k * seconds, timezone.utc).isoformat(timespec="seconds"), part)
            for k, part in sorted(buckets.items())]


class Monitor:
    """The reference side of monitoring, read once from a run folder.

    Args:
        run: The run whose traffic is monitored.
        alias: The alias it was found by, if any (requests to the alias are its traffic too).
        cfg: The monitor settings.
        dedup: The data step's dedup settings (the near-duplicate check uses the same MinHash).
        seed: Seed of the reference sample and the classifier test.
    """

    def __init__(self, run: RunPaths, alias: str | None, cfg: MonitorConfig, dedup: DedupConfig, seed: int = 0):
        self.run, self.alias, self.cfg, self.dedup, self.seed = run, alias, cfg, dedup, seed
        splits = Splits.load(run.data)
        self.train = splits.train
        self.labels = splits.labels
        self.task = "classification" if splits.labels else "generation"
        self.train_words = [word_count(ex.prompt) for ex in self.train]
        predictions = run.predictions / "tuned.jsonl"
        self.calibration = Calibration.from_predictions(list(read_jsonl(predictions))) if predictions.is_file() else None

    def traffic(self, log_rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(requests sent to this run or its alias, the ones this run answered)."""
        names = {self.run.id, self.alias} - {None}
        sent = [r for r in log_rows if r["model"] in names or r["run_id"] == self.run.id]
        return sent, [r for r in sent if r["run_id"] == self.run.id]

    # ------------------------------------------------------------------ signals

    def input_signals(self, sent: Sequence[dict[str, Any]]) -> tuple[list[Signal], list[float]]:
        """Length, domain classifier, near-duplicates, PII; with each request's held-out "live" score."""
        cfg, th = self.cfg, self.cfg.thresholds
        texts = [user_text(r) for r in sent]
        n = len(texts)
        if n < 2:
            return [Signal(name="input_length", title="Prompt length (words) against the training inputs",
                           status="not applicable", message=f"{n} request(s): nothing to compare")], []
        out = [_test_signal("input_length", "Prompt length (words) against the training inputs",
                            length_drift(self.train_words, [word_count(t) for t in texts]), th.length_psi, n, cfg,
                            "PSI")]
        reference = [ex.prompt for ex in self.train]
        if len(reference) > cfg.max_reference:
            reference = random.Random(self.seed).sample(reference, cfg.max_reference)
        domain = domain_classifier(reference, texts, seed=self.seed)
        out.append(_test_signal("input_domain", "Inputs told apart from the training inputs (classifier ROC-AUC)",
                                domain, th.domain_auc, n, cfg, "ROC-AUC"))
        share, flags = near_duplicate_share(self.train, texts, self.dedup)
        near = _share_signal("near_duplicates", "Inputs that nearly duplicate a training input", sum(flags), n,
                             th.near_duplicates_min, cfg, above=False)
        out.append(near)
        out.append(_share_signal("pii_rate", "Requests that held personal data (scrubbed before logging)",
                                 sum(has_pii(" ".join(m.get("content", "") for m in r["messages"])) for r in sent), n,
                                 th.pii_rate, cfg))
        return out, domain.detail["live_scores"]

    def output_signals(self, answered: Sequence[dict[str, Any]]) -> list[Signal]:
        """Label distribution, answers outside the labels, the label-free accuracy estimate (classification);
        answer length, empty and refusing answers (other tasks)."""
        cfg, th = self.cfg, self.cfg.thresholds
        n = len(answered)
        if self.labels:
            labels = [r["label"] for r in answered if r["label"] in self.labels]
            out = []
            if labels:
                out.append(_test_signal("label_shift", "Predicted labels against the training labels (chi-squared)",
                                        label_shift([ex.label for ex in self.train if ex.label], labels, self.labels),
                                        th.label_shift, len(labels), cfg, "total variation"))
            out.append(_share_signal("outside_labels", "Answers that are not one of the run's labels",
                                     n - len(labels), n, th.outside_labels, cfg))
            out.append(self.accuracy_signal(answered))
            return out
        lengths = [word_count(r["answer"]) for r in answered]
        targets = [word_count(ex.target) for ex in self.train]
        out = []
        if n >= 2:
            out.append(_test_signal("answer_length", "Answer length (words) against the training answers",
                                    length_drift(targets, lengths), th.length_psi, n, cfg, "PSI"))
        out.append(_share_signal("empty_answers", "Empty answers", sum(not r["answer"].strip() for r in answered), n,
                                 th.empty_answers, cfg))
        out.append(_share_signal("refusals", "Answers that refuse", sum(bool(REFUSAL.match(r["answer"]))
                                                                       for r in answered), n, th.refusals, cfg))
        return out

    def accuracy_signal(self, answered: Sequence[dict[str, Any]]) -> Signal:
        """The label-free accuracy estimate against the run's test accuracy."""
        title = "Estimated accuracy (label-free, calibrated on the test split)"
        probs = [r["probability"] for r in answered if r.get("probability") is not None]
        if self.calibration is None or not probs:
            return Signal(name="estimated_accuracy", title=title, status="not applicable",
                          message="no label probabilities (the run's predictions or the log lack them)")
        est = estimate_accuracy(self.calibration, probs, level=1 - self.cfg.alpha, seed=self.seed)
        drop = self.cfg.thresholds.accuracy_drop
        alert = drop is not None and est.high < est.reference - drop
        signal = Signal(name="estimated_accuracy", title=title, value=round(est.value, 6),
                        threshold=None if drop is None else round(est.reference - drop, 6),
                        interval=[est.low, est.high], count=est.count, status="alert" if alert else "ok",
                        message=f"{est.value:.3f} (interval {est.low:.3f}-{est.high:.3f}) against {est.reference:.3f} "
                                "on the test split", detail={"test_accuracy": est.reference})
        return _enough(signal, est.count, self.cfg)

    def feedback_signals(self, answered: Sequence[dict[str, Any]]) -> list[Signal]:
        """Ratings (the share rated down) and corrections."""
        ratings = [f["rating"] for r in answered for f in r["feedback"] if f["rating"] is not None]
        corrected = sum(any(f["correction"] for f in r["feedback"]) for r in answered)
        th = self.cfg.thresholds
        return [_share_signal("negative_feedback", "Rated answers rated down", sum(map(_negative, ratings)),
                              len(ratings), th.negative_feedback, self.cfg),
                _share_signal("corrected", "Answers users corrected", corrected, len(answered), th.corrected, self.cfg)]

    def shadow_signals(self, log_rows: Sequence[dict[str, Any]], answered: Sequence[dict[str, Any]]) -> list[Signal]:
        """Shadow answers paired with this run's (same requests): how often they agree, and on the requests users
        corrected, which of the two matched the correction (a paired exact McNemar test); canary answers beside
        this run's, by their feedback."""
        mine = {r["id"]: r for r in answered}
        pairs = [(mine[r["metadata"]["shadow_of"]], r) for r in log_rows
                 if r["metadata"].get("shadow_of") in mine]
        out = []
        if pairs:
            def key(r: dict[str, Any]) -> str:
                return r["label"] if self.labels and r["label"] else r["answer"].strip()

            agree = sum(key(a) == key(b) for a, b in pairs)
            signal = _share_signal("shadow_agreement", f"Shadow ({pairs[0][1]['model']}) answers equal to this run's",
                                   agree, len(pairs), None, self.cfg)
            judged = [(a, b, fix) for a, b in pairs
                      if (fix := next((f["correction"] for f in reversed(a["feedback"]) if f["correction"]), None))]
            if judged:
                from tunesmith.evaluate.stats import paired_shift

                diffs = [float(key(b) == fix.strip()) - float(key(a) == fix.strip()) for a, b, fix in judged]
                shift = paired_shift(diffs, level=1 - self.cfg.alpha, proportion=True, seed=self.seed)
                signal.detail.update(corrected=len(judged), shadow_right=sum(key(b) == f.strip() for _, b, f in judged),
                                     run_right=sum(key(a) == f.strip() for a, _, f in judged),
                                     difference=[shift.diff.value, shift.diff.low, shift.diff.high],
                                     p_value=shift.p_value, test=shift.test)
                signal.message += (f"; on {len(judged)} corrected requests the shadow matched the correction "
                                   f"{signal.detail['shadow_right']} times, this run {signal.detail['run_right']} "
                                   f"(p = {shift.p_value:.3g}, {shift.test})")
            out.append(signal)
        canary = [r for r in log_rows if r["metadata"].get("tunesmith_route") == "canary"
                  and r["model"] in {self.run.id, self.alias}]
        if canary:
            def down(rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
                ratings = [f["rating"] for r in rows for f in r["feedback"] if f["rating"] is not None]
                return sum(map(_negative, ratings)), len(ratings)

            (kc, nc), (kr, nr) = down(canary), down(answered)
            out.append(Signal(name="canary", title=f"Canary ({canary[0]['run_id']}) beside this run", count=len(canary),
                              status="ok", message=f"{len(canary)} requests answered by the canary; rated down "
                                                   f"{kc} of {nc} (this run: {kr} of {nr})",
                              detail={"canary_run": canary[0]["run_id"], "rated_down": [kc, nc],
                                      "run_rated_down": [kr, nr]}))
        return out

    # ------------------------------------------------------------------ time series and examples

    def windows(self, sent: Sequence[dict[str, Any]]) -> list[Window]:
        """Per window: requests, median length and its PSI, label shift, estimated accuracy, feedback."""
        out = []
        for start, part in _window_rows(sent, window_seconds(self.cfg.window)):
            words = [word_count(user_text(r)) for r in part]
            mine = [r for r in part if r["run_id"] == self.run.id]
            w = Window(start=start, requests=len(part), median_words=float(np.median(words)),
                       length_psi=round(psi(self.train_words, words), 4) if len(words) >= 5 else None)
            labels = [r["label"] for r in mine if self.labels and r["label"] in self.labels]
            if labels:
                w.label_shift = round(label_shift([ex.label for ex in self.train if ex.label], labels,
                                                  self.labels).effect, 4)
            probs = [r["probability"] for r in mine if r.get("probability") is not None]
            if self.calibration is not None and probs:
                est = estimate_accuracy(self.calibration, probs, level=1 - self.cfg.alpha, resamples=50, seed=self.seed)
                w.estimated_accuracy = [round(est.value, 4), round(est.low, 4), round(est.high, 4)]
            ratings = [f["rating"] for r in mine for f in r["feedback"] if f["rating"] is not None]
            if ratings:
                share, low, high = proportion(sum(not _negative(x) for x in ratings), len(ratings), 1 - self.cfg.alpha)
                w.positive_feedback = [round(share, 4), round(low, 4), round(high, 4)]
            w.rated = len(ratings)
            w.corrected = sum(any(f["correction"] for f in r["feedback"]) for r in mine)
            out.append(w)
        return out

    def examples(self, sent: Sequence[dict[str, Any]], answered: Sequence[dict[str, Any]],
                 live_scores: Sequence[float], k: int = 5) -> list[Example]:
        """The inputs most unlike training, the least confident answers, those rated down or corrected."""
        def ex(kind: str, r: dict[str, Any], note: str = "") -> Example:
            return Example(kind=kind, response_id=r["id"], created=r["created"], input=user_text(r), answer=r["answer"],
                           probability=r.get("probability"), note=note)

        out = [ex("unlike training", sent[i], f"held-out probability of being live traffic {live_scores[i]:.2f}")
               for i in np.argsort(live_scores)[::-1][:k]] if len(live_scores) == len(sent) else []
        confident = sorted((r for r in answered if r.get("probability") is not None), key=lambda r: r["probability"])
        out += [ex("least confident", r) for r in confident[:k]]
        for r in answered:
            notes = r["feedback"]
            fix = next((f["correction"] for f in reversed(notes) if f["correction"]), None)
            if fix is not None:
                out.append(ex("corrected", r, f"correction: {fix}"))
            elif any(f["rating"] is not None and _negative(f["rating"]) for f in notes):
                out.append(ex("rated down", r, "; ".join(f["comment"] for f in notes if f["comment"])))
        return out[: 4 * k]


def monitor_traffic(run: RunPaths, log_rows: Sequence[dict[str, Any]], cfg: MonitorConfig, dedup: DedupConfig, *,
                    alias: str | None = None, log: str = "", since: str | None = None, seed: int = 0) -> MonitorReport:
    """Every signal of the run's traffic in the log, alerts first.

    Args:
        run: The served run (its training split is the reference).
        log_rows: The request log's rows (:func:`tunesmith.monitor.requestlog.read_log`), oldest first.
        cfg: Thresholds, windows, the false-alarm rate.
        dedup: The project's dedup settings.
        alias: The alias the run was found by.
        log: The log file, for the report.
        since: The start of the period, for the report.
        seed: Seed of the sampling and permutations.

    Returns:
        The report; ``alerts`` lists the signals that alert, each as a sentence.
    """
    monitor = Monitor(run, alias, cfg, dedup, seed)
    sent, answered = monitor.traffic(log_rows)
    inputs, live_scores = monitor.input_signals(sent)
    signals = [*inputs, *monitor.output_signals(answered), *monitor.feedback_signals(answered),
               *monitor.shadow_signals(log_rows, answered)]
    alerts = [f"{s.title}: {s.message}" for s in signals if s.status == "alert"]
    return MonitorReport(run_id=run.id, alias=alias, task=monitor.task, log=log, since=since,
                         first=sent[0]["created"] if sent else None, last=sent[-1]["created"] if sent else None,
                         requests=len(sent), window=cfg.window, alpha=cfg.alpha, alerts=alerts,
                         signals=sorted(signals, key=lambda s: s.status != "alert"), windows=monitor.windows(sent),
                         examples=monitor.examples(sent, answered, live_scores),
                         generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def report_json(report: MonitorReport) -> str:
    """The report as the JSON ``report.json`` holds."""
    return json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False)
