"""The run report as one list of sections, which the markdown and HTML renderers (and the web UI) draw.

Each section is a title and blocks (text, bullet lists, tables, figures); what a report says is
decided here once, and a renderer only decides how it looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tunesmith.evaluate.intervals import Interval
from tunesmith.report.schema import RunReport
from tunesmith.report.per_task import per_task_table, shares_sentence

Tone = Literal["plain", "muted", "warning", "met", "not met", "inconclusive"]


@dataclass
class Text:
    """A paragraph; ``**bold**`` and ``code`` spans are written as markdown and rendered by each renderer."""

    text: str
    tone: Tone = "plain"


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    """Cells are text, numbers (floats shown to four places) or None (a dash)."""

    header: list[str]
    rows: list[list[Any]]


@dataclass
class Figure:
    """A plot of the run folder by name (``loss``, ``confusion``)."""

    plot: str
    alt: str


Block = Text | Bullets | Table | Figure


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v * 100:+.1f}%" if pct else f"{v:.4f}"
    return str(v)


def _span(iv: Any, signed: bool = True) -> str | None:
    return None if iv is None else iv.span(signed)


#: How each interval method is described under the tables.
INTERVAL_METHODS = {
    "bootstrap": "percentile bootstrap over the test examples",
    "exact": "exact (Clopper-Pearson) interval of a proportion",
    "permutation": "every difference the paired permutation test does not reject, so it excludes 0 exactly when p is "
                   "significant",
    "none": "none: too few test examples for an interval",
}


def _methods_sentence(r: RunReport) -> str:
    """Which interval and test each compared metric used, in one sentence."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, s in r.significance.items():
        groups.setdefault((s.diff.method, s.test), []).append(name)
    level = next(iter(r.significance.values())).diff.level if r.significance else 0.95
    parts = [f"{', '.join(names)}: change interval {INTERVAL_METHODS.get(method, method)}; p from the {test} test"
             for (method, test), names in groups.items()]
    return f"{round(level * 100)}% intervals. " + "; ".join(parts) + "." if parts else ""


def small_test_sentence(r: RunReport, min_count: int) -> str | None:
    """A warning when the test split is under the minimum size, or None."""
    n = r.data.test
    if n >= min_count:
        return None
    return (f"Small test set: {n} examples, under the minimum of {min_count} (eval.min_test_examples). Bootstrap "
            "intervals are not given; proportions get exact intervals and tests, other metrics no interval, and "
            "no verdict rests on a point value. Add test examples (data.split.test or data.test) to decide.")


def fast_path_sentence(fast_path: dict[str, Any]) -> str:
    """What the training fast path applied, in one sentence (``train.fast_path`` of the report)."""
    if not fast_path:
        return "not recorded"
    counts = {"fused LoRA layers": fast_path.get("fused_lora_layers"), "seeded dropouts": fast_path.get("seeded_dropout"),
              "SwiGLU MLPs": fast_path.get("swiglu_mlps"), "RMSNorms": fast_path.get("rms_norms"),
              "rotary attentions": fast_path.get("rotary_attention"),
              "bf16 frozen weights": fast_path.get("frozen_weights_in_bf16")}
    flags = {"fast attention": fast_path.get("fast_attention"), "packing": fast_path.get("packing"),
             "prefix sharing": fast_path.get("prefix_sharing"), "C kernels": fast_path.get("native_kernels")}
    on = [f"{n} {k}" for k, n in counts.items() if n] + [k for k, v in flags.items() if v]
    return (", ".join(on) if on else "off") + (f"; {len(fast_path['warnings'])} warning(s)"
                                              if fast_path.get("warnings") else "")


def judge_sentence(lj: dict[str, Any]) -> str:
    """How many of the judge's replies were judgements, and whether that is enough for a mean."""
    items, least = lj.get("rubric_items"), lj.get("min_judged")
    if not items:
        return f"{lj['items']} items judged."
    text = (f"Rubric: {items['asked']} items asked, {items['scored']} scored on every criterion, {items['partial']} on "
            f"some, {items['unreadable']} replies unreadable, {items['copied']} copying the prompt's example; those "
            "are never averaged in.")
    if least is not None and any(v is None for v in lj.get("rubric", {}).values()):
        text += f" No mean is given for a criterion judged on fewer than {least} items."
    return text


