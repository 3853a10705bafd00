"""What a server serves: the base model and adapters, each with what its run trained it with.

A run's adapter is served with the run's chat template rendering, system prompt (label list
included), ``model.max_seq_len`` and, for classification, the label trie, so a client that sends
only the user's message gets what evaluation measured. ``/v1/models`` shows what the run's report
says about it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import Config, load_config
from tunesmith.errors import UserError
from tunesmith.inference.constrained import LabelTrie, label_trie
from tunesmith.inference.engine import Completion
from tunesmith.models.adapters import has_adapter, load_adapter
from tunesmith.models.load import LoadedModel, load_base_model
from tunesmith.monitor.requestlog import LoggedRequest
from tunesmith.models.precision import inference_weights
from tunesmith.report.schema import read_report_if_any
from tunesmith.runs.aliases import alias_holder
from tunesmith.runs.folder import RunPaths
from tunesmith.runs.store import find_known_run

#: PEFT adapter types whose rows can share a batch with other adapters (PEFT's mixed-batch inference).
MIXABLE = {"LORA"}


@dataclass
class Served:
    """One model the server answers as.

    Attributes:
        name: What clients put in ``model``.
        adapter: The adapter folder; None for the untuned base.
        run: The run it came from, if any.
        system_prompt: The system message prompts get when the client sends none.
        labels: The label set of a classification run.
        constrained: Answers are decoded within the labels by default.
        max_seq_len: Prompts are fitted to this many tokens as evaluation fitted them.
        info: What ``/v1/models`` shows under ``tunesmith``: run id, task, data hash, verdict, metric, interval.
        trie: The labels' token trie (set once the tokenizer is known).
        follows: The alias (``production``) this is served under, switching runs when the alias moves; None when
            served under its own name.
        classifier: For a classification-head run (``adapter.head: classify``), its own model: the base with
            the run's head and adapter, answering by one forward pass (not through the batching engine,
            whose rows share one language-model head).
    """

    name: str
    adapter: Path | None = None
    run: RunPaths | None = None
    system_prompt: str | None = None
    labels: list[str] | None = None
    constrained: bool = False
    max_seq_len: int = 2048
    info: dict[str, Any] = field(default_factory=dict)
    trie: LabelTrie | None = None
    classifier: LoadedModel | None = None
    head: bool = False
    follows: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def public_name(self) -> str:
        """What clients put in ``model``: the alias it follows, else its own name."""
        return self.follows or self.name

    def with_tokenizer(self, tokenizer: Any) -> Served:
        """Build the label trie (classification runs) with the served tokenizer."""
        if self.constrained and self.labels and not self.head:
            self.trie = label_trie(tokenizer, self.labels, self.system_prompt)
        return self


def check_mixable(path: Path) -> None:
    """Refuse an adapter the batch cannot mix with others.

    Raises:
        UserError: Not a PEFT adapter folder in safetensors, or not plain LoRA (rsLoRA is; DoRA is not).
    """
    config = path / "adapter_config.json"
    if not config.is_file():
        raise UserError(f"{path}: no adapter_config.json; serve takes PEFT LoRA adapters "
                        "(a run's adapter folder or `tunesmith export --adapter`)")
    if not (path / "adapter_model.safetensors").is_file():
        raise UserError(f"{path}: no adapter_model.safetensors; serve loads weights from safetensors only "
                        "(a pickled adapter_model.bin can run code when loaded)")
    settings = json.loads(config.read_text())
    kind = settings.get("peft_type")
    if settings.get("use_dora") or settings.get("lora_bias"):
        raise UserError(f"{path}: a {'DoRA' if settings.get('use_dora') else 'LoRA-with-bias'} adapter; serve batches "
                        "plain LoRA adapters (rsLoRA included), whose rows share one batch. Merge it instead: "
                        "`tunesmith export --run RUN --merge OUT` and serve OUT with --base")
    if kind not in MIXABLE:
        raise UserError(f"{path}: a {kind} adapter; serve batches LoRA adapters (lora, rslora) only, "
                        "because rows of different adapters share one batch. Merge it instead: "
                        "`tunesmith export --run RUN --merge OUT` and serve OUT with --base")


def served_run(ref: str, runs_dir: Path) -> tuple[Served, Config]:
    """A run's adapter as served: its engine name is the run id.

    A run given by an alias (``production``) is served under the alias, and follows it when it moves.

    Raises:
        UserError: No such run, no saved adapter, or an adapter that cannot be batched.
    """
    run = find_known_run(ref, runs_dir)
    cfg, _ = load_config(run.config, stored=True)
    if not has_adapter(run.adapter):
        raise UserError(f"run {run.id} has no saved adapter in {run.adapter}")
    head = cfg.adapter.head == "classify"
    check_mixable(run.adapter)
    manifest = json.loads((run.data / "manifest.json").read_text()) if (run.data / "manifest.json").is_file() else {}
    labels = manifest.get("labels") if not manifest.get("tasks") else None
    constrained = bool(labels) and cfg.objective.task == "classification" and cfg.eval.constrained != "off"
    report = read_report_if_any(run.report_json)
    info: dict[str, Any] = {"run_id": run.id, "task": cfg.objective.task, "method": cfg.adapter.method,
                            "base": cfg.model.base, "data_hash": manifest.get("data_hash")}
    if report is not None:
        iv = report.interval
        info.update(data_hash=report.data.data_hash or info["data_hash"], verdict=report.verdict,
                    metric=report.objective.metric, value=report.primary(),
                    baseline=report.primary("baseline"), target=report.objective.target,
                    interval=None if iv is None else [iv.low, iv.high])
    served = Served(run.id, run.adapter, run, manifest.get("system_prompt"), labels, constrained and not head,
                    cfg.model.max_seq_len, info, head=head)
    if alias_holder(runs_dir, ref) == run.id:  # served under the alias, following its moves
        served.follows = info["alias"] = ref
    return served, cfg


def load_classifier(served: Served, base: Path, precision: str, trust_remote_code: bool) -> Served:
    """Give a classification-head run its own model: the base with the run's head and adapter, bf16 weights
    where autocast is bf16.

    Raises:
        ModelError: The adapter does not fit the base.
    """
    lm = load_base_model(base, precision, trust_remote_code, labels=served.labels)
    lm.model = load_adapter(lm.model, served.adapter).eval()
    inference_weights(lm.model, lm.autocast_dtype)
    served.classifier = lm
    return served


def served_adapter(name: str, path: Path) -> Served:
    """An adapter folder served under ``name``: a run's ``adapter`` folder with its run's prompt and labels,
    any other with none of its own.

    Raises:
        UserError: Not a LoRA adapter folder.
    """
    path = Path(path)
    if (path.parent / "config.yaml").is_file() and path.name == "adapter":
        served, _ = served_run(str(path.parent), path.parent.parent)
        served.name = name
        return served
    check_mixable(path)
    return Served(name, path, info={"adapter": str(path)})


def log_entry(rid: str, kind: str, model: str, served: Served, messages: list[dict[str, str]], c: Completion,
              arrived: float, user: str | None, metadata: dict[str, Any]) -> LoggedRequest:
    """The request log's record of one answer (the client's, or a shadow's beside it)."""
    return LoggedRequest(
        id=rid, endpoint=kind, model=model, run_id=served.run.id if served.run else None, messages=messages,
        answer=c.text, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
        latency_ms=round((time.perf_counter() - arrived) * 1000, 2), first_token_ms=round(c.first_token_seconds * 1000, 2),
        finish_reason=c.finish_reason, label=c.label, probability=c.probability, user=user, metadata=metadata)
