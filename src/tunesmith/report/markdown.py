"""The human-readable run report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.report.tasks import fast_path_sentence, per_task_table, shares_sentence


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v * 100:+.1f}%" if pct else f"{v:.4f}"
    return str(v)


def _examples_table(rows: Sequence[dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> list[str]:
    out = ["| input | reference | baseline output | tuned output | tuned score |", "|---|---|---|---|---|"]
    for r in rows:
        cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")[:160]  # noqa: E731
        b = baseline.get(r["id"], {}).get("output", "")
        out.append(f"| {cell(r['input'])} | {cell(r['reference'])} | {cell(b)} | {cell(r['output'])} | {r['score']:.3f} |")
    return out


def render_markdown(report: dict[str, Any], tuned_rows: Sequence[dict[str, Any]],
                    baseline_rows: Sequence[dict[str, Any]], n_examples: int) -> str:
    """The markdown report: verdict first, then the baseline-vs-tuned table, data, training and examples.

    Args:
        report: The dict written to ``report.json``.
        tuned_rows: The tuned model's predictions.
        baseline_rows: The baseline's predictions (may be empty).
        n_examples: How many best and worst examples to show.
    """
    obj = report["objective"]
    lines = [f"# tunesmith report: {report['project']} ({report['run_id']})", ""]
    badge = {"met": "✅ met", "not met": "❌ not met", "inconclusive": "❔ inconclusive"}[report["verdict"]]
    lines += [f"**Verdict: {badge}** — {report['verdict_reason']}.", "",
              f"Task: **{obj['task']}**, primary metric **{obj['metric']}**"
              + (f", target {obj['target']:g}" if obj["target"] is not None else ", target: beat the baseline") + ".",
              f"Base model: `{report['model']['base']}` ({report['model']['precision']}); adapter: "
              f"{report['adapter']['method']} r={report['adapter']['r']} alpha={report['adapter']['alpha']:g}.", ""]
    sig = report.get("significance", {})
    level = next(iter(sig.values()))["diff"]["level"] if sig else 0.95
    lines += ["## Baseline vs tuned (test split)", "",
              f"Intervals: {round(level * 100)}% paired bootstrap over the test examples; p: paired permutation test.", "",
              "| metric | baseline | tuned | change | change interval | p | |", "|---|---|---|---|---|---|---|"]
    for name, c in report["comparison"].items():
        star = " ⭐" if name == obj["metric"] else ""
        arrow = "↑" if c["higher_is_better"] else "↓"
        s_ = sig.get(name)
        span = f"[{s_['diff']['low']:+.4f}, {s_['diff']['high']:+.4f}]" if s_ else "–"
        p = f"{s_['p_value']:.3g}" if s_ else "–"
        flag = "significant" if s_ and s_["significant"] else ("not significant" if s_ else "")
        lines.append(f"| {name}{star} ({arrow} better) | {_fmt(c['baseline'])} | {_fmt(c['tuned'])} | "
                     f"{_fmt(c['abs_change'])} | {span} | {p} | {flag} |")
    sl = report.get("slices", {})
    if sl.get("rows"):
        lines += ["", f"## By slice ({sl['metric']}; slices that got worse first)", "",
                  "| field | value | examples | baseline | tuned | change |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['field']} | {r['value']} | {r['count']} | {_fmt(r['baseline'])} | {_fmt(r['tuned'])} | "
                  f"{_fmt(r['change'])} |" for r in sl["rows"]]
    if report.get("per_task"):
        header, rows = per_task_table(report["per_task"])
        lines += ["", "## Per task (each task of the mix on its own test examples, with its own type's metrics)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
        if report["data"].get("tasks"):
            lines += ["", shares_sentence(report["data"]["tasks"])]
    err = report.get("errors")
    if err:
        lines += ["", "## Error analysis", "", ", ".join(f"{k.replace('_', ' ')}: **{n}**" for k, n in err["counts"].items()) + "."]
        for group in ("regressed", "improved", "still_wrong"):
            if err.get(group):
                lines += ["", f"### {group.replace('_', ' ').capitalize()} (up to {len(err[group])})", "",
                          "| input | reference | baseline | tuned |", "|---|---|---|---|"]
                cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")[:120]  # noqa: E731
                lines += [f"| {cell(e['input'])} | {cell(e['reference'])} | {cell(e['baseline'])} | {cell(e['tuned'])} |"
                          for e in err[group]]
    fg = report.get("forgetting")
    if fg:
        lines += ["", "## Forgetting (general ability, bundled sets written for tunesmith)", "",
                  "| | before tuning | after | change |", "|---|---|---|---|",
                  f"| perplexity on general text (lower is better) | {_fmt(fg['perplexity_before'])} | {_fmt(fg['perplexity_after'])} | "
                  f"{_fmt(fg['perplexity_change'], pct=True)} |",
                  f"| general instruction probe, token F1 | {_fmt(fg['probe_f1_before'])} | {_fmt(fg['probe_f1_after'])} | "
                  f"{_fmt(fg['probe_f1_change'])} |"]
        lines += [f"\n⚠️ {w}" for w in fg["warnings"]] or ["", "No warning: within the configured thresholds."]
    fair = report.get("fairness")
    if fair:
        lines += ["", "## Fairness", ""]
        g = fair.get("groups")
        if g:
            lines += [f"{g['metric']} by `{g['attribute']}` ({g['missing']} test examples without it):", "",
                      "| group | examples | metric |", "|---|---|---|"]
            lines += [f"| {x['value']} | {x['count']} | {_fmt(x['metric'])} |" for x in g["groups"]]
            lines.append(f"\nDisparate-impact ratio (worst group / best group): **{_fmt(g['ratio'])}**"
                         + (f" ⚠️ below {g['min_ratio']:g}" if g["flagged"] else f" (threshold {g['min_ratio']:g})"))
        cf = fair.get("counterfactual")
        if cf:
            rate = "–" if cf["rate"] is None else f"{cf['rate']:.1%}"
            lines.append(f"\nCounterfactual probes (swapping {', '.join('/'.join(p) for p in cf['swaps'])}): "
                         f"{cf['changed']} of {cf['probed']} answers changed ({rate}).")
    hr = report.get("human_review")
    if hr:
        win = hr["win_rate"]
        rate = win["rate"]
        lines += ["", f"## Human review ({len(hr['raters'])} raters, {hr['items']} items, blind A/B)", "",
                  f"Tuned wins {win['tuned_wins']}, baseline wins {win['baseline_wins']}, ties {win['ties']}"
                  + (f"; win rate {rate['value']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}] (ties count half)." if rate else "."),
                  "", "| criterion (1-5) | baseline | tuned | agreement |", "|---|---|---|---|"]
        agree = hr["agreement"]
        for c, b in hr["scores"]["baseline"].items():
            t = hr["scores"]["tuned"][c]
            fmt = lambda v: "–" if not v else f"{v['value']:.2f} [{v['low']:.2f}, {v['high']:.2f}]"  # noqa: E731
            lines.append(f"| {c} | {fmt(b)} | {fmt(t)} | {_fmt(agree.get(c))} |")
        if agree.get("method"):
            lines.append(f"\nAgreement: {agree['method'].replace('_', ' ')}; on the preference: {_fmt(agree.get('preference'))}.")
    lj = report.get("llm_judge")
    if lj:
        lines += ["", f"## LLM judge ({lj['judge']}, {lj['items']} items; every judgement with its rationale in `judge.jsonl`)", ""]
        if lj.get("rubric"):
            lines += ["| criterion (1-5, tuned) | mean |", "|---|---|"] + [f"| {c} | {_fmt(v)} |" for c, v in lj["rubric"].items()]
        pw = lj.get("pairwise")
        if pw:
            lines += ["", f"Pairwise, both orders: tuned {pw['tuned']}, baseline {pw['baseline']}, tie {pw['tie']}, "
                      f"orders disagree {pw['disagree']}; win rate {_fmt(pw['win_rate'])}; position A picked "
                      f"{pw['picked_position_a']:.0%} of the time."]
        jh = lj.get("judge_human")
        if jh:
            lines.append(f"Judge vs human preference on {jh['items']} items: agreement {_fmt(jh['agreement'])}, kappa {_fmt(jh['kappa'])}.")
    d = report["data"]
    lines += ["", "## Data", "", f"Format `{d['format']}`; examples per split: train **{d['train']}**, "
              f"validation **{d['validation']}**, test **{d['test']}**."]
    if d.get("labels"):
        lines.append(f"{len(d['labels'])} labels: {', '.join(d['labels'])}.")
    acc = d.get("accounting")
    if acc:
        removed = sum(acc["removed"].values())
        lines += ["", f"Rows read **{acc['rows_read']}** = kept **{acc['kept']}** + set aside **{acc['rejected']}**"
                  f" + removed **{removed}**" + (" (see `data/rejected.jsonl`)" if acc["rejected"] else "") + "."]
        lines += [f"- set aside, {kind}: {n}" for kind, n in acc["rejected_by_reason"].items()]
        lines += [f"- removed by `{rule}`: {n}" for rule, n in acc["removed"].items()]
        if acc.get("conflicts"):
            lines.append(f"- inputs that appear with different answers (conflicts): {acc['conflicts']}")
        if acc.get("leakage_found"):
            lines.append(f"- validation/test examples nearly duplicating a training input (leakage): {acc['leakage_found']}")
        if acc.get("pii"):
            found = ", ".join(f"{k} {n}" for k, n in acc["pii"].items())
            lines.append(f"- personal data and secrets found ({acc['pii_policy']}): {found}")
        if acc["removed"]:
            lines.append("- every removed row is listed with its rule in `data/removed.jsonl`")
        lines += [f"- warning: {w}" for w in acc["warnings"]]
    t = report.get("train")
    if t:
        lines += ["", "## Training", "",
                  f"- {t['steps']} optimiser steps ({t['epochs']:g} epochs) in {t['seconds']:.1f} s"
                  + (", stopped early" if t["stopped_early"] else ""),
                  f"- {t['tokens']:,} tokens (no padding) at **{t['tokens_per_second']:.0f} tokens/s**",
                  f"- peak memory (RSS): **{t['peak_rss_mb']:.0f} MiB**",
                  f"- kept the weights of step {t['best_step']}"
                  + (f" (validation loss {t['best_val_loss']:.4f})" if t["best_val_loss"] is not None else ""),
                  f"- fast path: {fast_path_sentence(t.get('fast_path') or {})}"]
        lines += [f"- ⚠️ fast path: {w}" for w in (t.get("fast_path") or {}).get("warnings", [])]
        lines += ["", "![loss curves](loss.png)"]
    vs = report.get("versions")
    if vs:
        lines += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in vs.items() if v) + "."]
    tm = report.get("timings", {})
    if tm:
        lines += ["", "## Time", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in tm.items()]
    if n_examples and tuned_rows:
        base_by_id = {r["id"]: r for r in baseline_rows}
        ranked = sorted(tuned_rows, key=lambda r: (-r["score"], r["id"]))
        lines += ["", f"## Best {min(n_examples, len(ranked))} test examples (tuned)", ""]
        lines += _examples_table(ranked[:n_examples], base_by_id)
        lines += ["", f"## Worst {min(n_examples, len(ranked))} test examples (tuned)", ""]
        lines += _examples_table(list(reversed(ranked))[:n_examples], base_by_id)
    lines += ["", "Files: `report.json`, `predictions/baseline.jsonl`, `predictions/tuned.jsonl`, "
              "`metrics.jsonl`, `adapter/`, `config.yaml`, `data/manifest.json`.", ""]
    return "\n".join(lines)
