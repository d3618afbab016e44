"""params.yaml loads into one typed object, and bad values fail at load with a message that names
the key and what is allowed; params that contradict the model fail before its weights load."""

import pytest
import yaml
from support.tensors import PARAMS_YAML, run_params

from textclf.core.families import checked_config_and_family
from textclf.core.params import ParamsError, flat_params, load_params, parse_params


def test_defaults_load():
    params = load_params(PARAMS_YAML)
    assert params.model == "gpt2" and params.method == "finetune"
    assert params.data.source == "imdb" and params.data.max_tokens == 256
    assert params.finetune.trainable_blocks == 2
    assert params.train.lr == pytest.approx(5e-5) and isinstance(params.train.lr, float)
    assert params.learning_rate == params.train.lr  # finetune: train.lr


def test_lora_learning_rate_overrides_train_lr():
    assert load_params(PARAMS_YAML, {"method": "lora"}).learning_rate == pytest.approx(5e-4)
    assert load_params(PARAMS_YAML, {"method": "lora", "lora": {"lr": None}}).learning_rate \
        == pytest.approx(5e-5)


def test_float_given_as_string_is_accepted():
    # `dvc exp run -S train.lr=5e-05` writes 5e-05, which PyYAML (YAML 1.1) reads as a string
    params = load_params(PARAMS_YAML, {"train": {"lr": "5e-05"}, "lora": {"lr": "1e-3"}})
    assert params.train.lr == 5e-05 and isinstance(params.train.lr, float)
    assert params.lora.lr == 1e-3


@pytest.mark.parametrize("overrides, expected", [
    ({"train": {"learning_rate": 1e-3}},
     ["unknown key train.learning_rate", "allowed in train: epochs, batch_size, lr,"]),
    ({"optimizer": "adam"}, ["unknown key optimizer", "allowed in the top level: seed, model,"]),
    ({"train": {"epochs": "three"}}, ["train.epochs must be an integer, got 'three'"]),
    ({"train": {"group_by_length": "yes"}},
     ["train.group_by_length must be true or false, got 'yes'"]),
    ({"train": {"lr": "fast"}}, ["train.lr must be a", "number, got 'fast'"]),
    ({"method": "prompting"},
     ["method must be one of 'zero_shot', 'finetune', 'lora', got 'prompting'"]),
    ({"data": {"truncation": "middle"}},
     ["data.truncation must be one of 'left', 'right', 'head_tail', got 'middle'"]),
    ({"finetune": {"trainable_blocks": "some"}},
     ["finetune.trainable_blocks must be an integer or one of 'all', got 'some'"]),
    ({"train": {"batch_size": 0}}, ["train.batch_size must be a positive integer, got 0"]),
    ({"train": {"lr": -1e-5}}, ["train.lr must be positive, got -1e-05"]),
    ({"lora": {"r": 0}}, ["lora.r must be a positive integer, got 0"]),
    ({"data": {"train_size": 0}},
     ["data.train_size must be a positive integer or null (all), got 0"]),
    ({"data": {"truncation": "head_tail", "head_tokens": 256}},
     ["data.head_tokens must be in [1, data.max_tokens) = [1, 256)", "got 256"]),
    ({"data": {"truncation": "head_tail", "max_tokens": 64, "head_tokens": 100}},
     ["data.head_tokens must be in [1, data.max_tokens) = [1, 64)", "got 100"]),
    ({"data": {"source": "/nonexistent/reviews"}},
     ["data.source: no such directory '/nonexistent/reviews'",
      "'imdb', a hub dataset id, or an existing local directory"]),
    ({"data": {"source": "./missing_reviews"}},
     ["data.source: no such directory './missing_reviews'"]),
    ({"data": {"label_names": ["pos", "pos"]}},
     ["data.label_names must be null or a list of distinct, non-empty names, got ['pos', 'pos']"]),
    ({"data": {"label_names": "negative,positive"}},
     ["data.label_names must be a list of a string or null, got 'negative,positive'"]),
    ({"model": "./no/such/model"},
     ["model: no such directory './no/such/model'",
      "a hub id such as 'gpt2' or an existing local model directory"]),
    ({"eval": {"long_texts": "chunks"}},
     ["eval.long_texts must be one of 'truncate', 'windows', got 'chunks'"]),
    ({"eval": {"window_overlap": 1.0}}, ["eval.window_overlap must be in [0, 1), got 1.0"]),
    ({"eval": {"window_combine": "max"}},
     ["eval.window_combine must be one of 'mean_logits', 'mean_probs', got 'max'"]),
])
def test_bad_value_names_key_and_allowed_values(overrides, expected):
    with pytest.raises(ParamsError) as error:
        load_params(PARAMS_YAML, overrides)
    for text in expected:
        assert text in str(error.value)


