"""report.json has one typed, versioned schema; old reports load, newer ones are refused clearly; one set of
sections serves the markdown and the HTML page."""

import json
import re

import pytest

from tests.run_helpers import minimal_report
from tunesmith.errors import UserError
from tunesmith.report.html import render_html
from tunesmith.report.markdown import render_markdown
from tunesmith.report.schema import SCHEMA_VERSION, read_report, read_report_if_any, write_report_file
from tunesmith.report.sections import build_sections


def test_a_report_round_trips_and_a_version_1_report_still_loads(tmp_path):
    report = minimal_report(versions={"python": "3.11.7", "torch": "2.13.0"})
    path = tmp_path / "report.json"
    write_report_file(path, report)
    assert read_report(path) == report and report.schema_version == SCHEMA_VERSION
    old = json.loads(path.read_text())
    del old["schema_version"], old["versions"]  # what tunesmith wrote before the schema
    path.write_text(json.dumps(old))
    loaded = read_report(path)
    assert loaded.schema_version == 1 and loaded.versions is None and loaded.primary() == 0.75


def test_newer_unreadable_or_malformed_reports_are_clear_errors(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**minimal_report().model_dump(mode="json"), "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="newer than this tunesmith reads"):
        read_report(path)
    bad = minimal_report().model_dump(mode="json")
    bad["verdict"] = "great"
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="report field verdict"):
        read_report(path)
    path.write_text("{not json")
    assert read_report_if_any(path) is None and read_report_if_any(tmp_path / "missing.json") is None


def test_markdown_and_html_draw_the_same_sections():
    report = minimal_report(train={"steps": 2, "epochs": 1, "seconds": 1.0, "tokens": 10, "tokens_per_second": 10.0,
                                   "peak_rss_mb": 100.0, "best_step": 2,
                                   "fast_path": {"fused_lora_layers": 3, "warnings": ["rotary: 0 of 2 recognised"]}},
                            versions={"torch": "2.13.0"})
    sections = build_sections(report)
    md, page = render_markdown(sections), render_html(sections)
    md_titles = re.findall(r"^#+ (.+)$", md, flags=re.M)
    html_titles = re.findall(r"<h\d>(.+?)</h\d>", page)
    assert md_titles == html_titles == [s.title for s in sections]
    assert "Training" in md_titles and "Software" in md_titles
    for text in (md, page):
        assert "rotary: 0 of 2 recognised" in text and "3 fused LoRA layers" in text and "torch 2.13.0" in text


def test_worst_examples_leave_out_perfect_answers_and_long_cells_keep_their_end():
    rows = [{"id": f"r{i}", "input": "passage " * 40 + f"question {i}?", "reference": "a", "output": "a",
             "score": 1.0} for i in range(3)]
    sections = build_sections(minimal_report(), rows, [], n_examples=2)
    worst = next(s for s in sections if s.title.startswith("Worst"))
    assert worst.title == "Worst test examples (tuned)" and "Every test example scored 1.0." in render_markdown([worst])
    best = render_markdown([next(s for s in sections if s.title.startswith("Best"))])
    assert "question 0?" in best and " … " in best  # the question at the end of a long input survives the cut


def test_error_analysis_shows_what_the_model_said_when_it_names_no_label():
    from tunesmith.evaluate.analysis import error_analysis

    base = [{"id": "1", "input": "x", "reference": "pin", "output": "I think it is about cards", "prediction": "",
             "score": 0.0}]
    tuned = [{"id": "1", "input": "x", "reference": "pin", "output": "pin", "prediction": "pin", "score": 1.0}]
    (improved,) = error_analysis(base, tuned)["improved"]
    assert improved["baseline"] == "(no label) I think it is about cards" and improved["tuned"] == "pin"
