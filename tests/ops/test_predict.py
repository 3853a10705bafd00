"""``tunesmith predict``: a whole file answered as evaluation answered it, bad rows set aside, counts that add up."""

import csv
import json

from typer.testing import CliRunner

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.cli import app

runner = CliRunner()


def test_predict_answers_a_file_as_the_run_evaluated_it(tmp_path, tiny_model_dir):
    run = run_tiny(make_tiny_project(tmp_path / "p", tiny_model_dir))
    tuned = [json.loads(line) for line in (run.predictions / "tuned.jsonl").read_text().splitlines()]
    # the test inputs as a CSV without labels, plus two rows it cannot use
    sheet = tmp_path / "tickets.csv"
    with sheet.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "channel"])
        for row in tuned:
            w.writerow([row["input"], "app"])
    with sheet.open("a") as fh:
        fh.write(',web\n"unterminated\n')
    out = tmp_path / "answers.jsonl"
    res = runner.invoke(app, ["predict", str(sheet), "--run", run.id, "--runs-dir", str(run.root.parent),
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["answered"] == len(tuned) and summary["set_aside"] >= 1
    assert summary["rows_read"] == summary["answered"] + summary["set_aside"]
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    # same prompts, same batches, same greedy decoding: the run's own test answers
    assert [a["output"] for a in answers] == [r["output"] for r in tuned]
    assert [a["prediction"] for a in answers] == [r["prediction"] for r in tuned]
    assert answers[0]["text"] == tuned[0]["input"] and "label" not in answers[0]
    rejected = [json.loads(line) for line in (tmp_path / "answers.rejected.jsonl").read_text().splitlines()]
    assert "field 'text': empty value" in rejected[0]["reason"] and rejected[0]["raw"] == ",web"
    # CSV out, and the human summary
    res = runner.invoke(app, ["predict", str(sheet), "--run", str(run.root), "--out", str(tmp_path / "a.csv")])
    assert res.exit_code == 0, res.output
    assert f"{len(tuned)} answered" in res.output and "set aside" in res.output
    with (tmp_path / "a.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(tuned)
