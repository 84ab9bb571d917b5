"""Config: YAML round trip, unknown keys, wrong types and out-of-range values."""

import sys

import pytest

from nmt.config import (
    Config,
    describe,
    dump_yaml,
    from_dict,
    load_config,
    parse_overrides,
    save_config,
)
from nmt.errors import ConfigError


def test_defaults_are_valid_and_round_trip(tmp_path):
    config = Config()
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_resolved_config_round_trips(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "name: demo\ndata:\n  src_lang: de\n  tgt_lang: en\n  format: hub\n"
        "  dataset: bentrevett/multi30k\nmodel:\n  hidden_size: 64\n  attention: mlp\n"
        "training:\n  lr: 1\n  max_epochs: null\n", encoding="utf-8")
    config = load_config(tmp_path / "run.yaml", ["decoding.beam_size=3", "training.seed=7"])
    assert config.model.hidden_size == 64 and config.model.attention == "mlp"
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert config.training.max_epochs is None
    assert config.decoding.beam_size == 3 and config.training.seed == 7
    save_config(config, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == config
    assert dump_yaml(again) == dump_yaml(config)


@pytest.mark.parametrize("raw, expected", [
    ({"model": {"hiden_size": 3}},
     "unknown config key 'model.hiden_size'; did you mean 'hidden_size'"),
    ({"modle": {}}, "unknown config key 'modle'; did you mean 'model'"),
    ({"training": {"learning_rate": 1}}, "training.learning_rate"),
])
def test_unknown_key_names_key_and_closest(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict(raw)


@pytest.mark.parametrize("raw, expected", [
    ({"decoding": {"beam_size": "five"}}, r"decoding.beam_size: expected an integer, got 'five'"),
    ({"decoding": {"beam_size": 2.5}}, r"decoding.beam_size: expected an integer"),
    ({"model": {"input_feeding": "yes"}}, r"model.input_feeding: expected true or false"),
    ({"training": {"lr": True}}, r"training.lr: expected a number"),
    ({"training": {"lr": "fast"}}, r"training.lr: expected a number, got 'fast'"),
    ({"training": {"lr": float("nan")}}, r"training.lr: must be a finite number"),
    ({"data": {"src_lang": 3}}, r"data.src_lang: expected a string"),
    ({"model": "big"}, r"model: expected a mapping"),
])
def test_wrong_types_are_refused(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict(raw)


@pytest.mark.parametrize("raw, expected", [
    ({"decoding": {"beam_size": 0}}, r"decoding.beam_size: must be at least 1, got 0"),
    ({"decoding": {"max_len_b": -1}}, r"decoding.max_len_b: must be at least 0"),
    ({"model": {"dropout": 1.5}}, r"model.dropout: must be at most 0.99"),
    ({"training": {"lr": 0}}, r"training.lr: must be greater than 0"),
    ({"tokenizer": {"vocab_size": 3}}, r"tokenizer.vocab_size: must be at least 8"),
    ({"model": {"attention": "luong"}}, r"model.attention: 'luong' is not one of none, dot"),
    ({"model": {"attention": "genral"}}, r"did you mean 'general'"),
])
def test_out_of_range_values_are_refused(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict(raw)


@pytest.mark.parametrize("raw, expected", [
    ({"data": {"format": "hub"}}, "data.dataset: required"),
    ({"data": {"src_lang": "en", "tgt_lang": "en"}}, "both 'en'"),
    ({"tokenizer": {"vocab_size": 200}}, "byte_fallback"),
    ({"decoding": {"beam_size": 2, "n_best": 3}}, "n_best"),
    ({"format_version": 99}, "newer version of nmt"),
    ({"tokenizer": {"src_model": "a.model"}}, "go together"),
    ({"training": {"max_steps": None, "max_epochs": None, "patience": 0}}, "no stopping rule"),
    ({"training": {"batch_tokens": 100}}, r"batch_tokens \(100\) must hold .* 130"),
])
def test_cross_field_rules(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict(raw)


def test_overrides_parse_yaml_scalars_and_reject_bad_syntax():
    assert parse_overrides(["a.b=3", "a.c=true", "d=null", "e.f=x y"]) == {
        "a": {"b": 3, "c": True}, "d": None, "e": {"f": "x y"}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["model.hidden_size"])


def test_exponent_without_dot_is_a_number(tmp_path):
    (tmp_path / "c.yaml").write_text("training:\n  lr: 1e-3\n  min_lr: 5E-7\n", encoding="utf-8")
    config = load_config(tmp_path / "c.yaml")
    assert config.training.lr == 1e-3 and config.training.min_lr == 5e-7


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.system ['true']\n",
                                        encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


def test_describe_lists_every_key_with_help():
    rows = describe()
    keys = [key for key, _, _ in rows]
    assert "model.hidden_size" in keys and "data.translation_field" in keys
    assert "output_dir" in keys
    assert all(help_text for _, _, help_text in rows)
    assert len(keys) == len(set(keys))


def _docs_reference():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "docs_reference.py"
    spec = importlib.util.spec_from_file_location("docs_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_pages_are_current():
    """docs/config.md and docs/cli.md are what scripts/docs_reference.py writes from the
    config dataclasses and the parsers."""
    module = _docs_reference()
    stale = module.stale()
    if sys.version_info[:2] != (3, 11):  # argparse lays out help otherwise from 3.13 on
        stale = [name for name in stale if name != "cli.md"]
    assert stale == [], "run: python scripts/docs_reference.py --write (with Python 3.11, as CI)"


def test_the_reference_pages_follow_the_config_and_the_parser():
    """Each page holds every config key and every flag, so a stale page would be caught."""
    module = _docs_reference()
    config, cli = module.config_page(), module.cli_page()
    assert all(f"| `{key}` |" in config for key, _, _ in describe())
    from nmt.cli import build_parser

    for action in build_parser()._actions:
        for name in getattr(action, "choices", None) or {}:
            assert f"## nmt {name}" in cli
    assert "--word-reward R" in cli and "--stop-stage M" in cli


def test_data_train_takes_a_list_of_sources_checked_item_by_item():
    from nmt.config import from_dict

    config = from_dict({"data": {"train": ["mine/train", "base/train"]}})
    assert config.data.train == ["mine/train", "base/train"]
    assert from_dict({"data": {"train": "one"}}).data.train == "one"
    with pytest.raises(ConfigError, match=r"data.train\[1\]: expected a string, got 3"):
        from_dict({"data": {"train": ["a", 3]}})
    with pytest.raises(ConfigError, match="data.train: an empty list"):
        from_dict({"data": {"train": []}})
    with pytest.raises(ConfigError, match="data.valid: expected a string"):
        from_dict({"data": {"valid": ["a", "b"]}})


def test_valid_after_needs_a_budget_to_be_a_share_of():
    from nmt.config import from_dict

    with pytest.raises(ConfigError, match="training.valid_after is a share of the budget"):
        from_dict({"training": {"valid_after": 0.5, "max_epochs": None, "patience": 3}})
    assert from_dict({"training": {"valid_after": 0.5}}).training.valid_after == 0.5
