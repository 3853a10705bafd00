"""Reading a project file: overrides from the command line, errors that name the key and the closest valid one,
the stored YAML, flattened keys, and paths relative to the project file."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tunesmith.config.schema import Config
from tunesmith.errors import ConfigError


def _section_in(annotation: Any) -> type[BaseModel] | None:
    """The section an annotation holds, itself or inside a list or union such as ``list[MixSource] | None``."""
    if get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((s for a in get_args(annotation) if (s := _section_in(a)) is not None), None)


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names valid at ``loc`` (the path of the offending key's parent) in the schema."""
    cls: Any = model
    keyed = False
    for part in loc:
        if isinstance(part, int) or keyed:
            # An item of a list of sections (data.mix.0) or of a mapping (sweep.space.train.lr) has the section's keys.
            keyed = False
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        keyed = get_origin(field.annotation) is dict
        cls = _section_in(field.annotation)
        if cls is None:
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
        # A mapping key's own error (sweep.space.<key>) ends in a "[key]" marker; the key itself names the place.
        loc = tuple(p for p in err["loc"] if p != "[key]")
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
        set_key(raw, parts, value, f"--set {item!r}")
    return raw


def set_key(raw: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    """Set the key at the dotted path ``parts`` of a raw config mapping, creating sections on the way.

    Raises:
        ConfigError: A part of the path is a value, not a section (``source`` names where the key came from).
    """
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


#: Keys earlier versions of tunesmith had, and what became of them. A run's own stored config (written
#: by the version that ran it) loads without them; a project file that still sets one gets this reason.
RETIRED_KEYS: dict[str, str] = {
    "eval.forgetting.max_probe_drop": "the forgetting check no longer scores generated answers by token F1; "
                                      "use eval.forgetting.max_choice_drop (a relative fall in the probability of "
                                      "the right answers)",
    "eval.forgetting.max_new_tokens": "the forgetting check no longer generates answers",
}


def _retire(raw: dict[str, Any], stored: bool, source: str) -> None:
    """Remove retired keys from a stored run config; name them with their reason in a project file."""
    found = []
    for key, reason in RETIRED_KEYS.items():
        *parents, last = key.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            if stored:
                del node[last]
            else:
                found.append(f"  {key}: retired ({reason})")
    if found:
        raise ConfigError("\n".join([f"invalid configuration in {source}:", *found]))


def load_config(path: Path | None, overrides: list[str] | None = None, *,
                stored: bool = False) -> tuple[Config, Path]:
    """Read, override and validate a project file.

    Args:
        path: The YAML project file; None uses all defaults with the current folder as base.
        overrides: ``--set`` items.
        stored: ``path`` is a run's own ``config.yaml``, possibly written by an earlier tunesmith:
            keys since retired (:data:`RETIRED_KEYS`) are dropped instead of refused.

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
    _retire(raw, stored, source)
    try:
        return Config.model_validate(raw), base
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def config_to_yaml(cfg: Config) -> str:
    """Serialise a config as YAML with every value, defaults included."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The dotted keys of a config mapping (``train.lr``, as ``--set`` writes them) with their values.

    Lists and empty mappings are values of their own key; non-empty mappings are walked into.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolve_path(base: Path, p: Path) -> Path:
    """Resolve ``p`` against the project folder unless it is absolute."""
    return p if p.is_absolute() else (base / p)


def resolve_paths(base: Path, p: Path | list[Path]) -> list[Path]:
    """Resolve one path or a list of paths against the project folder."""
    return [resolve_path(base, x) for x in (p if isinstance(p, list) else [p])]
