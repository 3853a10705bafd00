"""The project file: one typed schema for the whole pipeline.

Every setting, with its default and a one-line description, lives here and nowhere
else. Unknown keys are errors (``extra="forbid"``) so that a misspelt key can never
be silently ignored. Field docstrings become the schema's descriptions.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunesmith.errors import ConfigError

Task = Literal["classification", "qa", "summarization", "generation"]
TASKS: tuple[str, ...] = ("classification", "qa", "summarization", "generation")

#: The primary metric each task is judged by unless ``objective.metric`` says otherwise.
DEFAULT_METRIC: dict[str, str] = {
    "classification": "accuracy",
    "qa": "token_f1",
    "summarization": "rougeL",
    "generation": "rougeL",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ProjectConfig(_Section):
    """Where runs go and what makes them reproducible."""

    name: str = "tunesmith-project"
    """A name for the project, shown in reports."""
    runs_dir: Path = Path("runs")
    """Folder that receives one sub-folder per run (relative to the project file)."""
    seed: int = 42
    """Seed for the data split, adapter initialisation and data order."""


class ObjectiveConfig(_Section):
    """What the model is for and what counts as success."""

    task: Task = "classification"
    """The task: classification, qa, summarization or generation."""
    metric: str | None = None
    """Primary metric that judges the task; None picks the task's default (accuracy, token_f1, rougeL)."""
    target: float | None = None
    """Value of the primary metric on the test split that counts as success; None means: beat the baseline."""

    @property
    def primary_metric(self) -> str:
        """The metric the verdict is based on."""
        return self.metric or DEFAULT_METRIC[self.task]


class SplitConfig(_Section):
    """Fractions of the data that go to each split."""

    train: float = Field(0.8, gt=0, lt=1)
    """Fraction of examples used for training."""
    validation: float = Field(0.1, ge=0, lt=1)
    """Fraction used for validation (early stopping, best checkpoint)."""
    test: float = Field(0.1, gt=0, lt=1)
    """Fraction held out for the baseline-vs-tuned comparison."""

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class CleanConfig(_Section):
    """Text cleaning applied to prompts and answers (labels are left as they are)."""

    unicode_nfc: bool = True
    """Normalise Unicode to NFC, so that visually equal texts are equal."""
    strip_control: bool = True
    """Remove control and zero-width characters; turn CRLF into LF."""
    whitespace: bool = True
    """Collapse runs of spaces, strip lines, and keep at most one blank line."""
    lowercase: bool = False
    """Lower-case every text."""
    remove_patterns: list[str] = Field(default_factory=list)
    """Regular expressions whose matches are deleted (boilerplate such as signatures or disclaimers)."""
    remove_citations: bool = False
    """Delete bracketed citation markers such as [1] or [2, 3]."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> CleanConfig:
        for i, pattern in enumerate(self.remove_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"remove_patterns[{i}] {pattern!r} is not a valid regular expression: {exc}") from None
        return self


class DedupConfig(_Section):
    """Duplicate, conflict and leakage detection."""

    exact: bool = True
    """Remove exact duplicates (same input and answer after normalising case, punctuation and spacing)."""
    near: bool = True
    """Remove near-duplicates (MinHash LSH on shingles of the normalised text), keeping the first occurrence."""
    near_threshold: float = Field(0.85, gt=0, le=1)
    """Estimated Jaccard similarity at or above which two examples count as near-duplicates."""
    num_perm: int = Field(128, ge=16, le=1024)
    """MinHash permutations: more is more precise and slower."""
    shingle_chars: int = Field(5, ge=2, le=20)
    """Length of the shingles compared, in UTF-8 bytes (characters, for ASCII text)."""
    conflicts: Literal["keep", "drop"] = "keep"
    """Same input with different answers: keep and report them, or drop every conflicting row."""
    leakage: Literal["remove", "report"] = "remove"
    """Validation/test examples whose input nearly duplicates a training input: remove them, or only report."""


PiiType = Literal["PRIVATE_KEY", "SECRET", "EMAIL", "IBAN", "CARD", "SSN", "IP", "PHONE", "PERSON", "LOCATION"]


class PiiConfig(_Section):
    """Personal data and secrets in the examples."""

    policy: Literal["redact", "drop", "report", "off"] = "redact"
    """redact: replace with typed placeholders such as <EMAIL>; drop: remove the row; report: count only; off: no scan."""
    types: list[PiiType] = Field(default_factory=lambda: ["PRIVATE_KEY", "SECRET", "EMAIL", "IBAN", "CARD", "SSN", "IP", "PHONE",
                                                         "PERSON", "LOCATION"])
    """Which kinds to detect; PERSON and LOCATION need the ``ner`` backend."""
    ner: Literal["none", "presidio"] = "none"
    """Named-entity backend for names (PERSON) and addresses (LOCATION): presidio (pip install presidio-analyzer and a spaCy model)."""
    ner_language: str = "en"
    """Language passed to the named-entity backend."""
    ner_score: float = Field(0.6, ge=0, le=1)
    """Lowest confidence at which the named-entity backend's finding counts."""