def _summary(r: RunReport) -> list[Section]:
    obj = r.objective
    target = f"target {obj.target:g}" if obj.target is not None else "target: beat the baseline"
    adapter = r.adapter
    head = Section(f"tunesmith report: {r.project} ({r.run_id})", level=1, blocks=[
        Text(f"**Verdict: {r.verdict}** — {r.verdict_reason}.", tone=r.verdict),
        Text(f"Task: **{obj.task}**, primary metric **{obj.metric}**, {target}. Base model: `{r.model.base}` "
             f"({r.model.precision}); adapter: {adapter.get('method')} r={adapter.get('r')} "
             f"alpha={adapter.get('alpha')}.", tone="muted")])
    if r.interval is not None:
        iv = r.interval
        if iv.known:
            head.blocks.append(Text(f"Tuned {obj.metric}: **{iv.value:.4f}**, {round(iv.level * 100)}% interval "
                                    f"[{iv.low:.4f}, {iv.high:.4f}] ({INTERVAL_METHODS[iv.method]})."))
        else:
            head.blocks.append(Text(f"Tuned {obj.metric}: **{iv.value:.4f}**, no interval: too few test examples."))
    small = small_test_sentence(r, r.min_test_examples)
    if small:
        head.blocks.append(Text(small, tone="warning"))
    rows = []
    for name, c in r.comparison.items():
        s = r.significance.get(name)
        flag = ("significant" if s.significant else "not significant") if s else None
        rows.append([f"{name}{' ⭐' if name == obj.metric else ''} ({'↑' if c.higher_is_better else '↓'} better)",
                     c.baseline, c.tuned, c.abs_change, _span(s.diff) if s else None,
                     f"{s.p_value:.3g}" if s else None, flag])
    compare = Section("Baseline vs tuned (test split)", [
        Table(["metric", "baseline", "tuned", "change", "change interval", "p", ""], rows),
        Text(_methods_sentence(r), tone="muted"),
        Figure("confusion", "confusion matrices")])
    return [head, compare]


def _calibration(r: RunReport) -> list[Section]:
    cal = r.calibration
    if not cal:
        return []
    rows = []
    for name, c in cal.items():
        agree = c.get("agreement") or {}
        rows.append([name, c["count"], c["accuracy"], c["mean_confidence"], c["ece"],
                     f"{agree.get('differ', 0)} of {agree.get('rows', 0)}" if agree else None])
    return [Section("Answers within the label set, and how far their confidence can be trusted", [
        Text("Answers are decoded within the label set, so each is a label, with the probability the model gives it "
             "(renormalised over the labels' tokens). Calibrated, answers given with confidence 0.8 are right 80% of "
             "the time; the expected calibration error (ECE) is the average gap over 10 confidence bins."),
        Table(["model", "answers", "accuracy", "mean confidence", "ECE", "free answer differs"], rows),
        Figure("calibration", "reliability diagrams")])]


def _slices_and_tasks(r: RunReport) -> list[Section]:
    out = []
    sl = r.slices
    if sl.get("rows"):
        out.append(Section(f"By slice ({sl['metric']}; slices that got worse first)", [Table(
            ["field", "value", "examples", "baseline", "tuned", "change"],
            [[x["field"], x["value"], x["count"], x["baseline"], x["tuned"], x["change"]] for x in sl["rows"]])]))
    if r.per_task:
        header, rows = per_task_table(r.per_task)
        blocks: list[Block] = [Text("Each task of the mix on its own test examples, with its own type's metrics; "
                                    "intervals: paired bootstrap.", tone="muted"), Table(header, rows)]
        if r.data.tasks:
            blocks.append(Text(shares_sentence(r.data.tasks)))
        out.append(Section("Per task", blocks))
    return out


