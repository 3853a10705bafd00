"""The run report as one self-contained HTML page: the verdict at the top, intervals, plots, slices, errors."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.report.tasks import fast_path_sentence, per_task_table, shares_sentence

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:.92em}
th{background:#f4f4f4}img{max-width:100%}.verdict{font-size:1.3em;padding:.6em 1em;border-radius:6px}
.met{background:#e3f6e3}.not-met{background:#fbe3e3}.inconclusive{background:#fff5d6}.muted{color:#666}"""


def _e(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render_html(report: dict[str, Any], plots: dict[str, Path]) -> str:
    """The report page, with the PNG plots embedded so the file stands alone.

    Args:
        report: The dict written to ``report.json``.
        plots: Name -> PNG file (``loss``, ``confusion``); missing files are skipped.
    """
    obj = report["objective"]
    sig = report.get("significance", {})
    metric_rows = []
    for name, c in report["comparison"].items():
        s = sig.get(name)
        metric_rows.append([name + (" (primary)" if name == obj["metric"] else ""), c["baseline"], c["tuned"], c["abs_change"],
                            f"[{s['diff']['low']:+.4f}, {s['diff']['high']:+.4f}]" if s else None,
                            f"{s['p_value']:.3g}" if s else None,
                            ("significant" if s["significant"] else "not significant") if s else None])
    iv = report.get("interval")
    target = f"target {obj['target']:g}" if obj["target"] is not None else "target: beat the baseline"
    parts = [f"<h1>tunesmith report: {html.escape(report['project'])}</h1>",
             f"<p class='muted'>run {html.escape(report['run_id'])} · task {obj['task']} · primary metric {obj['metric']} · {target}</p>",
             f"<div class='verdict {report['verdict'].replace(' ', '-')}'><b>Verdict: {html.escape(report['verdict'])}</b>"
             f" — {html.escape(report['verdict_reason'])}</div>"]
    if iv:
        parts.append(f"<p>Tuned {obj['metric']}: <b>{iv['value']:.4f}</b>, {round(iv['level'] * 100)}% interval "
                     f"[{iv['low']:.4f}, {iv['high']:.4f}] (bootstrap over the test examples).</p>")
    parts += ["<h2>Baseline vs tuned (test split)</h2>",
              _table(["metric", "baseline", "tuned", "change", "change interval", "p", ""], metric_rows),
              "<p class='muted'>Intervals: paired bootstrap over the test examples; p: paired permutation test.</p>",
              _img(plots.get("confusion", Path()), "confusion matrices"), _img(plots.get("loss", Path()), "loss curves")]
    sl = report.get("slices", {})
    if sl.get("rows"):
        parts += [f"<h2>By slice ({html.escape(sl['metric'])}; worse first)</h2>",
                  _table(["field", "value", "examples", "baseline", "tuned", "change"],
                         [[r["field"], r["value"], r["count"], r["baseline"], r["tuned"], r["change"]] for r in sl["rows"]])]
    if report.get("per_task"):
        parts += ["<h2>Per task</h2>", "<p class='muted'>Each task of the mix on its own test examples, with its own "
                  "type's metrics; intervals: paired bootstrap.</p>", _table(*per_task_table(report["per_task"]))]
        if report["data"].get("tasks"):
            parts.append(f"<p>{html.escape(shares_sentence(report['data']['tasks']))}</p>")
    err = report.get("errors")
    if err:
        parts.append("<h2>Error analysis</h2><p>" + ", ".join(f"{k.replace('_', ' ')}: <b>{n}</b>" for k, n in err["counts"].items()) + "</p>")
        for group in ("regressed", "improved", "still_wrong"):
            if err.get(group):
                parts += [f"<h3>{group.replace('_', ' ').capitalize()}</h3>",
                          _table(["input", "reference", "baseline", "tuned"],
                                 [[e["input"], e["reference"], e["baseline"], e["tuned"]] for e in err[group]])]
    fg = report.get("forgetting")
    if fg:
        parts += ["<h2>Forgetting (general ability)</h2>",
                  _table(["", "before tuning", "after", "change"],
                         [["perplexity on general text", fg["perplexity_before"], fg["perplexity_after"], fg["perplexity_change"]],
                          ["general probe token F1", fg["probe_f1_before"], fg["probe_f1_after"], fg["probe_f1_change"]]])]
        parts += [f"<p><b>warning:</b> {html.escape(w)}</p>" for w in fg["warnings"]]
    fair = report.get("fairness")
    if fair:
        parts.append("<h2>Fairness</h2>")
        g = fair.get("groups")
        if g:
            parts += [_table(["group", "examples", g["metric"]], [[x["value"], x["count"], x["metric"]] for x in g["groups"]]),
                      f"<p>Disparate-impact ratio: <b>{_e(g['ratio'])}</b>{' — below ' + str(g['min_ratio']) if g['flagged'] else ''}.</p>"]
        cf = fair.get("counterfactual")
        if cf:
            parts.append(f"<p>Counterfactual probes: {cf['changed']} of {cf['probed']} answers changed.</p>")
    hr = report.get("human_review")
    if hr:
        win, agree = hr["win_rate"], hr["agreement"]
        rate = win["rate"]
        parts += [f"<h2>Human review ({len(hr['raters'])} raters, {hr['items']} items, blind A/B)</h2>",
                  f"<p>Tuned wins {win['tuned_wins']}, baseline wins {win['baseline_wins']}, ties {win['ties']}"
                  + (f"; win rate {rate['value']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]" if rate else "") + ".</p>",
                  _table(["criterion (1-5)", "baseline", "tuned", "agreement"],
                         [[c, hr["scores"]["baseline"][c] and hr["scores"]["baseline"][c]["value"],
                           hr["scores"]["tuned"][c] and hr["scores"]["tuned"][c]["value"], agree.get(c)]
                          for c in hr["scores"]["baseline"]])]
    lj = report.get("llm_judge")
    if lj:
        parts.append(f"<h2>LLM judge ({html.escape(lj['judge'])}, {lj['items']} items)</h2>")
        if lj.get("rubric"):
            parts.append(_table(["criterion (1-5, tuned)", "mean"], list(lj["rubric"].items())))
        pw = lj.get("pairwise")
        if pw:
            parts.append(f"<p>Pairwise, both orders: tuned {pw['tuned']}, baseline {pw['baseline']}, tie {pw['tie']}, "
                         f"orders disagree {pw['disagree']}; win rate {_e(pw['win_rate'])}.</p>")
    d = report["data"]
    parts += ["<h2>Data</h2>", f"<p>Format {html.escape(d['format'])}; train {d['train']}, validation {d['validation']}, "
              f"test {d['test']}; data hash <code>{html.escape(str(d.get('data_hash', '')))}</code>.</p>"]
    t = report.get("train")
    if t:
        parts += ["<h2>Training</h2>", f"<p>{t['steps']} steps in {t['seconds']:.1f} s; {t['tokens']:,} tokens at "
                  f"{t['tokens_per_second']:.0f} tokens/s; peak memory {t['peak_rss_mb']:.0f} MiB.</p>",
                  f"<p>Fast path: {html.escape(fast_path_sentence(t.get('fast_path') or {}))}</p>"]
        parts += [f"<p><b>warning:</b> fast path: {html.escape(w)}</p>" for w in (t.get("fast_path") or {}).get("warnings", [])]
    vs = report.get("versions")
    if vs:
        parts.append("<p class='muted'>Software: " + html.escape(", ".join(f"{k} {v}" for k, v in vs.items() if v)) + ".</p>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>tunesmith report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