def test_head_tokens_is_only_checked_for_head_tail():
    assert load_params(PARAMS_YAML, {"data": {"head_tokens": 999}}).data.truncation == "left"


def test_several_type_errors_are_reported_together():
    with pytest.raises(ParamsError) as error:
        load_params(PARAMS_YAML, {"method": "nope", "train": {"epochs": "x", "bogus": 1}})
    message = str(error.value)
    assert "method must be one of" in message
    assert "train.epochs must be an integer" in message
    assert "unknown key train.bogus" in message


def test_several_range_errors_are_reported_together():
    with pytest.raises(ParamsError) as error:
        load_params(PARAMS_YAML, {"train": {"batch_size": 0, "lr": -1.0}, "lora": {"r": 0},
                                  "data": {"train_size": 0}})
    lines = [line for line in str(error.value).splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 4
    for key in ("train.batch_size", "train.lr", "lora.r", "data.train_size"):
        assert any(key in line for line in lines)


def test_a_key_left_out_of_the_params_file_is_named_missing():
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    del raw["train"]["weight_decay"]
    del raw["lora"]["r"]
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert "missing key train.weight_decay" in str(error.value)
    assert "missing key lora.r" in str(error.value)


def test_params_yaml_is_complete_and_valid():
    params = load_params(PARAMS_YAML)
    assert params.model == "gpt2" and params.method == "finetune" and params.train.epochs == 3
    assert params.train.weight_decay == 0.01 and params.lora.r == 8


def test_params_yaml_holds_every_knob_each_commented_where_it_is_defined():
    """One params file: every key the params object has is in params.yaml (so `-S key=value`
    sets any knob and `dvc params diff` shows any change), with a comment on its line."""
    import dataclasses
    import typing

    from textclf.core.params import Params

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            yield from keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) \
                else [prefix + f.name]

    raw = yaml.safe_load(PARAMS_YAML.read_text())
    assert list(flat_params(raw)) == list(keys(Params))
    for line in PARAMS_YAML.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line \
                and not line.rstrip().endswith(":"):
            assert "#" in line, f"no comment on {line!r}"


def test_null_and_a_section_that_is_no_mapping_are_named():
    with pytest.raises(ParamsError, match=r"train\.lr must be a .*number, got None"):
        load_params(PARAMS_YAML, {"train": {"lr": None}})
    with pytest.raises(ParamsError, match=r"lora must be a mapping, got list"):
        parse_params({"lora": [1, 2]})
    with pytest.raises(ParamsError, match=r"top level must be a mapping, got list"):
        parse_params([1, 2])


def test_an_empty_params_file_names_every_missing_section_in_one_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# nothing set\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    for key in ("seed", "model", "method", "data", "zero_shot", "finetune", "lora", "train",
                "eval"):
        assert f"missing key {key}" in str(error.value)


@pytest.mark.parametrize("overrides", [
    {"train": {"lr": "nan"}},
    {"train": {"lr": float("inf")}},
    {"train": {"grad_clip": float("nan")}},
    {"lora": {"alpha": float("nan")}},
])
def test_non_finite_numbers_are_rejected(overrides):
    with pytest.raises(ParamsError):
        load_params(PARAMS_YAML, overrides)


# ---------------------------------------------------------------------------------------------
# Params checked against the model's config (config.json only, no weights)

def test_zero_shot_needs_a_causal_model(tiny_dirs, data_dir):
    params = run_params(tiny_dirs["bert"], data_dir, method="zero_shot")
    with pytest.raises(ParamsError) as error:
        checked_config_and_family(params)
    assert "method: zero_shot needs a causal language model" in str(error.value)
    assert "use finetune or lora" in str(error.value)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_zero_shot_is_allowed_for_causal_models(tiny_dirs, data_dir, family):
    _, fam = checked_config_and_family(run_params(tiny_dirs[family], data_dir, method="zero_shot"))
    assert fam.name == family and fam.causal


