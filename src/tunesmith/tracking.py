"""Experiment trackers: TensorBoard, MLflow and Weights & Biases receive what a run records.

``metrics.jsonl`` stays the run's own record; the trackers named in ``train.report_to`` get the
flattened config as parameters, every ``metrics.jsonl`` row under its own keys (``train_loss``,
``val_loss``, ``lr``, ``tokens``...) at its optimiser step, the final test metrics
(``baseline/<metric>``, ``tuned/<metric>``, ``train/<figure>``) and the verdict, and the run's end
status. Adding a backend is one class with the :class:`Tracker` methods and one entry in
:data:`TRACKERS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Protocol

from rich.markup import escape

from tunesmith.config import Config, TrainConfig, flatten_config
from tunesmith.errors import UserError
from tunesmith.report.schema import RunReport
from tunesmith.runs.folder import RunPaths
from tunesmith.console import console

INSTALL_HINT = "pip install 'tunesmith[track]'"

#: Figures of the training summary in ``report.json`` that trackers receive as ``train/<name>``.
TRAIN_FIGURES = ("final_train_loss", "best_val_loss", "tokens_per_second", "peak_rss_mb", "seconds", "steps", "tokens")


class Tracker(Protocol):
    """One experiment-tracking backend, opened for one run (``cls(run, cfg)``)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's configuration (dotted keys such as ``train.lr``)."""

    def log(self, row: Mapping[str, Any]) -> None:
        """Record one ``metrics.jsonl`` row at its ``step``."""

    def log_summary(self, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        """Record the final test metrics and text facts such as the verdict."""

    def close(self, status: str) -> None:
        """End the run as ``completed`` or ``failed`` and flush what is buffered."""


def _require(module: str, backend: str) -> ModuleType:
    """Import a tracker's library, or say which setting needs it and how to install it.

    Raises:
        UserError: The library is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"train.report_to names {backend}, but its library cannot be imported ({exc}): "
                        f"{INSTALL_HINT}") from None


def _scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric fields of a row other than its step (flags such as ``best`` are not curves)."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker:
    """Event files in ``<run>/tensorboard``: scalars per step, the config as text and hyper-parameters."""

    @staticmethod
    def requires(cfg: TrainConfig) -> tuple[str, ...]:
        """Modules this backend imports with ``cfg``."""
        return ("tensorboard",)

    def __init__(self, run: RunPaths, cfg: Config):
        tb = _require("torch.utils.tensorboard", "tensorboard")
        self.writer = tb.SummaryWriter(log_dir=str(run.root / "tensorboard"))
        self.params: dict[str, Any] = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        # hparams accept only numbers, strings and booleans; lists and None are shown as text.
        self.params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in self.params.items()))

    def log(self, row: Mapping[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, row["step"])

    def log_summary(self, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        # run_name="." keeps the hyper-parameters beside the curves instead of in a sub-run.
        self.writer.add_hparams(self.params, dict(metrics), run_name=".")
        for key, value in tags.items():
            self.writer.add_text(key, value)

    def close(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


class MlflowTracker:
    """One MLflow run per tunesmith run, named by its id, in the experiment ``train.mlflow_experiment``.

    Without ``train.mlflow_tracking_uri`` the store is the SQLite database ``<runs_dir>/mlflow.db``
    (MLflow 3 refuses new plain-file stores) with artifacts under ``<runs_dir>/mlartifacts``.
    """

    @staticmethod
    def default_uri(cfg: Config) -> str:
        """The local store used when ``train.mlflow_tracking_uri`` is not set."""
        return f"sqlite:///{(cfg.project.runs_dir / 'mlflow.db').resolve()}"

    @staticmethod
    def requires(cfg: TrainConfig) -> tuple[str, ...]:
        """Modules this backend imports with ``cfg`` (a database store goes through SQLAlchemy and Alembic)."""
        database = (cfg.mlflow_tracking_uri or "sqlite:").startswith(("sqlite:", "postgresql", "mysql"))
        return ("mlflow", "sqlalchemy", "alembic") if database else ("mlflow",)

    def __init__(self, run: RunPaths, cfg: Config):
        tracking = _require("mlflow.tracking", "mlflow")
        self._entities = _require("mlflow.entities", "mlflow")
        validation = _require("mlflow.utils.validation", "mlflow")
        self._max_param = validation.MAX_PARAM_VAL_LENGTH
        error = _require("mlflow.exceptions", "mlflow").MlflowException
        uri = cfg.train.mlflow_tracking_uri or self.default_uri(cfg)
        name = cfg.train.mlflow_experiment or cfg.project.name
        artifacts = None if cfg.train.mlflow_tracking_uri else (cfg.project.runs_dir / "mlartifacts").resolve().as_uri()
        try:
            self.client = tracking.MlflowClient(uri)
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                try:
                    experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
                except error:
                    # Another run (a parallel sweep trial) created it in between.
                    experiment_id = self.client.get_experiment_by_name(name).experiment_id
            self.run_id = self.client.create_run(experiment_id, run_name=run.id,
                                                 tags={"tunesmith.run_dir": str(run.root)}).info.run_id
        except error as exc:
            raise UserError(f"train.mlflow_tracking_uri {uri}: MLflow cannot open it: {exc}") from None

    def _metrics(self, values: Mapping[str, float], step: int) -> list[Any]:
        now = int(time.time() * 1000)
        return [self._entities.Metric(key, value, now, step) for key, value in values.items()]

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[self._entities.Param(k, str(v)[: self._max_param])
                                                   for k, v in params.items()])

    def log(self, row: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, metrics=self._metrics(_scalars(row), int(row["step"])))

    def log_summary(self, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, metrics=self._metrics(metrics, 0),
                              tags=[self._entities.RunTag(k, v) for k, v in tags.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status == "completed" else "FAILED")


class WandbTracker:
    """A Weights & Biases run named by the run id, its files in ``<run>/wandb``.

    Without ``WANDB_API_KEY`` (and without ``WANDB_MODE``) the run is logged offline; ``wandb sync
    <run>/wandb/offline-run-*`` uploads it later.
    """

    @staticmethod
    def requires(cfg: TrainConfig) -> tuple[str, ...]:
        """Modules this backend imports with ``cfg``."""
        return ("wandb",)

    def __init__(self, run: RunPaths, cfg: Config):
        wandb = _require("wandb", "wandb")
        mode = None if os.environ.get("WANDB_MODE") else ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        # console="off": wandb would otherwise wrap stdout, where --json prints its document.
        self.run = wandb.init(project=cfg.train.wandb_project or cfg.project.name, name=run.id, dir=str(run.root),
                              mode=mode, reinit="create_new", settings=wandb.Settings(console="off"))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log(self, row: Mapping[str, Any]) -> None:
        self.run.log(_scalars(row), step=int(row["step"]))

    def log_summary(self, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        self.run.summary.update({**metrics, **tags})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


#: Backend name (as written in ``train.report_to``) -> its class.
TRACKERS: dict[str, type] = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker, "wandb": WandbTracker}


def check_trackers(cfg: TrainConfig) -> None:
    """Check that the libraries of every backend in ``train.report_to`` are installed, before any work starts.

    Raises:
        UserError: A library is missing (the message names ``train.report_to`` and the pip extra).
    """
    for name in cfg.report_to:
        missing = [m for m in TRACKERS[name].requires(cfg) if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"train.report_to names {name}, which needs {', '.join(missing)} (not installed): "
                            f"{INSTALL_HINT}")


class Trackers:
    """The open trackers of one run, fed together.

    A tracker that raises while logging is switched off with a warning instead of ending the
    run: ``metrics.jsonl`` still holds every row, and hours of training are not lost to a
    tracking hiccup.
    """

    def __init__(self, trackers: Mapping[str, Tracker]):
        self.active = dict(trackers)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.active.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - any backend failure is reported the same way
                console.print(f"[yellow]warning:[/] {name} tracking failed in {method} ({type(exc).__name__}: "
                              f"{escape(str(exc))}); it is off for the rest of this run (metrics.jsonl has every row)")
                del self.active[name]

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Give every tracker the run's configuration."""
        self._each("log_params", params)

    def log(self, row: Mapping[str, Any]) -> None:
        """Give every tracker one ``metrics.jsonl`` row (the ``on_log`` hook of ``train_adapter``)."""
        self._each("log", row)

    def hook(self, also: Callable[[dict[str, Any]], None] | None = None) -> Callable[[dict[str, Any]], None]:
        """The ``on_log`` callback for ``train_adapter``: every tracker gets the row, then ``also`` does."""
        def on_log(row: dict[str, Any]) -> None:
            self.log(row)
            if also is not None:
                also(row)
        return on_log

    def log_summary(self, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        """Give every tracker the final metrics and text facts."""
        self._each("log_summary", metrics, tags)

    def close(self, status: str) -> None:
        """End every tracker's run with ``status``; the group is empty afterwards."""
        self._each("close", status)
        self.active.clear()


def open_trackers(cfg: Config, run: RunPaths) -> Trackers:
    """Open every backend in ``cfg.train.report_to`` for ``run`` and give them the flattened config.

    Raises:
        UserError: A backend's library is missing or its store cannot be opened (those already
            opened are closed as failed).
    """
    opened: dict[str, Tracker] = {}
    try:
        for name in dict.fromkeys(cfg.train.report_to):
            with console.status(f"Opening {name} tracking"):
                opened[name] = TRACKERS[name](run, cfg)
    except BaseException:
        Trackers(opened).close("failed")
        raise
    trackers = Trackers(opened)
    trackers.log_params(flatten_config(cfg.model_dump(mode="json")))
    return trackers


def report_summary(report: RunReport) -> tuple[dict[str, float], dict[str, str]]:
    """The final metrics and text facts of a run's report for :meth:`Trackers.log_summary`.

    Returns:
        ``baseline/<metric>`` and ``tuned/<metric>`` for every test metric, ``train/<figure>`` for the
        training figures; and the verdict and the primary metric's name.
    """
    metrics: dict[str, float] = {}
    for side, part in (("baseline", report.baseline), ("tuned", report.tuned)):
        for name, value in (part.metrics if part is not None else {}).items():
            metrics[f"{side}/{name}"] = value
    train = report.train.model_dump() if report.train is not None else {}
    metrics.update({f"train/{k}": train[k] for k in TRAIN_FIGURES if train.get(k) is not None})
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return metrics, {"verdict": report.verdict, "primary_metric": report.objective.metric}