def _errors(r: RunReport) -> list[Section]:
    err = r.errors
    if not err:
        return []
    out = [Section("Error analysis", [Text(", ".join(f"{k.replace('_', ' ')}: **{n}**" for k, n in err["counts"].items())
                                          + ".")])]
    for group in ("regressed", "improved", "still_wrong"):
        if err.get(group):
            out.append(Section(f"{group.replace('_', ' ').capitalize()} (up to {len(err[group])})", level=3, blocks=[
                Table(["input", "reference", "baseline", "tuned"],
                      [[e["input"], e["reference"], e["baseline"], e["tuned"]] for e in err[group]])]))
    return out


def _forgetting(r: RunReport) -> list[Section]:
    fg = r.forgetting
    if not fg:
        return []
    if "perplexity" not in fg or not isinstance(fg["perplexity"], dict):
        return [Section("Forgetting (general ability)", [Text(
            "This run's forgetting check used the earlier token-F1 probe, which rewarded short answers; its figures "
            "are not shown. Re-run to measure forgetting by the probability of the right answers.", tone="muted")])]

    def row(name: str, part: dict[str, Any], relative: bool) -> list[Any]:
        fmt = "{:+.1%}" if relative else "{:+.3f}"
        return [name, part["before"], part["after"], fmt.format(part["change"]),
                f"[{fmt.format(part['low'])}, {fmt.format(part['high'])}]", f"{part['p_value']:.3g}", part["test"]]

    ppl, prob, acc = fg["perplexity"], fg["choice_probability"], fg["choice_accuracy"]
    blocks: list[Block] = [Table(["", "before tuning", "after", "change", "change interval", "p", "test"], [
        row(f"perplexity on general text, {ppl['items']} paragraphs (lower is better)", ppl, True),
        row(f"probability of the right answer, {prob['items']} general multiple-choice questions", prob, True),
        row("right option most likely (accuracy) on the same questions", acc, False)]),
        Text(f"{round(fg['level'] * 100)}% intervals of the change from the paired permutation test over the items, "
             "so an interval excludes 0 exactly when p is significant. Perplexity and probability changes are relative "
             "to before tuning; accuracy's is in points. A warning needs a significant worsening beyond "
             f"{fg['thresholds']['max_perplexity_increase']:.0%} (perplexity) or "
             f"{fg['thresholds']['max_choice_drop']:.0%} (probability).", tone="muted")]
    blocks += [Text(w, tone="warning") for w in fg["warnings"]] or [Text("No warning: no significant worsening beyond "
                                                                         "the configured thresholds.")]
    return [Section("Forgetting (general ability, bundled sets written for tunesmith)", blocks)]


def _fairness(r: RunReport) -> list[Section]:
    fair = r.fairness
    if not fair:
        return []
    blocks: list[Block] = []
    g = fair.get("groups")
    if g:
        def span(x: dict[str, Any]) -> str | None:
            if "method" not in x:
                return None
            return Interval(x["metric"], x.get("low"), x.get("high"), 0.95, x["method"]).span()

        small = (f"; not flagged: a group it compares has fewer than {g.get('min_count')} test examples, too few to "
                 "tell a real gap from noise") if g.get("too_small") else ""
        blocks += [Text(f"{g['metric']} by `{g['attribute']}` ({g['missing']} test examples without it):"),
                   Table(["group", "examples", "metric", "95% interval"],
                         [[x["value"], x["count"], x["metric"], span(x)] for x in g["groups"]]),
                   Text(f"Disparate-impact ratio (worst group / best group): **{_fmt(g['ratio'])}**"
                        + (f", below {g['min_ratio']:g}" if g["flagged"] else f" (threshold {g['min_ratio']:g})") + small,
                        tone="warning" if g["flagged"] else "plain")]
    cf = fair.get("counterfactual")
    if cf:
        rate = "–" if cf["rate"] is None else f"{cf['rate']:.1%}"
        blocks.append(Text(f"Counterfactual probes (swapping {', '.join('/'.join(p) for p in cf['swaps'])}): "
                           f"{cf['changed']} of {cf['probed']} answers changed ({rate})."))
    return [Section("Fairness", blocks)]


