"""The project file: one typed schema for the whole pipeline.

Every setting, with its default and a one-line description, lives here and nowhere
else. Unknown keys are errors (``extra="forbid"``) so that a misspelt key can never
be silently ignored. Field docstrings become the schema's descriptions.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator)

from tunesmith.config.loop import MonitorConfig, RetrainConfig
from tunesmith.tasks import TASKS, get_task

#: The task types of the registry (:mod:`tunesmith.tasks`), as a type the schema checks.
Task = Literal[tuple(TASKS)]  # type: ignore[valid-type]


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
        return self.metric or get_task(self.task).primary_metric


class SplitConfig(_Section):
    """Fractions of the data that go to each split."""

    train: float = Field(0.8, gt=0, lt=1)
    """Fraction of examples used for training."""
    validation: float = Field(0.1, ge=0, lt=1)
    """Fraction used for validation (early stopping, best checkpoint)."""
    test: float = Field(0.1, gt=0, lt=1)
    """Fraction held out for the baseline-vs-tuned comparison."""
    keep_passages_together: bool = True
    """QA rows with a context: all questions about one passage go to the same split, so no test question is
    about a passage the model saw in training (fractions are then met to within one passage's questions)."""

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


DataFormatName = Literal["auto", "text_label", "prompt_response", "qa", "alpaca", "messages", "sharegpt", "document_summary",
                         "text"]


class MixSource(_Section):
    """One dataset of a multi-task run (an item of ``data.mix``), read and prepared as if it were the only data."""

    path: Path | list[Path]
    """The source's data: a file, a folder of files, or a list of them, all in one format."""
    task: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Tag naming the task, e.g. intent or faq: stored as meta.task on every example; metrics are broken down by it."""
    weight: float = Field(1.0, gt=0)
    """Mixing weight: this task's share of the training examples is its weight over the sum of the weights."""
    task_type: Task | None = None
    """What kind of task the source holds (classification, qa, summarization, generation); None takes objective.task.
    It picks the default system prompt, how outputs are scored (matched to the source's labels for classification)
    and the metrics of the per-task report."""
    format: DataFormatName = "auto"
    """Row format of this source; ``auto`` detects it from the fields of the first row."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Maps the format's field names to this source's column names, e.g. {text: utterance, label: intent}."""
    system_prompt: str | None = None
    """System message for this source's examples ({labels} expands to its labels); None uses its task type's default."""
    labels: list[str] | None = None
    """Label set of a classification source; None takes the labels found in its training data."""


class DataConfig(_Section):
    """The examples and how to read them."""

    train: Path | list[Path] = Path("data/train.jsonl")
    """Training data: a file (JSONL, JSON array, CSV/TSV, optionally .gz, Parquet), a folder of them, or a list; split 80/10/10 unless validation and test are given."""
    validation: Path | None = None
    """Optional validation file; when set with ``test``, no split is made."""
    test: Path | None = None
    """Optional test file; when set with ``validation``, no split is made."""
    format: DataFormatName = "auto"
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
    mix: list[MixSource] | None = None
    """Several datasets in one run instead of ``train``: each with its own path, format, task tag and mixing weight;
    each is split 80/10/10 on its own and only the training split is resampled to follow the weights."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> DataConfig:
        if (self.validation is None) != (self.test is None):
            raise ValueError("give both data.validation and data.test, or neither (then data.train is split)")
        return self

    @model_validator(mode="after")
    def _mix_alone(self) -> DataConfig:
        if self.mix is None:
            return self
        if not self.mix:
            raise ValueError("data.mix needs at least one source (or leave it out and use data.train)")
        # data.train has a default, so only a train key actually given clashes with the mix.
        if "train" in self.model_fields_set:
            raise ValueError("give data.train or data.mix, not both")
        per_source = [f"data.{k}" for k in ("format", "columns", "system_prompt", "labels")
                      if getattr(self, k) != DataConfig.model_fields[k].get_default(call_default_factory=True)]
        if per_source:
            raise ValueError(f"with data.mix, set {', '.join(per_source)} on each source of the mix instead")
        if self.validation is not None:
            raise ValueError("data.mix splits each source on its own; data.validation and data.test cannot be combined with it")
        if self.balance.strategy != "none":
            raise ValueError("with data.mix, data.balance.strategy must be none: the mixing weights resample the training split")
        repeated = sorted({s.task for s in self.mix if [x.task for x in self.mix].count(s.task) > 1})
        if repeated:
            raise ValueError(f"task tags in data.mix must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_train(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.mix is not None:
            # Written out with the mix, the default train path would read back as given alongside it.
            data.pop("train", None)
        return data


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
    """Training method: lora, dora, rslora, ia3, adalora, prefix, prompt, freeze, full or qlora
    (``tunesmith methods`` lists them with their options)."""
    r: int = Field(16, gt=0)
    """Rank of the low-rank update (LoRA family; AdaLoRA's target rank)."""
    alpha: float = Field(32, gt=0)
    """LoRA scaling numerator (scale = alpha / r; alpha / sqrt(r) for rslora)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapter input (LoRA family)."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt, e.g. [q_proj, v_proj], or all-linear for every linear layer but the head
    (LoRA family; IA3 uses the model's attention keys/values and feed-forward output by default)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Settings of the chosen method only, checked against that method's own schema before any work
    (e.g. ``{num_virtual_tokens: 20}`` for prefix/prompt, ``{trainable_blocks: 2}`` for freeze)."""
    init_from: str | None = None
    """Start from an existing adapter instead of a fresh one: a run id, a run folder or an adapter
    folder of the same method (transfer learning)."""
    head: Literal["generate", "classify"] = "generate"
    """generate: the model answers in text (any task). classify (classification only): a linear head over
    the last token's hidden state gives one probability per label in one forward pass, as
    transformers' AutoModelForSequenceClassification does; the label list is then not needed in the
    prompt, and the head is trained with the adapter and saved with it. The untuned baseline still
    answers generatively, given the label list."""


#: The parts of the CPU fast path for training (:mod:`tunesmith.fastpath`), by name.
FastPathPart = Literal["fused_lora", "seeded_dropout", "fast_attention", "packing", "prefix_sharing", "bf16_weights",
                       "swiglu", "rms_norm", "rotary", "shape_buckets"]


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
    lr: float | None = Field(None, gt=0)
    """Peak learning rate of AdamW; None takes the method's usual rate (1e-3 for the LoRA family,
    2e-5 for full fine-tuning; ``tunesmith methods`` lists them)."""
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
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    """Experiment trackers that also receive the config, every metrics.jsonl row and the final test metrics:
    tensorboard (into ``<run>/tensorboard``), mlflow, wandb (pip install 'tunesmith[track]')."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking URI (a server URL, or a database such as sqlite:///path/mlflow.db); None uses the local
    database ``<project.runs_dir>/mlflow.db``."""
    mlflow_experiment: str | None = None
    """MLflow experiment that receives the runs; None uses project.name."""
    wandb_project: str | None = None
    """Weights & Biases project; None uses project.name. Runs are logged offline into ``<run>/wandb`` unless
    WANDB_API_KEY is set (or WANDB_MODE says otherwise)."""
    checkpoint_every: int | None = Field(None, gt=0)
    """Write a resumable checkpoint (weights, optimiser, scheduler, RNG states, data position) every
    N optimiser steps; None writes one at every validation. ``tunesmith run --resume RUN`` continues from it."""
    fast_path: Literal["auto", "off"] | list[FastPathPart] = "auto"
    """The training fast path (same arithmetic, less time and memory): ``auto`` applies every part
    that fits the model and hardware and warns about any that should fit but do not; ``off`` trains
    the model exactly as transformers and PEFT define it; a list applies only the parts named
    (fused_lora, seeded_dropout, fast_attention, packing, prefix_sharing, bf16_weights, swiglu,
    rms_norm, rotary, shape_buckets). Whatever it changed on the model is undone after training."""


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
    """Measure perplexity on general text and the probability of the right answers to general multiple-choice
    questions, before and after tuning."""
    max_perplexity_increase: float = Field(0.2, ge=0)
    """Warn when perplexity on the general text rises significantly and by more than this fraction (0.2 = 20%)."""
    max_choice_drop: float = Field(0.1, ge=0)
    """Warn when the probability the model gives the right option of the general multiple-choice questions falls
    significantly and by more than this fraction of its value before tuning (0.1 = 10%)."""


class EvalConfig(_Section):
    """How the baseline and the tuned model are evaluated."""

    max_new_tokens: int = Field(32, gt=0)
    """Longest generated answer in tokens (greedy decoding)."""
    batch_size: int = Field(32, gt=0)
    """Prompts generated together (left-padded, with the KV cache)."""
    max_examples: int | None = Field(None, gt=0)
    """Evaluate on at most this many test examples; None uses the whole test split."""
    constrained: Literal["auto", "on", "off"] = "auto"
    """Classification: decode within the label set (a token trie of the labels), so every answer is a label and
    comes with its probability; the free answer is kept beside it. auto and on do it for classification runs
    (not data.mix), off decodes freely and maps the answer onto a label."""
    baseline: bool = True
    """Evaluate the untuned base model on the same test split first."""
    show_examples: int = Field(3, ge=0)
    """How many best and worst test examples the report shows."""
    bootstrap_resamples: int = Field(1000, ge=100)
    """Resamples for the paired bootstrap intervals and the permutation test."""
    confidence: float = Field(0.95, gt=0.5, lt=1)
    """Confidence level of the intervals; "significant" means p < 1 - confidence."""
    min_test_examples: int = Field(30, ge=1)
    """Fewest test examples a bootstrap interval is trusted for. Below it, data check, the run and the report
    say the test set is small; proportions (accuracy, exact match) get exact intervals and tests, other
    metrics no interval, and a verdict needs an interval or a significant exact test."""
    slice_by: list[str] = Field(default_factory=lambda: ["label"])
    """Fields to break the metrics down by: label, or any metadata column of the data (a data.mix run adds task)."""
    judge_criteria: list[str] = Field(default_factory=lambda: ["correctness", "completeness", "tone", "adherence"])
    """Rubric criteria the LLM judge (``tunesmith judge``) scores from 1 to 5."""
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    """Fairness report: metric per group of a sensitive attribute, counterfactual term swaps."""
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    """Forgetting check: perplexity on general text and general multiple-choice questions, before and after tuning."""


#: Keys ``sweep.space`` may search, as ``--set`` spells them.
SEARCHABLE_KEYS: tuple[str, ...] = ("train.lr", "train.epochs", "train.batch_size", "train.weight_decay",
                                    "train.warmup_ratio", "adapter.r", "adapter.alpha", "adapter.dropout")


def _searchable_key(key: str) -> str:
    if key not in SEARCHABLE_KEYS:
        near = difflib.get_close_matches(key, SEARCHABLE_KEYS, n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ValueError(f"not a searchable key; {hint}(searchable: {', '.join(SEARCHABLE_KEYS)})")
    return key


class ParamSpace(_Section):
    """The values one key of ``sweep.space`` may take: a range (``low``, ``high``) or a list of ``choices``."""

    low: int | float | None = None
    """Smallest value of a range (included)."""
    high: int | float | None = None
    """Largest value of a range (included)."""
    log: bool = False
    """Sample the range on a log scale (learning rates, weight decay); needs low > 0 and no step."""
    step: int | float | None = Field(None, gt=0)
    """Spacing of the values tried, counted from low (e.g. 1 for whole epochs); None samples the whole range
    (whole numbers for integer keys such as adapter.r)."""
    choices: list[int | float] | None = Field(None, min_length=1)
    """The values to try, instead of a range, e.g. [8, 16, 32]."""

    @model_validator(mode="after")
    def _range_or_choices(self) -> ParamSpace:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices, or a range (low, high, log, step), not both")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices: [...])")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log-scale range needs low > 0 and no step")
        return self


class PrunerConfig(_Section):
    """Median pruning: a trial stops early when its validation loss is worse than the median of earlier trials."""

    enabled: bool = True
    """Stop a trial whose best validation loss so far is worse than the median of earlier trials' validation
    losses at the same optimiser step (optuna's MedianPruner); set ``train.eval_every`` so that trials validate
    at the same steps."""
    n_startup_trials: int = Field(3, ge=0)
    """Trials that always run to the end before any trial can be pruned, so that the median means something."""
    n_warmup_steps: int = Field(0, ge=0)
    """Optimiser steps of each trial before it can be pruned (early validation losses are noisy)."""


class SweepConfig(_Section):
    """Hyperparameter search with ``tunesmith sweep``: what is searched, how many trials, when to give up on one."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Study name: its folder is ``<project.runs_dir>/sweeps/<name>/``; None uses project.name."""
    trials: int = Field(20, gt=0)
    """Finished (complete or pruned) trials the study holds when ``tunesmith sweep`` ends; ``--trials`` overrides it."""
    objective: Literal["val_loss"] = "val_loss"
    """What each trial is scored by, minimised: the lowest validation loss its run reached (the weights it keeps).
    Validation data only: choosing hyperparameters by their test-split score would leak the test set into the
    choice and overstate the chosen model's test result, so the test split is left to judge the final model."""
    startup_trials: int = Field(5, gt=0)
    """Trials sampled at random before the TPE sampler starts modelling which values do well."""
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    """Stopping trials that are clearly worse than earlier ones, at their validations."""
    space: dict[Annotated[str, AfterValidator(_searchable_key)], ParamSpace] = Field(default_factory=dict)
    """The search space: dotted keys (train.lr, train.epochs, train.batch_size, train.weight_decay, train.warmup_ratio,
    adapter.r, adapter.alpha, adapter.dropout) mapped to a range or choices, e.g.
    {train.lr: {low: 1e-4, high: 3e-3, log: true}, adapter.r: {choices: [8, 16, 32]}}."""


class ServeLimits(_Section):
    """What one request may ask of ``tunesmith serve``; over a limit, the request gets a 4xx naming the field."""

    max_body_bytes: int = Field(1_000_000, gt=0)
    """Largest request body (413 beyond it)."""
    max_prompt_tokens: int | None = Field(None, gt=0)
    """Longest prompt in tokens as rendered (400 beyond it); None: the base model's context length. A prompt within
    it but over the served run's model.max_seq_len is shortened in its middle, as evaluation shortened it."""
    max_tokens: int = Field(512, gt=0)
    """Largest ``max_tokens`` a request may ask for (400 beyond it)."""
    default_max_tokens: int = Field(256, gt=0)
    """``max_tokens`` when a request gives none."""
    max_queue: int = Field(256, gt=0)
    """Requests waiting for a place in the running batch; beyond it requests get 429."""
    max_batch: int = Field(32, gt=0)
    """Rows decoded together (continuous batching: requests join and leave between decode steps)."""


class ServeLog(_Section):
    """The request log: every request and answer, with the feedback users give."""

    enabled: bool = True
    """Record every request and response (set false to opt out)."""
    path: Path = Path("logs/requests.sqlite")
    """The log's SQLite file (relative to the project file)."""
    scrub_pii: bool = True
    """Replace personal data (e-mail, phone, card, IBAN...; the data step's scrubber) before anything is written."""


class ServeConfig(_Section):
    """``tunesmith serve``: an OpenAI-compatible server for the base model and runs' adapters."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs an API key."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on (0: any free port, printed at start)."""
    runs: list[str] = Field(default_factory=list)
    """Runs (id, folder or alias) whose adapters are served, each under its run id."""
    adapters: dict[str, str] = Field(default_factory=dict)
    """More adapters by name: name -> adapter folder."""
    api_key_env: str = "TUNESMITH_API_KEY"
    """Environment variable holding the API key clients must send (``Authorization: Bearer KEY``)."""
    admin_key_env: str = "TUNESMITH_ADMIN_KEY"
    """Environment variable holding the key that adds and removes adapters; unset: the API key does."""
    limits: ServeLimits = Field(default_factory=ServeLimits)
    """Request limits and batching."""
    log: ServeLog = Field(default_factory=ServeLog)
    """The request log."""
    shutdown_seconds: float = Field(30.0, gt=0)
    """On SIGTERM, how long requests in flight may take to finish."""
    follow_seconds: float = Field(5.0, gt=0)
    """How often a run served by alias (``--run production``) checks whether the alias moved."""


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
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    """Hyperparameter search (``tunesmith sweep``): search space, number of trials, pruning."""
    serve: ServeConfig = Field(default_factory=ServeConfig)
    """The OpenAI-compatible server (``tunesmith serve``): what it serves, limits, request log."""
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    """Monitoring live traffic against the training data (``tunesmith monitor``): signals and their thresholds."""
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    """Retraining on reviewed traffic (``tunesmith retrain``) and the gate that promotes the candidate."""

    @model_validator(mode="after")
    def _head_fits_the_task(self) -> Config:
        if self.adapter.head == "classify" and (self.objective.task != "classification" or self.data.mix is not None):
            raise ValueError("adapter.head: classify needs objective.task: classification with one dataset (no data.mix)")
        return self


# --------------------------------------------------------------------------- loading
