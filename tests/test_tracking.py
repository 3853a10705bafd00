"""Experiment trackers: one tiny run reports to TensorBoard, MLflow and W&B; each backend's own files are read back."""

from __future__ import annotations

import json
import struct
import sys

import pytest
import wandb
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner
from wandb.proto import wandb_internal_pb2

from tests.run_helpers import make_tiny_project, run_tiny
from tunesmith.cli import app
from tunesmith.config import Config, load_config
from tunesmith.errors import ConfigError, UserError
from tunesmith.runs.folder import RunPaths
from tests.run_helpers import minimal_report
from tunesmith.tracking import MlflowTracker, Trackers, report_summary

# Nothing may reach a network: W&B offline, no MLflow telemetry, W&B's caches in the test's folder.
OFFLINE_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model_dir):
    """One tiny run with every tracker on; yields the run, its metrics rows and its report."""
    folder = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE_ENV.items():
            mp.setenv(key, value)
        for key in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(key, str(folder / "wandb-home"))
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        project = make_tiny_project(folder, tiny_model_dir)
        run = run_tiny(project, "train.report_to=[tensorboard, mlflow, wandb]", "project.name=tracked-project")
        # wandb-core writes the run's log file asynchronously; tearing the service down flushes it.
        wandb.teardown()
        rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
        yield run, rows, json.loads(run.report_json.read_text())


def _curve(rows, key):
    return [(r["step"], r[key]) for r in rows if key in r]