def _human_and_judge(r: RunReport) -> list[Section]:
    out = []
    hr = r.human_review
    if hr:
        win, agree = hr["win_rate"], hr["agreement"]
        rate = win["rate"]

        def fmt(v: dict[str, Any] | None) -> str:
            if not v:
                return "–"
            if v.get("low") is None:
                return f"{v['value']:.2f} (n={v['n']}: too few for an interval)"
            return f"{v['value']:.2f} [{v['low']:.2f}, {v['high']:.2f}]"

        verdict = ""
        if rate and "p_value" in rate:
            verdict = (f", p = {rate['p_value']:.3g} ({rate['test']}): "
                       + ("a significant preference" if rate["p_value"] < 0.05 else "no significant preference"))
        blocks: list[Block] = [
            Text(f"Tuned wins {win['tuned_wins']}, baseline wins {win['baseline_wins']}, ties {win['ties']}"
                 + (f"; win rate {fmt(rate)} (ties count half; 95% interval from the sign test{verdict})."
                    if rate else ".")),
            Table(["criterion (1-5)", "baseline", "tuned", "agreement"],
                  [[c, fmt(b), fmt(hr["scores"]["tuned"][c]), agree.get(c)] for c, b in hr["scores"]["baseline"].items()])]
        if agree.get("method"):
            blocks.append(Text(f"Agreement: {agree['method'].replace('_', ' ')}; on the preference: "
                               f"{_fmt(agree.get('preference'))}."))
        out.append(Section(f"Human review ({len(hr['raters'])} raters, {hr['items']} items, blind A/B)", blocks))
    lj = r.llm_judge
    if lj:
        blocks = [Text(judge_sentence(lj))]
        if lj.get("rubric"):
            judged = lj.get("rubric_judged", {})
            blocks.append(Table(["criterion (1-5, tuned)", "mean", "items judged"],
                                [[c, v, judged.get(c)] for c, v in lj["rubric"].items()]))
        pw = lj.get("pairwise")
        if pw:
            blocks.append(Text(f"Pairwise, both orders: tuned {pw['tuned']}, baseline {pw['baseline']}, tie {pw['tie']}, "
                               f"orders disagree {pw['disagree']}, unreadable {pw.get('unreadable', 0)}; win rate "
                               f"{_fmt(pw['win_rate'])}; position A picked {pw['picked_position_a']:.0%} of the time."))
        jh = lj.get("judge_human")
        if jh:
            blocks.append(Text(f"Judge vs human preference on {jh['items']} items: agreement {_fmt(jh['agreement'])}, "
                               f"kappa {_fmt(jh['kappa'])}."))
        out.append(Section(f"LLM judge ({lj['judge']}, {lj['items']} items; every judgement with its rationale in "
                           "`judge.jsonl`)", blocks))
    return out


def _data(r: RunReport) -> list[Section]:
    d = r.data
    blocks: list[Block] = [Text(f"Format `{d.format}`; examples per split: train **{d.train}**, validation "
                                f"**{d.validation}**, test **{d.test}**; data hash `{d.data_hash}`.")]
    if d.labels:
        blocks.append(Text(f"{len(d.labels)} labels: {', '.join(d.labels)}."))
    acc = d.accounting
    if acc:
        removed = sum(acc["removed"].values())
        blocks.append(Text(f"Rows read **{acc['rows_read']}** = kept **{acc['kept']}** + set aside **{acc['rejected']}**"
                           f" + removed **{removed}**" + (" (see `data/rejected.jsonl`)" if acc["rejected"] else "") + "."))
        items = [f"set aside, {kind}: {n}" for kind, n in acc["rejected_by_reason"].items()]
        items += [f"removed by `{rule}`: {n}" for rule, n in acc["removed"].items()]
        if acc.get("conflicts"):
            items.append(f"inputs that appear with different answers (conflicts): {acc['conflicts']}")
        if acc.get("leakage_found"):
            items.append(f"validation/test examples nearly duplicating a training input (leakage): {acc['leakage_found']}")
        if acc.get("pii"):
            items.append(f"personal data and secrets found ({acc['pii_policy']}): "
                         + ", ".join(f"{k} {n}" for k, n in acc["pii"].items()))
        if acc["removed"]:
            items.append("every removed row is listed with its rule in `data/removed.jsonl`")
        items += [f"warning: {w}" for w in acc["warnings"]]
        if items:
            blocks.append(Bullets(items))
    return [Section("Data", blocks)]