class BalanceConfig(_Section):
    """Class balance of the training split (classification); validation and test are never resampled."""

    strategy: Literal["none", "oversample", "undersample", "loss_weights"] = "none"
    """none; oversample: repeat examples of smaller classes up to the largest; undersample: cut larger classes down to
    the smallest (rule ``balance``); loss_weights: weight each example's loss by the inverse frequency of its class."""
    min_per_class: int = Field(10, ge=1)
    """Warn when a class has fewer training examples than this: too few to learn it."""
    min_test_per_class: int = Field(5, ge=1)
    """Warn when a class has fewer test examples than this: too few to measure it."""


class DataConfig(_Section):
    """The examples and how to read them."""

    train: Path | list[Path] = Path("data/train.jsonl")
    """Training data: a file (JSONL, JSON array, CSV/TSV, optionally .gz, Parquet), a folder of them, or a list; split 80/10/10 unless validation and test are given."""
    validation: Path | None = None
    """Optional validation file; when set with ``test``, no split is made."""
    test: Path | None = None
    """Optional test file; when set with ``validation``, no split is made."""
    format: Literal["auto", "text_label", "prompt_response", "qa", "alpaca", "messages", "sharegpt", "document_summary", "text"] = "auto"
    """Row format; ``auto`` detects it from the fields of the first row."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Maps a format's field names to your column names, e.g. {text: utterance, label: intent}."""
    system_prompt: str | None = None
    """Instruction given to the model as the system message; {labels} expands to the label list. None uses the task's default."""
    labels: list[str] | None = None
    """Label set for classification; None takes the labels found in the training data."""
    strict: bool = False
    """Fail (exit code 2) when any row is set aside, instead of training on the rows that are usable."""
    max_examples: int | None = Field(None, gt=0)
    """Use at most this many examples (after a seeded shuffle); None uses all."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    """Split fractions when the data is split here."""
    clean: CleanConfig = Field(default_factory=CleanConfig)
    """Text cleaning."""
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    """Duplicates, conflicts and train/test leakage."""
    pii: PiiConfig = Field(default_factory=PiiConfig)
    """Personal data and secrets: redact, drop, or report."""
    length_policy: Literal["truncate", "drop", "fail"] = "truncate"
    """Examples over model.max_seq_len tokens: truncate (the prompt is cut from the left, the answer kept), drop (rule ``length``), or fail."""
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    """Class balance for classification."""
    unreviewed: Literal["exclude", "include"] = "exclude"
    """Generated rows still marked ``needs_review: true``: leave them out of training (rule ``needs_review``) or take them as they are."""
    prepared: Path | None = None
    """A folder written by ``tunesmith data prepare``; when set, its splits are used as they are and the files above are not read."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> DataConfig:
        if (self.validation is None) != (self.test is None):
            raise ValueError("give both data.validation and data.test, or neither (then data.train is split)")
        return self


class ModelConfig(_Section):
    """The base model."""

    base: str = "smollm2-135m-instruct"
    """Embedded model name, a local Hugging Face model folder, or a hub id (needs a network)."""
    max_seq_len: int = Field(512, gt=8)
    """Longest example in tokens; longer prompts are cut from the left, keeping the answer."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute precision; auto uses bf16 autocast where the hardware runs it fast, fp32 elsewhere."""
    trust_remote_code: bool = False
    """Allow model code from the model folder to run; off unless you trust its source."""