def test_tensorboard_event_files_hold_every_row_and_the_final_metrics(tracked):
    run, rows, report = tracked
    events = EventAccumulator(str(run.root / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    for key in ("train_loss", "val_loss", "lr", "tokens"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert got == [(s, pytest.approx(v, rel=1e-6, abs=1e-9)) for s, v in _curve(rows, key)], key
    assert len(_curve(rows, "train_loss")) == 3 and len(_curve(rows, "val_loss")) == 2
    assert events.Scalars("tuned/accuracy")[-1].value == pytest.approx(report["tuned"]["metrics"]["accuracy"])
    assert events.Scalars("baseline/loss")[-1].value == pytest.approx(report["baseline"]["metrics"]["loss"], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]


def test_mlflow_run_is_named_by_the_run_id_with_params_curves_and_status(tracked):
    run, rows, report = tracked
    cfg, _ = load_config(run.config)
    uri = MlflowTracker.default_uri(cfg)
    assert uri == f"sqlite:///{run.root.parent / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked-project")
    (found,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run.id}'")
    history = client.get_metric_history(found.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(v)) for s, v in _curve(rows, "train_loss")]
    val = client.get_metric_history(found.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in val] == [(s, pytest.approx(v)) for s, v in _curve(rows, "val_loss")]
    assert found.data.params["train.lr"] == "0.01" and found.data.params["adapter.r"] == "4"
    assert found.data.metrics["tuned/accuracy"] == pytest.approx(report["tuned"]["metrics"]["accuracy"])
    assert found.data.tags["verdict"] == report["verdict"] and found.info.status == "FINISHED"
    assert found.info.artifact_uri.startswith((run.root.parent / "mlartifacts").as_uri())


def _wandb_records(path):
    """The records of a W&B transaction log (``.wandb``), decoded with W&B's own protobuf schema.

    wandb 0.31 no longer ships a Python reader for the file; its framing is LevelDB's log format
    (32 KiB blocks, a 7-byte header per chunk: CRC, length, type) after a 7-byte W&B header.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _items(items):
    """W&B items as a dict; wandb-core writes a key either flat or as a one-part nested key."""
    return {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_wandb_offline_run_lives_in_the_run_folder_with_history_and_summary(tracked):
    run, rows, report = tracked
    (log,) = run.root.glob("wandb/offline-run-*/run-*.wandb")
    records = _wandb_records(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.display_name == run.id and run_record.project == "tracked-project"
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            history[r.history.step.num] = _items(r.history.item)
    assert [(s, history[s]["train_loss"]) for s, _ in _curve(rows, "train_loss")] == \
        [(s, pytest.approx(v)) for s, v in _curve(rows, "train_loss")]
    assert [(s, history[s]["val_loss"]) for s, _ in _curve(rows, "val_loss")] == \
        [(s, pytest.approx(v)) for s, v in _curve(rows, "val_loss")]
    summary = {k: v for r in records if r.WhichOneof("record_type") == "summary"
               for k, v in _items(r.summary.update).items()}
    assert summary["tuned/accuracy"] == pytest.approx(report["tuned"]["metrics"]["accuracy"])
    assert summary["verdict"] == report["verdict"]
    config = {k: v for r in records if r.WhichOneof("record_type") == "config"
              for k, v in _items(r.config.update).items()}
    assert config["train.lr"] == 0.01 and config["train.report_to"] == ["tensorboard", "mlflow", "wandb"]


def test_report_summary_prefixes_each_side_and_keeps_the_verdict_as_text():
    report = minimal_report(baseline={"metrics": {"accuracy": 0.25}, "seconds": 1.0},
                            tuned={"metrics": {"accuracy": 0.75, "loss": 1.5}, "seconds": 1.0},
                            train={"steps": 2, "epochs": 1, "seconds": 1.0, "tokens": 10, "tokens_per_second": 10.0,
                                   "peak_rss_mb": 100.0, "best_step": 2, "best_val_loss": 0.9, "stopped_early": False,
                                   "final_train_loss": None})
    metrics, tags = report_summary(report)
    assert metrics == {"baseline/accuracy": 0.25, "tuned/accuracy": 0.75, "tuned/loss": 1.5, "train/best_val_loss": 0.9,
                       "train/tokens_per_second": 10.0, "train/peak_rss_mb": 100.0, "train/seconds": 1.0,
                       "train/steps": 2.0, "train/tokens": 10.0}  # final_train_loss is None: left out
    assert tags == {"verdict": "met", "primary_metric": "accuracy"}


def test_unknown_backend_is_a_config_error_naming_the_key(tmp_path):
    (tmp_path / "tunesmith.yaml").write_text("train: {report_to: [neptune]}\n")
    with pytest.raises(ConfigError, match="train.report_to.0"):
        load_config(tmp_path / "tunesmith.yaml")


def test_missing_library_exits_2_naming_the_setting_and_the_extra(tiny_project, monkeypatch):
    # A None entry in sys.modules is how Python itself marks a module as not importable.
    monkeypatch.setitem(sys.modules, "wandb", None)
    project = str(tiny_project / "tunesmith.yaml")
    res = CliRunner().invoke(app, ["run", "-c", project, "--set", "train.report_to=[wandb]"])
    assert res.exit_code == 2
    assert "train.report_to names wandb" in res.output and "pip install 'tunesmith[track]'" in res.output
    assert not (tiny_project / "runs").exists()  # refused before any work


def test_an_unusable_mlflow_store_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    # MLflow 3 refuses to create new plain-file stores; the user must hear which setting to change.
    uri = (tmp_path / "mlruns").as_uri()
    cfg = Config.model_validate({"train": {"report_to": ["mlflow"], "mlflow_tracking_uri": uri}})
    with pytest.raises(UserError, match="train.mlflow_tracking_uri"):
        MlflowTracker(RunPaths(tmp_path / "run"), cfg)


class _Recorder:
    def __init__(self):
        self.rows, self.closed = [], None

    def log(self, row):
        self.rows.append(row)

    def close(self, status):
        self.closed = status


class _Broken(_Recorder):
    def log(self, row):
        raise ConnectionError("tracking server went away")


def test_a_failing_tracker_is_switched_off_and_the_others_go_on(capsys):
    good, bad = _Recorder(), _Broken()
    seen = []
    trackers = Trackers({"bad": bad, "good": good})
    on_log = trackers.hook(seen.append)
    for step in (1, 2):
        on_log({"step": step, "train_loss": 1.0 / step})
    trackers.close("completed")
    assert [r["step"] for r in good.rows] == [1, 2] and [r["step"] for r in seen] == [1, 2]
    assert good.closed == "completed" and bad.closed is None  # switched off after its first failure
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert err.count("bad tracking failed in log") == 1 and "tracking server went away" in err