@pytest.mark.parametrize("overrides, key", [
    ({"finetune": {"trainable_blocks": 5}}, "finetune.trainable_blocks is 5"),
    ({"method": "lora", "lora": {"trainable_blocks": 9}}, "lora.trainable_blocks is 9"),
])
def test_more_blocks_than_the_model_has_fail(tiny_dirs, data_dir, overrides, key):
    params = run_params(tiny_dirs["gpt2"], data_dir, **overrides)  # the tiny models have 4
    with pytest.raises(ParamsError) as error:
        checked_config_and_family(params)
    assert key in str(error.value)
    assert "has 4 blocks (allowed: 1..4 or 'all')" in str(error.value)


def test_all_blocks_fit_any_model(tiny_dirs, data_dir):
    params = run_params(tiny_dirs["bert"], data_dir, finetune={"trainable_blocks": "all"},
                        lora={"trainable_blocks": "all"})
    assert checked_config_and_family(params)[1].name == "bert"


@pytest.mark.parametrize("section, old, new", [
    ("lora", "blocks", "lora.trainable_blocks"),
    ("finetune", "head_dropout", "train.head_dropout"),
])
def test_renamed_keys_name_their_new_name(section, old, new):
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    raw[section][old] = 2 if old == "blocks" else 0.1
    with pytest.raises(ParamsError, match=f"{section}.{old} was renamed to {new}"):
        parse_params(raw)


# ---------------------------------------------------------------------------------------------
# Values as `dvc exp run -S key=value` writes them: unquoted, read back by PyYAML (YAML 1.1)

def dvc_set(tmp_path, *overrides: str):
    """A copy of params.yaml edited as `dvc exp run -S` edits it (DVC's own function)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_YAML.read_text())
    apply_overrides(str(path), list(overrides))
    return path


@pytest.mark.parametrize("value", ["auto", "bf16", "fp32"])
def test_every_precision_survives_dvc_set(tmp_path, value):
    params = load_params(dvc_set(tmp_path, f"train.mixed_precision={value}"))
    assert params.train.mixed_precision == value


@pytest.mark.parametrize("value", ["no", "'no'"])
def test_the_old_precision_spelling_names_the_new_one(tmp_path, value):
    # -S train.mixed_precision=no is written unquoted; PyYAML reads it as false
    path = dvc_set(tmp_path, f"train.mixed_precision={value}")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    message = str(error.value)
    assert "train.mixed_precision" in message and "is the old spelling of fp32" in message
    assert "dvc exp run -S train.mixed_precision=fp32" in message


def test_an_earlier_quoted_no_unquoted_by_dvc_names_fp32(tmp_path):
    """An earlier params.yaml's working `mixed_precision: 'no'` loses its quotes when DVC
    rewrites the file for any -S: it then reads as false, and is still named the old fp32."""
    earlier = PARAMS_YAML.read_text().replace("mixed_precision: auto", "mixed_precision: 'no'")
    assert earlier != PARAMS_YAML.read_text()
    (tmp_path / "params.yaml").write_text(earlier)
    from dvc.utils.hydra import apply_overrides

    apply_overrides(str(tmp_path / "params.yaml"), ["lora.r=16"])
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["train"]["mixed_precision"] \
        is False
    with pytest.raises(ParamsError, match="train.mixed_precision: false is the old spelling of "
                                          "fp32"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", True), ("false", False)])
def test_cache_frozen_takes_auto_true_or_false(tmp_path, value, expected):
    params = load_params(dvc_set(tmp_path, f"train.cache_frozen={value}"))
    assert params.train.cache_frozen == expected


def test_cache_frozen_defaults_to_auto_and_names_its_values():
    assert load_params(PARAMS_YAML).train.cache_frozen == "auto"
    with pytest.raises(ParamsError, match="train.cache_frozen must be one of 'auto' or true or "
                                          "false, got 'sometimes'"):
        load_params(PARAMS_YAML, {"train": {"cache_frozen": "sometimes"}})