def _training(r: RunReport) -> list[Section]:
    t = r.train
    out = []
    if t:
        fp = t.fast_path
        items = [f"{t.steps} optimiser steps ({t.epochs:g} epochs) in {t.seconds:.1f} s"
                 + (", stopped early" if t.stopped_early else ""),
                 f"{t.tokens:,} tokens (no padding) at **{t.tokens_per_second:.0f} tokens/s**",
                 f"peak memory (RSS): **{t.peak_rss_mb:.0f} MiB**",
                 f"kept the weights of step {t.best_step}"
                 + (f" (validation loss {t.best_val_loss:.4f})" if t.best_val_loss is not None else ""),
                 f"fast path: {fast_path_sentence(fp)}"]
        blocks: list[Block] = [Bullets(items)]
        blocks += [Text(f"fast path: {w}", tone="warning") for w in fp.get("warnings", [])]
        blocks.append(Figure("loss", "loss curves"))
        out.append(Section("Training", blocks))
    if r.timings:
        out.append(Section("Time", [Table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in r.timings.items()])]))
    return out


def _examples(tuned_rows: Sequence[dict[str, Any]], baseline_rows: Sequence[dict[str, Any]],
              n_examples: int) -> list[Section]:
    if not n_examples or not tuned_rows:
        return []
    base_by_id = {row["id"]: row for row in baseline_rows}
    ranked = sorted(tuned_rows, key=lambda row: (-row["score"], row["id"]))
    n = min(n_examples, len(ranked))

    def table(rows: Sequence[dict[str, Any]]) -> Table:
        return Table(["input", "reference", "baseline output", "tuned output", "tuned score"],
                     [[x["input"], x["reference"], base_by_id.get(x["id"], {}).get("output", ""), x["output"],
                       f"{x['score']:.3f}"] for x in rows])

    worst = [row for row in reversed(ranked) if row["score"] < 1.0][:n]  # a perfect answer is nobody's worst
    return [Section(f"Best {n} test examples (tuned)", [table(ranked[:n])]),
            Section(f"Worst {len(worst)} test examples (tuned)" if worst else "Worst test examples (tuned)",
                    [table(worst)] if worst else [Text("Every test example scored 1.0.")])]


def build_sections(report: RunReport, tuned_rows: Sequence[dict[str, Any]] = (),
                   baseline_rows: Sequence[dict[str, Any]] = (), n_examples: int = 0) -> list[Section]:
    """Every section of the run report, in reading order: verdict first, files last.

    Args:
        report: The run's report.
        tuned_rows: The tuned model's predictions (for the best and worst examples).
        baseline_rows: The baseline's predictions (may be empty).
        n_examples: How many best and worst examples to show (0: none).
    """
    sections = [*_summary(report), *_calibration(report), *_slices_and_tasks(report), *_errors(report), *_forgetting(report),
                *_fairness(report), *_human_and_judge(report), *_data(report), *_training(report),
                *_examples(tuned_rows, baseline_rows, n_examples)]
    if report.versions:
        software = ", ".join(f"{k} {v}" for k, v in report.versions.items() if v)
        sections.append(Section("Software", [Text(f"{software}.", tone="muted")]))
    sections.append(Section("Files", [Text("`report.json`, `predictions/baseline.jsonl`, `predictions/tuned.jsonl`, "
                                           "`metrics.jsonl`, `adapter/`, `config.yaml`, `versions.json`, "
                                           "`data/manifest.json`.", tone="muted")]))
    return sections
