"""The data step as commands run it: the base model's tokenizer measures the splits, and a printout.

Kept apart from the pipeline so that ``tunesmith data check`` and ``data prepare`` load only the
tokenizer's stack, not the training one (half the start-up time).
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import Config
from tunesmith.console import console
from tunesmith.data.prepare import Splits, prepare_splits
from tunesmith.errors import DataError
from tunesmith.models.load import load_tokenizer
from tunesmith.models.resolve import resolve_base


def base_path(cfg: Config) -> Path:
    """Resolve ``model.base`` to a local checkpoint (converting the embedded model once)."""
    with console.status(f"Resolving base model {cfg.model.base}"):
        return resolve_base(cfg.model.base, status=console.print)


def check_data_files(cfg: Config) -> None:
    """Check that every data path the (resolved) config names exists, before a run folder is made for it.

    Raises:
        DataError: A path is missing; the message names its key (``data.train``, ``data.mix[1].path``, ...).
    """
    d = cfg.data
    named: list[tuple[str, Path | list[Path] | None]] = [("data.validation", d.validation), ("data.test", d.test),
                                                         ("data.prepared", d.prepared)]
    if d.prepared is None:
        named += [(f"data.mix[{i}].path", s.path) for i, s in enumerate(d.mix or [])] if d.mix else [("data.train", d.train)]
    for key, value in named:
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).exists():
                raise DataError(f"{key}: {path}: file not found")


def prepare_data(cfg: Config, base_dir: Path, path: Path | None = None, require_test: bool = True) -> Splits:
    """The splits, measured in tokens with the base model's tokenizer (resolved unless ``path`` is given)."""
    tokenizer = load_tokenizer(path or base_path(cfg), cfg.model.trust_remote_code)
    return prepare_splits(cfg, base_dir, require_test=require_test, tokenizer=tokenizer)


def print_data_summary(splits: Splits, folder: Path) -> None:
    """Print the format, one rendered example, and where every row went."""
    acc = splits.accounting()
    mapping = ", ".join(f if f == c else f"{f} <- {c}" for f, c in splits.columns.items())
    console.print(f"Data: format [bold]{splits.format}[/] ({mapping}); {acc['rows_read']} rows read, {acc['kept']} kept "
                  f"{splits.counts()}, {acc['rejected']} set aside, {sum(acc['removed'].values())} removed")
    if splits.preview:
        console.print(f"  example {splits.preview['id']} as training sees it:", highlight=False)
        console.print(splits.preview["text"], markup=False, highlight=False, style="dim")
        console.print(f"  loss on: {splits.preview['loss_on']!r}", markup=False, highlight=False)
    for tag, t in splits.tasks.items():
        console.print(f"  task {tag} ({t['type']}, {t['format']}, weight {t['weight']:g}): train {t['train']} "
                      f"({t['share']:.0%}, from {t['available']}), validation {t['validation']}, test {t['test']}")
    for name, st in splits.lengths.items():
        if st.get("count"):
            console.print(f"  {name} tokens: median {st['p50']}, p99 {st['p99']}, max {st['max']}; "
                          f"{st['over_max_seq_len']} over max_seq_len {st['max_seq_len']} ({st['policy']}"
                          + (": their text is shortened in the middle, the instructions kept" if st["policy"] == "truncate"
                             and st["over_max_seq_len"] else "") + ")")
    if splits.balance:
        b = splits.balance
        console.print(f"  class balance: imbalance ratio {b['imbalance_ratio']} ({b['strategy']}"
                      + (f", after: {b['imbalance_ratio_after']}" if b["strategy"] in ("oversample", "undersample") else "") + ")")
    for kind, n in acc["rejected_by_reason"].items():
        console.print(f"  set aside {n}: {kind} (see {folder / 'rejected.jsonl'})")
    for rule, n in acc["removed"].items():
        console.print(f"  removed {n}: {rule} (see {folder / 'removed.jsonl'})")
    if acc["pii"]:
        console.print(f"  personal data and secrets ({acc['pii_policy']}): {acc['pii']}")
    if acc["conflicts"]:
        console.print(f"  {acc['conflicts']} inputs appear with different answers (conflicts)")
    for warning in acc["warnings"]:
        console.print(f"  warning: {warning}")
