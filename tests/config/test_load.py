"""Config schema: defaults, validation messages with full key paths, overrides."""

from pathlib import Path

import pytest

from tunesmith.config import Config, DataConfig, apply_overrides, config_to_yaml, load_config
from tunesmith.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tunesmith.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid_and_documented():
    cfg = Config()
    assert cfg.model.base == "smollm2-135m-instruct"
    assert cfg.objective.primary_metric == "accuracy"
    # every field of every section carries a description (the docstring under it)
    for section_name, section in Config.model_fields.items():
        assert section.description, section_name
        for name, field in section.annotation.model_fields.items():
            assert field.description, f"{section_name}.{name}"


def test_round_trip_yaml(tmp_path):
    cfg = Config()
    cfg2, _ = load_config(write(tmp_path, config_to_yaml(cfg)))
    assert cfg2 == cfg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  epocs: 2\n", ["train.epocs: unknown key", "did you mean 'train.epochs'"]),
        ("trian:\n  epochs: 2\n", ["trian: unknown key", "did you mean 'train'"]),
        ("adapter:\n  r: many\n", ["adapter.r:", "integer"]),
        ("train:\n  lr: -0.1\n", ["train.lr:", "greater than 0"]),
        ("data:\n  split: {train: 0.8, validation: 0.1, test: 0.2}\n", ["data.split:", "sum to 1"]),
        ("objective:\n  task: translation\n", ["objective.task:", "classification"]),
        ("data:\n  validation: v.jsonl\n", ["data:", "both data.validation and data.test"]),
        ("train:\n  fast_path: [fused_lora, turbo]\n", ["train.fast_path", "rms_norm"]),
        ("train:\n  fast_path: fast\n", ["train.fast_path", "'auto' or 'off'"]),
    ],
)
def test_invalid_values_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert str(tmp_path / "tunesmith.yaml") in message
    for part in expected:
        assert part in message


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    cfg, _ = load_config(write(tmp_path, "train: {epochs: 3}\n"), ["train.epochs=1.5", "adapter.target_modules=[q_proj, v_proj]"])
    assert cfg.train.epochs == 1.5
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"train.epohcs: unknown key; did you mean 'train.epochs'"):
        load_config(write(tmp_path, ""), ["train.epohcs=2"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["train.epochs"])


def test_relative_paths_resolve_against_the_project_file(tmp_path):
    cfg, base = load_config(write(tmp_path, "data: {train: d/x.jsonl}\n"))
    assert base == tmp_path.resolve()
    assert cfg.data.train == Path("d/x.jsonl")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_data_section_rejects_one_sided_split_files():
    with pytest.raises(ValueError):
        DataConfig(test=Path("t.jsonl"))
