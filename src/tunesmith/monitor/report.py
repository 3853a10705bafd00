"""The monitoring report as people read it (markdown, one self-contained HTML page, a timeline plot) and the webhook."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tunesmith.config import MonitorConfig  # noqa: E402
from tunesmith.monitor.schema import MonitorReport  # noqa: E402
from tunesmith.monitor.signals import report_json  # noqa: E402
from tunesmith.report.html import render_html  # noqa: E402
from tunesmith.report.markdown import render_markdown  # noqa: E402
from tunesmith.report.sections import Bullets, Figure, Section, Table, Text  # noqa: E402


def plot_timeline(report: MonitorReport, out: Path) -> Path | None:
    """Requests, prompt-length PSI, estimated accuracy and positive feedback per window, with their intervals."""
    w = report.windows
    if not w:
        return None
    x = list(range(len(w)))
    ticks = [p.start[:16].replace("T", " ") for p in w]
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), dpi=100, sharex=True)
    axes[0].bar(x, [p.requests for p in w], color="#1f77b4")
    axes[0].set_ylabel("requests")
    axes[1].plot(x, [p.length_psi if p.length_psi is not None else float("nan") for p in w], "o-", color="#9467bd")
    psi_threshold = report.signal("input_length").threshold if report.signal("input_length") else None
    if psi_threshold:
        axes[1].axhline(psi_threshold, color="#d62728", linestyle="--", label=f"threshold {psi_threshold:g}")
        axes[1].legend(fontsize=8)
    axes[1].set_ylabel("prompt length PSI")
    for ax, key, name, color in ((axes[2], "estimated_accuracy", "estimated accuracy", "#2ca02c"),
                                 (axes[3], "positive_feedback", "positive feedback", "#ff7f0e")):
        points = [(i, getattr(p, key)) for i, p in enumerate(w) if getattr(p, key) is not None]
        if points:
            xs, vals = zip(*points)
            ax.plot(xs, [v[0] for v in vals], "o-", color=color)
            ax.fill_between(xs, [v[1] for v in vals], [v[2] for v in vals], color=color, alpha=0.2)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(name)
    acc = report.signal("estimated_accuracy")
    if acc is not None and acc.detail.get("test_accuracy") is not None:
        axes[2].axhline(acc.detail["test_accuracy"], color="#555", linestyle=":", label="test split")
        if acc.threshold is not None:
            axes[2].axhline(acc.threshold, color="#d62728", linestyle="--", label="alert below")
        axes[2].legend(fontsize=8)
    axes[-1].set_xticks(x, ticks, rotation=30, ha="right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Traffic of {report.alias or report.run_id} per {report.window}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def monitor_sections(report: MonitorReport) -> list[Section]:
    """What the report says, alerts first."""
    who = f"{report.alias} ({report.run_id})" if report.alias else report.run_id
    head = Section(f"Monitoring {who}", level=1, blocks=[Text(
        f"{report.requests} requests from {report.first or '–'} to {report.last or '–'} in `{report.log}`, against the "
        f"run's own training split. Tests at a false-alarm rate of {report.alpha:g} each.", "muted")])
    if report.alerts:
        head.blocks.append(Text(f"**{len(report.alerts)} alert(s)**", "not met"))
        head.blocks.append(Bullets(report.alerts))
    else:
        head.blocks.append(Text("**No alerts**", "met"))
    if report.webhook:
        head.blocks.append(Text(f"Webhook: {report.webhook}", "muted"))
    rows = [[s.title, s.status, s.value, s.threshold, None if s.p_value is None else f"{s.p_value:.3g}", s.count,
             s.message] for s in report.signals]
    signals = Section("Signals", [Table(["signal", "status", "value", "threshold", "p", "requests", "detail"], rows)])
    timeline = Section("Over time", [Figure("timeline", "signals per window"), Table(
        ["window", "requests", "median words", "length PSI", "label shift", "estimated accuracy", "positive feedback",
         "corrected"],
        [[w.start, w.requests, w.median_words, w.length_psi, w.label_shift,
          None if w.estimated_accuracy is None else f"{w.estimated_accuracy[0]:.3f} [{w.estimated_accuracy[1]:.3f}, "
                                                      f"{w.estimated_accuracy[2]:.3f}]",
          None if w.positive_feedback is None else f"{w.positive_feedback[0]:.2f} of {w.rated}", w.corrected]
         for w in report.windows])])
    examples = Section("Examples worth a look", [Table(["kind", "input", "answer", "probability", "note"], [
        [e.kind, e.input, e.answer, e.probability, e.note] for e in report.examples])] if report.examples
        else [Text("None.", "muted")])
    labels = report.signal("label_shift")
    sections = [head, signals, timeline, examples]
    if labels is not None and labels.detail.get("most_changed"):
        sections.insert(2, Section("Labels that moved most", [Table(["label", "training share", "live share"], [
            [m["label"], m["training"], m["live"]] for m in labels.detail["most_changed"]])]))
    return sections


def write_monitor_report(report: MonitorReport, out: Path) -> dict[str, Path]:
    """Write report.json, report.md, report.html and timeline.png into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {"timeline": p} if (p := plot_timeline(report, out / "timeline.png")) else {}
    sections = monitor_sections(report)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(report_json(report), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(sections, plots), encoding="utf-8")
    paths["html"].write_text(render_html(sections, plots), encoding="utf-8")
    return {**paths, **plots}


def post_webhook(report: MonitorReport, cfg: MonitorConfig, report_path: Path | None = None) -> str | None:
    """POST the alerts as JSON to ``monitor.webhook``; a failure is reported, never raised (the alert still exits non-zero).

    Returns:
        What happened (``sent (HTTP 200)``, ``failed: ...``), or None when no webhook is set or nothing alerts.
    """
    if not cfg.webhook or not report.alerts:
        return None
    body = json.dumps({"text": f"tunesmith monitor: {len(report.alerts)} alert(s) for {report.alias or report.run_id}",
                       "run_id": report.run_id, "alias": report.alias, "alerts": report.alerts,
                       "requests": report.requests, "report": str(report_path) if report_path else None}).encode()
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(cfg.webhook_token_env)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(cfg.webhook, body, headers, method="POST"), timeout=10) as r:
            return f"sent (HTTP {r.status})"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"failed: {getattr(exc, 'reason', exc)}"