class AdapterConfig(_Section):
    """The parameter-efficient adapter that is trained."""

    method: str = "lora"
    """Adapter method (see ``tunesmith.models.adapters``)."""
    r: int = Field(16, gt=0)
    """LoRA rank."""
    alpha: float = Field(32, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt, e.g. [q_proj, v_proj], or all-linear for every linear layer but the head."""


class TrainConfig(_Section):
    """The optimisation loop."""

    epochs: float = Field(2, gt=0)
    """Passes over the training split (fractions allowed)."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimiser steps, whatever ``epochs`` says."""
    batch_size: int = Field(16, gt=0)
    """Examples per forward pass."""
    grad_accum: int = Field(1, gt=0)
    """Forward passes per optimiser step (effective batch = batch_size * grad_accum)."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Fraction of the steps spent warming the learning rate up from 0."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warm-up."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the gradient norm to this value; None disables clipping."""
    eval_every: int | None = Field(None, gt=0)
    """Evaluate on the validation split every N optimiser steps; None evaluates once per epoch."""
    early_stopping_patience: int | None = Field(3, gt=0)
    """Stop after this many evaluations without improvement; None never stops early."""
    logging_steps: int = Field(5, gt=0)
    """Log the training loss every N optimiser steps."""
    threads: int | None = Field(None, gt=0)
    """CPU threads for PyTorch; None uses PyTorch's default (one per core)."""


class FairnessConfig(_Section):
    """Per-group metrics and counterfactual probes for a sensitive attribute."""

    attribute: str | None = None
    """Metadata column holding the sensitive attribute (e.g. gender, region); None skips the group report."""
    counterfactual_swaps: list[tuple[str, str]] = Field(default_factory=list)
    """Pairs of terms swapped both ways in test prompts, e.g. [[he, she], [his, her]]; the report counts changed answers."""
    min_ratio: float = Field(0.8, gt=0, le=1)
    """Disparate-impact ratio (worst group's metric over the best's) below which the report flags the model."""


class ForgettingConfig(_Section):
    """General ability before and after tuning, on small sets bundled with tunesmith."""

    enabled: bool = True
    """Measure perplexity on general text and a general instruction probe, before and after tuning."""
    max_perplexity_increase: float = Field(0.2, ge=0)
    """Warn when perplexity on the general text rises by more than this fraction (0.2 = 20%)."""
    max_probe_drop: float = Field(0.1, ge=0)
    """Warn when the probe's token F1 falls by more than this."""
    max_new_tokens: int = Field(16, gt=0)
    """Longest probe answer in tokens."""


class EvalConfig(_Section):
    """How the baseline and the tuned model are evaluated."""

    max_new_tokens: int = Field(32, gt=0)
    """Longest generated answer in tokens (greedy decoding)."""
    batch_size: int = Field(32, gt=0)
    """Prompts generated together (left-padded, with the KV cache)."""
    max_examples: int | None = Field(None, gt=0)
    """Evaluate on at most this many test examples; None uses the whole test split."""
    baseline: bool = True
    """Evaluate the untuned base model on the same test split first."""
    show_examples: int = Field(3, ge=0)
    """How many best and worst test examples the report shows."""
    bootstrap_resamples: int = Field(1000, ge=100)
    """Resamples for the paired bootstrap intervals and the permutation test."""
    confidence: float = Field(0.95, gt=0.5, lt=1)
    """Confidence level of the intervals; "significant" means p < 1 - confidence."""
    slice_by: list[str] = Field(default_factory=lambda: ["label"])
    """Fields to break the metrics down by: label, or any metadata column of the data."""
    judge_criteria: list[str] = Field(default_factory=lambda: ["correctness", "completeness", "tone", "adherence"])
    """Rubric criteria the LLM judge (``tunesmith judge``) scores from 1 to 5."""
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    """Fairness report: metric per group of a sensitive attribute, counterfactual term swaps."""
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    """Forgetting check: general text and a general instruction probe, before and after tuning."""


class Config(_Section):
    """A tunesmith project file."""

    project: ProjectConfig = Field(default_factory=ProjectConfig)
    """Naming, output folder and seed."""
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    """Task, metric and target."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Data files and format."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Base model."""
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    """Adapter method and its settings."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Training loop."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation."""


# --------------------------------------------------------------------------- loading


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names valid at ``loc`` (the path of the offending key's parent) in the schema."""
    cls: Any = model
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
    return list(getattr(cls, "model_fields", {}))


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """Turn a pydantic error into lines that name each key's full dotted path.

    Args:
        exc: The validation error.
        source: Where the config came from, for the first line.

    Returns:
        A human-readable, multi-line message.
    """
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _field_names(Config, loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), near[0]])}'?" if near else ""
            valid_s = f" (valid keys here: {', '.join(valid)})" if valid else ""
            lines.append(f"  {path}: unknown key{hint}{valid_s}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            lines.append(f"  {path}: {msg}{shown}")
    return "\n".join(lines)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: cannot parse value: {exc}") from exc
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config mapping (values parsed as YAML).

    Args:
        raw: The mapping read from the project file; changed in place.
        overrides: Items of the form ``section.key=value``.

    Returns:
        The same mapping, for chaining.

    Raises:
        ConfigError: An override is not of the form KEY=VALUE or walks into a non-mapping.
    """
    for item in overrides:
        parts, value = _parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: Path | None, overrides: list[str] | None = None) -> tuple[Config, Path]:
    """Read, override and validate a project file.

    Args:
        path: The YAML project file; None uses all defaults with the current folder as base.
        overrides: ``--set`` items.

    Returns:
        The validated config and the folder that relative paths are resolved against.

    Raises:
        ConfigError: The file is missing, is not YAML, or fails validation.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"project file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        raw = loaded or {}
        base = path.resolve().parent
    apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw), base
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def config_to_yaml(cfg: Config) -> str:
    """Serialise a config as YAML with every value, defaults included."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def resolve_path(base: Path, p: Path) -> Path:
    """Resolve ``p`` against the project folder unless it is absolute."""
    return p if p.is_absolute() else (base / p)


def resolve_paths(base: Path, p: Path | list[Path]) -> list[Path]:
    """Resolve one path or a list of paths against the project folder."""
    return [resolve_path(base, x) for x in (p if isinstance(p, list) else [p])]
