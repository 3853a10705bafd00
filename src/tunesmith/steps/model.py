"""The model steps bound to a project's config: the checks before work starts, loading the base model, finding a
run's adapter, a chat generator."""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import Config
from tunesmith.console import console
from tunesmith.errors import UserError
from tunesmith.evaluate.metrics import check_metric
from tunesmith.inference.clients import Generator, LocalGenerator, OpenAIGenerator
from tunesmith.models.adapters import check_adapter, get_method, has_adapter, load_adapter, method_options
from tunesmith.models.load import LoadedModel, load_base_model
from tunesmith.models.resolve import resolve_base
from tunesmith.runs.folder import RunPaths, find_run
from tunesmith.steps.data import base_path
from tunesmith.tracking import check_trackers


def preflight(cfg: Config) -> None:
    """Check what the schema alone cannot (registry names) before any work starts.

    Raises:
        ConfigError: An unknown metric or adapter method.
        UserError: A tracker in train.report_to is not installed.
    """
    check_metric(cfg.objective.task, cfg.objective.primary_metric)
    check_adapter(cfg.adapter)
    check_trackers(cfg.train)


def load_model(cfg: Config, path: Path | None = None, labels: list[str] | None = None) -> LoadedModel:
    """Load the base model from ``path``, or resolve ``model.base`` first; with ``labels``, with a classification head."""
    path = path or base_path(cfg)
    method = get_method(cfg.adapter.method)
    extra = method.load_kwargs(method_options(cfg.adapter)) if method.load_kwargs else None
    with console.status(f"Loading base model {cfg.model.base}"):
        lm = load_base_model(path, cfg.model.precision, cfg.model.trust_remote_code, load_kwargs=extra, labels=labels)
    dtype = "bf16 autocast" if lm.autocast_dtype is not None else "fp32"
    console.print(f"Base model {cfg.model.base} loaded from {path} on {lm.device.type} ({dtype})")
    return lm


def load_tuned(cfg: Config, run: RunPaths, labels: list[str] | None) -> LoadedModel:
    """The run's tuned model: the base (with a classification head for a head run) and the run's saved adapter.

    Raises:
        UserError: The run has no saved adapter.
    """
    source = find_adapter(str(run.root), cfg.project.runs_dir)
    lm = load_model(cfg, labels=labels if cfg.adapter.head == "classify" else None)
    lm.model = load_adapter(lm.model, source)
    return lm


def load_generator(cfg: Config, generator: str, endpoint: str | None, model: str | None,
                   api_key_env: str) -> Generator:
    """The generator named on the command line: ``base``, a local model folder, or ``openai`` (with endpoint and model).

    Raises:
        UserError: ``openai`` without an endpoint or model.
    """
    if generator == "openai":
        if not endpoint or not model:
            raise UserError("--generator openai needs --endpoint URL and --model NAME")
        return OpenAIGenerator(endpoint, model, api_key_env)
    path = base_path(cfg) if generator == "base" else resolve_base(generator, status=console.print)
    lm = load_base_model(path, cfg.model.precision, cfg.model.trust_remote_code)
    return LocalGenerator(lm, name=cfg.model.base if generator == "base" else generator)


def find_adapter(ref: str, runs_dir: Path) -> Path:
    """The adapter folder that ``ref`` names: an adapter folder, a run folder, or a run id in ``runs_dir``.

    Raises:
        UserError: No adapter there.
    """
    if has_adapter(Path(ref)):
        return Path(ref)
    run = find_run(ref, runs_dir)
    if not has_adapter(run.adapter):
        raise UserError(f"run {run.id} has no saved adapter in {run.adapter}")
    return run.adapter

