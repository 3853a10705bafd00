"""The data report of ``tunesmith data check``: a JSON summary, markdown, and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402

from tunesmith.data.prepare import Splits  # noqa: E402
from tunesmith.report.per_task import shares_sentence  # noqa: E402


def data_summary(splits: Splits, data_hash: str | None = None) -> dict[str, Any]:
    """The figures a script needs: where every row went, duplicates, conflicts, PII, leakage.

    Args:
        splits: The prepared splits.
        data_hash: Their hash when already computed (hashing 100k rows takes a while).
    """
    acc = splits.accounting()
    removed = acc["removed"]
    return {
        "rows_read": acc["rows_read"],
        "rows_kept": acc["kept"],
        "rejected": acc["rejected_by_reason"],
        "removed": removed,
        "duplicates_exact": removed.get("duplicate_exact", 0),
        "duplicates_near": removed.get("duplicate_near", 0),
        "conflicts": acc["conflicts"],
        "pii": acc["pii"],
        "pii_policy": acc["pii_policy"],
        "leakage": acc["leakage_found"],
        "splits": splits.counts(),
        "format": splits.format,
        "labels": dict(Counter(ex.label for part in (splits.train, splits.validation, splits.test)
                               for ex in part if ex.label is not None).most_common()) if splits.labels else None,
        "warnings": acc["warnings"],
        "adds_up": acc["rows_read"] == acc["kept"] + acc["rejected"] + sum(removed.values()),
        "oversampled": acc["oversampled"],
        "columns": splits.columns,
        "tokens": splits.lengths,
        "balance": splits.balance,
        "preview": splits.preview,
        "data_hash": data_hash or splits.data_hash(),
        **({"tasks": splits.tasks} if splits.tasks else {}),
    }


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plots(splits: Splits, summary: dict[str, Any]) -> dict[str, bytes]:
    examples = splits.train + splits.validation + splits.test
    plots: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if splits.length_values:
        limit = next(iter(splits.lengths.values()))["max_seq_len"]
        ax.hist(splits.length_values, bins=40, color="#1f77b4")
        ax.axvline(limit, color="#d62728", linestyle="--", label=f"max_seq_len {limit}")
        ax.set_xlabel("tokens (chat template included)")
        ax.set_title("Token length of examples, measured with the model's tokenizer")
    else:
        ax.hist([len(ex.prompt.split()) for ex in examples], bins=30, alpha=0.7, label="prompt")
        ax.hist([len(ex.target.split()) for ex in examples], bins=30, alpha=0.7, label="answer")
        ax.set_xlabel("words")
        ax.set_title("Length of kept examples")
    ax.set_ylabel("examples")
    ax.legend()
    plots["lengths"] = _png(fig)
    if summary["labels"]:
        labels = summary["labels"]
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.25 * len(labels))))
        ax.barh(list(labels)[::-1], list(labels.values())[::-1], color="#2ca02c")
        ax.set_title("Label distribution")
        plots["labels"] = _png(fig)
    reasons = {**{f"set aside: {k}": v for k, v in summary["rejected"].items()},
               **{f"removed: {k}": v for k, v in summary["removed"].items()}}
    if reasons:
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(reasons))))
        ax.barh(list(reasons)[::-1], list(reasons.values())[::-1], color="#d62728")
        ax.set_title("Rows not kept, by reason")
        plots["reasons"] = _png(fig)
    return plots


def _check_rows(summary: dict[str, Any]) -> list[tuple[str, int]]:
    rows = [(f"set aside: {k}", v) for k, v in summary["rejected"].items()]
    rows += [(f"removed: {k}", v) for k, v in summary["removed"].items()]
    rows += [("conflicts (same input, different answers)", summary["conflicts"]),
             ("leakage (evaluation example near a training input)", summary["leakage"])]
    rows += [(f"PII {k} ({summary['pii_policy']})", v) for k, v in summary["pii"].items()]
    rows += [(f"{split} examples over max_seq_len {t['max_seq_len']} ({t['policy']})", t["over_max_seq_len"])
             for split, t in summary["tokens"].items()]
    if summary["oversampled"]:
        rows.append(("copies added by oversampling (not counted as kept)", summary["oversampled"]))
    return rows


def _facts(summary: dict[str, Any]) -> list[str]:
    """One-line facts shown above the table: mapping, token lengths, balance, data hash."""
    mapping = ", ".join(f if f == c else f"{f} <- {c}" for f, c in summary["columns"].items())
    facts = [f"Fields: {mapping}.", f"Data hash: {summary['data_hash']}."]
    for split, t in summary["tokens"].items():
        if t.get("count"):
            facts.append(f"{split} tokens: median {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}.")
    if summary.get("tasks"):
        facts.append(shares_sentence(summary["tasks"]))
    b = summary["balance"]
    if b:
        facts.append(f"Class balance ({b['strategy']}): imbalance ratio {b['imbalance_ratio']}"
                     + (f", after {b['imbalance_ratio_after']}." if b["strategy"] in ("oversample", "undersample") else "."))
    return facts


def _markdown(summary: dict[str, Any]) -> str:
    lines = ["# Data report", "",
             f"Format `{summary['format']}`. Rows read **{summary['rows_read']}** = kept **{summary['rows_kept']}** + "
             f"set aside **{sum(summary['rejected'].values())}** + removed **{sum(summary['removed'].values())}**"
             f" ({'adds up' if summary['adds_up'] else 'DOES NOT ADD UP'}).", "",
             f"Splits: {summary['splits']}.", "", *[f"- {f}" for f in _facts(summary)], "",
             "| check | count |", "|---|---|"]
    lines += [f"| {name} | {n} |" for name, n in _check_rows(summary)]
    if summary["labels"]:
        lines += ["", "| label | examples |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary["labels"].items()]
    if summary["preview"]:
        p = summary["preview"]
        lines += ["", f"One example (`{p['id']}`) exactly as training sees it; the loss covers `{p['loss_on']}`:", "",
                  "```", p["text"], "```"]
    lines += ["", *[f"- warning: {w}" for w in summary["warnings"]]]
    lines += ["", "Plots: `lengths.png`, `labels.png`, `reasons.png`; rows set aside: `rejected.jsonl`; "
              "rows removed: `removed.jsonl`.", ""]
    return "\n".join(lines)


def _html(summary: dict[str, Any], plots: dict[str, bytes]) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{n}</td></tr>" for name, n in _check_rows(summary))
    images = "".join(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
                     for name, png in plots.items())
    status = "adds up" if summary["adds_up"] else "DOES NOT ADD UP"
    p = summary["preview"]
    preview = (f"<h2>One example as training sees it</h2><pre>{html.escape(p['text'])}</pre>"
               f"<p>The loss covers: <code>{html.escape(p['loss_on'])}</code></p>") if p else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith data report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:4px 10px}}img{{max-width:100%}}
.big{{font-size:1.2em}}</style></head><body>
<h1>Data report</h1>
<p class="big">Format <code>{html.escape(summary['format'])}</code>. Rows read <b>{summary['rows_read']}</b> = kept
<b>{summary['rows_kept']}</b> + set aside <b>{sum(summary['rejected'].values())}</b> + removed
<b>{sum(summary['removed'].values())}</b> ({status}).</p>
<p>Splits: {html.escape(str(summary['splits']))}</p>
<ul>{"".join(f"<li>{html.escape(f)}</li>" for f in _facts(summary))}</ul>
<table>{rows}</table>
{preview}
{images}
</body></html>
"""


def write_data_report(splits: Splits, out: Path) -> dict[str, Any]:
    """Write ``data_report.md``, ``data_report.html``, the plots and the set-aside/removed rows into ``out``.

    Returns:
        The summary.
    """
    out.mkdir(parents=True, exist_ok=True)
    manifest = splits.save(out)
    summary = data_summary(splits, manifest["data_hash"])
    plots = _plots(splits, summary)
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    md = _markdown(summary)
    (out / "data_report.md").write_text(md, encoding="utf-8")
    (out / "data_report.html").write_text(_html(summary, plots), encoding="utf-8")
    return summary
