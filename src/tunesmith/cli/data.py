"""``tunesmith data``: check, prepare and augment data, and review generated rows before training on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tunesmith.cli.common import (ApiKeyEnvOpt, ConfigOpt, EndpointModelOpt, EndpointOpt, JsonOpt, SetOpt,
                                  app, emit, handle_errors, lazy)
from tunesmith.config import load_config
from tunesmith.console import console
from tunesmith.errors import UserError
from tunesmith.data.prepare import guess_task, prepare_splits
from tunesmith.data.review import export_sheet, import_sheets
from tunesmith.report.data_report import write_data_report

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Check, prepare, augment and review data before training on it.")
app.add_typer(data_app, name="data")


@data_app.command("check")
@handle_errors
def data_check(
    files: Annotated[Optional[list[Path]], typer.Argument(
        help="Data files or folders (read together as one training input); none: the project's own data.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Project file whose data settings apply.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task (default: the project's, else guessed from the format).")] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report.")] = Path("data-report"),
    strict: Annotated[bool, typer.Option("--strict", help="Exit with code 2 if any row is set aside.")] = False,
    tokens: Annotated[bool, typer.Option("--tokens/--no-tokens", help="Measure token lengths with the base model's tokenizer.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Read, validate, clean, de-duplicate and split FILES; write a data report (markdown, HTML, plots).

    Without FILES the project's data is checked (the project file given by --config, else
    ./tunesmith.yaml). With --tokens (the default) the base model's tokenizer measures every
    example as training will see it, applies data.length_policy, and one example is shown rendered.
    """
    if not files:
        config = config or Path("tunesmith.yaml")
        if not config.is_file():
            raise UserError(f"no data files given and no project file {config}: name files "
                            "(tunesmith data check FILE...) or a project (-c tunesmith.yaml)")
    # FILES replace the project's data, a data.mix included.
    overrides = [*(set_ or [])]
    if files:
        overrides += [f"data.train={json.dumps([str(f.resolve()) for f in files])}", "data.mix=null"]
    if task is None and config is None and files:
        # --set data.format / data.columns decide the format (and so the task) before anything is guessed.
        given, _ = load_config(None, overrides)
        task = guess_task(files[0], given.data.format, dict(given.data.columns))
    if task is not None:
        overrides.append(f"objective.task={task}")
    if strict:
        overrides.append("data.strict=true")
    cfg, base = load_config(config, overrides)
    splits = lazy("tunesmith.steps.data").prepare_data(cfg, base, require_test=False) if tokens else prepare_splits(cfg, base, require_test=False)
    summary = write_data_report(splits, out)
    if as_json:
        emit({**summary, "report": str(out / "data_report.html")})
        return
    lazy("tunesmith.steps.data").print_data_summary(splits, out)
    console.print(f"{summary['rows_read']} rows read: {summary['rows_kept']} kept, {sum(summary['rejected'].values())} "
                  f"set aside, {sum(summary['removed'].values())} removed; {summary['conflicts']} conflicts, "
                  f"{summary['leakage']} leaking, PII {summary['pii'] or 'none'}")
    print(f"Report: {out / 'data_report.html'}")


@data_app.command("prepare")
@handle_errors
def data_prepare(
    config: ConfigOpt = Path("tunesmith.yaml"),
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the splits, manifest and report.")] = Path("prepared"),
    as_json: JsonOpt = False,
) -> None:
    """Prepare the project's splits once and write them with their manifest and data report.

    Point data.prepared at the folder (in the project file, or --set data.prepared=FOLDER)
    and `tunesmith run` trains and evaluates on exactly these splits without preparing again.
    """
    cfg, base = load_config(config, set_)
    splits = lazy("tunesmith.steps.data").prepare_data(cfg, base)
    summary = write_data_report(splits, out)
    if as_json:
        emit({**summary, "folder": str(out), "manifest": str(out / "manifest.json")})
        return
    lazy("tunesmith.steps.data").print_data_summary(splits, out)
    console.print(f"Prepared splits {splits.counts()} (data hash {summary['data_hash'][:12]}) in {out}")
    console.print(f"Train on them: tunesmith run -c {config} --set data.prepared={out.resolve()}")


@data_app.command("augment")
@handle_errors
def data_augment(
    config: ConfigOpt = Path("tunesmith.yaml"),
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file for the generated rows (in your data's format).")] = Path("data/generated.jsonl"),
    paraphrases: Annotated[int, typer.Option("--paraphrases", help="Rewrites to ask for per training example.")] = 0,
    new: Annotated[int, typer.Option("--new", help="New examples to ask for in total (self-instruct from a few seeds each).")] = 0,
    generator: Annotated[str, typer.Option("--generator", help="base (the project's base model), a local model folder, or openai.")] = "base",
    endpoint: EndpointOpt = None,
    model: EndpointModelOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.")] = 0.8,
    max_seeds: Annotated[Optional[int], typer.Option("--max-seeds", help="Use at most this many training examples as seeds.")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing output file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate synthetic rows from the training split: paraphrases and new examples, each marked needs_review.

    Rows repeating a seed or each other are filtered out (listed in OUT.filtered.jsonl).
    Add OUT to data.train; training leaves rows with needs_review: true out until they are
    approved with `tunesmith data review`, unless data.unreviewed is include.
    """
    cfg, base = load_config(config, set_)
    gen = lazy("tunesmith.steps.model").load_generator(cfg, generator, endpoint, model, api_key_env)
    result = lazy("tunesmith.ops.augment").augment_data(cfg, base, gen, out, paraphrases=paraphrases, new=new, temperature=temperature,
                                   max_seeds=max_seeds, append=append)
    if as_json:
        emit({**result.counts, "out": str(out), "generator": gen.name})
        return
    console.print(f"Generated {result.counts['asked']} candidates with {gen.name}: {result.counts['kept']} kept "
                  f"{result.counts['by_method']}, dropped {result.counts['dropped'] or 'none'}")
    console.print(f"Rows in {out} need review: tunesmith data review export {out} --out review.csv")


review_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Review generated rows before they are trained on.")
data_app.add_typer(review_app, name="review")


@review_app.command("export")
@handle_errors
def review_export(
    generated: Annotated[Path, typer.Argument(help="Generated rows (JSONL) from `tunesmith data augment`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sheet to write: .csv for spreadsheets, else JSONL.")] = Path("review.csv"),
    as_json: JsonOpt = False,
) -> None:
    """Write the rows waiting for review as a sheet: fill `decision` (approve/reject) and edit fields freely."""
    n = export_sheet(generated, out)
    if as_json:
        emit({"rows": n, "sheet": str(out)})
        return
    console.print(f"{n} rows to review in {out}; then: tunesmith data review import {out} --into {generated}")


@review_app.command("import")
@handle_errors
def review_import(
    sheets: Annotated[list[Path], typer.Argument(help="Reviewed sheets (CSV or JSONL).")],
    into: Annotated[Path, typer.Option("--into", help="The generated rows file the sheets came from (updated in place).")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Name recorded on each decided row.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Apply reviewed sheets: approved rows enter training, rejected ones are moved aside, empty decisions wait."""
    result = import_sheets(sheets, into, reviewer)
    if as_json:
        emit({**result.counts, "rejected_file": str(result.rejected_path) if result.rejected_path else None})
        return
    console.print(f"{result.counts}; rejected rows: {result.rejected_path or 'none'}")
