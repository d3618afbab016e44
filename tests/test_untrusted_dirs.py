"""A model directory may come from anyone (a hub model or a copy, models/ and its LoRA adapter,
an export): nothing in it runs, whatever is typed at transformers' "Do you wish to run the custom
code? [y/N]", and a directory textclf cannot load as it is, or a damaged file in it, ends in one
`error:` line naming it, before anything is written.

The stages and `textclf predict` run in this process with "y" on stdin where they can, and as a
user runs them (a fresh process, "y" typed) where only a fresh process shows the difference:
one in which textclf's exported class was never registered."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support import tiny
from test_bad_inputs import run, write_params
from test_export import trained_model_dir
from test_export_loading import FOREIGN_CODE

from textclf.cli.predict import main as predict_main
from textclf.export.hf_export import export_model
from textclf.modeling.classifier import load_model

REPO = Path(__file__).resolve().parents[1]
# How a directory names its code (foreign.py, FOREIGN_CODE): the file, and what is set in it
NAMING = {
    # a model_type transformers does not know: it asks, and runs the code on "y"
    "unknown_model_type": ("config.json", {
        "model_type": "evil", "auto_map": {"AutoConfig": "foreign.ForeignConfig",
                                           "AutoModel": "foreign.ForeignModel"}}),
    # GPT-2's model_type: stock transformers loads GPT-2 and ignores the code it names
    "stock_model_type": ("config.json", {"auto_map": {"AutoModel": "foreign.ForeignModel"}}),
    "tokenizer": ("tokenizer_config.json", {
        "auto_map": {"AutoTokenizer": ["foreign.ForeignTokenizer", None]}}),
}


def naming_code(source: Path, directory: Path, naming: str, marker: Path) -> Path:
    """A copy of the model directory `source` whose foreign.py writes `marker` when imported,
    named as NAMING[naming] says."""
    shutil.copytree(source, directory)
    (directory / "foreign.py").write_text(FOREIGN_CODE.format(marker=str(marker)))
    name, values = NAMING[naming]
    data = json.loads((directory / name).read_text())
    (directory / name).write_text(json.dumps({**data, **values}))
    return directory


def edited(export_dir: Path, directory: Path, marker: Path) -> Path:
    """A copy of an export of textclf's own class whose modelling file writes `marker` when it
    is imported."""
    shutil.copytree(export_dir, directory)
    future = "from __future__ import annotations\n"
    code = (directory / "hf_model.py").read_text()
    assert future in code
    (directory / "hf_model.py").write_text(code.replace(future, future + (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('this code ran')\n"), 1))
    return directory


def one_error_line(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def fresh_env(tmp_path: Path) -> dict:
    """A user's environment, with transformers' copies of remote code kept in `tmp_path`."""
    return {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules"),
            "PYTHONPATH": str(REPO / "src")}


@pytest.fixture(scope="module")
def models(tiny_dirs, data_dir, tmp_path_factory) -> dict[str, Path]:
    """models/ of a GPT-2 fine-tuned and with LoRA, and of a fine-tuned BERT, as train saves
    them (tests/test_export.py: trained_model_dir); exports of GPT-2's (the stock class) and of
    BERT's (textclf's own class)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for family, method in (("gpt2", "finetune"), ("gpt2", "lora"), ("bert", "finetune")):
        out[f"{family}_{method}"] = trained_model_dir(tiny_dirs[family], data_dir,
                                                      root / f"{family}_{method}", family, method,
                                                      "left")
    for family in ("gpt2", "bert"):
        model, info = load_model(out[f"{family}_finetune"], fp32=True)
        export_model(model, info, root / f"{family}_export")
        out[f"{family}_export"] = root / f"{family}_export"
    return out


def with_base_model(models_dir: Path, directory: Path, base_model: Path) -> Path:
    """A copy of models/ whose textclf.json names another base model."""
    shutil.copytree(models_dir, directory)
    info = json.loads((directory / "textclf.json").read_text())
    (directory / "textclf.json").write_text(json.dumps({**info, "base_model": str(base_model)}))
    return directory


def predict(model_dir: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """`textclf predict --model-dir model_dir "A fine film."` in this process, "y" on stdin."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    try:
        predict_main(["--model-dir", str(model_dir), "--device", "cpu", "A fine film."])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# Code named by a directory: refused where the directory enters, and never run

@pytest.mark.parametrize("naming", list(NAMING))
def test_prepare_refuses_a_model_naming_code_first(tiny_dirs, data_dir, tmp_path, capsys,
                                                   monkeypatch, naming):
    """`-S model=DIR`: refused at the start of prepare (before any data is read), "y" or not;
    until then, GPT-2's model_type with an auto_map trained and evaluated, and only export
    refused it, naming its temporary folder."""
    marker = tmp_path / "marker"
    model = naming_code(tiny_dirs["gpt2"], tmp_path / "model", naming, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    params = write_params(tmp_path, tiny.tiny_params(model, data_dir))
    code, _, err = run("prepare", ["--params", params, "--out", tmp_path / "prepared",
                                   "--inputs", tmp_path / "inputs.json"], capsys)
    assert not marker.exists(), "the directory's code ran"
    assert code == 2
    one_error_line(err, str(model / NAMING[naming][0]), "names code to run", "foreign.")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("model", [pytest.param("unknown_model_type", marks=pytest.mark.slow),
                                   "edited_export"])
def test_y_typed_at_a_fresh_prepare_runs_nothing(tiny_dirs, data_dir, models, tmp_path, model):
    """`echo y | python stages/prepare.py` as DVC runs it, on a model naming code of a
    model_type transformers does not know, and on an export whose hf_model.py was edited (in a
    fresh process textclf's class is not registered, so transformers would ask): no question,
    no code, one error line, nothing written. (test_prepare_refuses_a_model_naming_code_first
    runs the first in this process.)"""
    marker = tmp_path / "marker"
    directory = (naming_code(tiny_dirs["gpt2"], tmp_path / "model", model, marker)
                 if model in NAMING else edited(models["bert_export"], tmp_path / "model", marker))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny.tiny_params(directory, data_dir), sort_keys=False))
    result = subprocess.run(tiny.stage_command("prepare", params, tmp_path / "run"),
                            input="y\n", capture_output=True, text=True, env=fresh_env(tmp_path),
                            cwd=tmp_path, timeout=300)
    assert not marker.exists(), "the directory's code ran"
    assert result.returncode == 2, result.stderr[-3000:]
    one_error_line(result.stderr, str(directory / "config.json"), "names code to run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a fresh process; test_predict_refuses_a_base_model_naming_code in this one
def test_y_typed_at_a_fresh_predict_runs_nothing(tiny_dirs, models, tmp_path):
    """`echo y | textclf predict --model-dir M text` with M/textclf.json's base model naming
    code of a model_type transformers does not know."""
    marker = tmp_path / "marker"
    base = naming_code(tiny_dirs["gpt2"], tmp_path / "base", "unknown_model_type", marker)
    model_dir = with_base_model(models["gpt2_finetune"], tmp_path / "models", base)
    result = subprocess.run([sys.executable, "-m", "textclf.cli.predict", "--model-dir",
                             str(model_dir), "--device", "cpu", "A fine film."], input="y\n",
                            capture_output=True, text=True, env=fresh_env(tmp_path), cwd=tmp_path,
                            timeout=300)
    assert not marker.exists(), "the directory's code ran"
    assert result.returncode == 2 and result.stdout == ""
    one_error_line(result.stderr, str(base / "config.json"), "names code to run")


@pytest.mark.parametrize("naming", list(NAMING))
def test_predict_refuses_a_base_model_naming_code(tiny_dirs, models, tmp_path, capsys,
                                                  monkeypatch, naming):
    marker = tmp_path / "marker"
    base = naming_code(tiny_dirs["gpt2"], tmp_path / "base", naming, marker)
    code, out, err = predict(with_base_model(models["gpt2_finetune"], tmp_path / "models", base),
                             capsys, monkeypatch)
    assert not marker.exists(), "the directory's code ran"
    assert code == 2 and out == ""
    one_error_line(err, str(base / NAMING[naming][0]), "names code to run")


@pytest.fixture(scope="module")
def trained_run(tiny_dirs, data_dir, tmp_path_factory) -> Path:
    """prepare and train, run in this process on the tiny GPT-2 (one epoch)."""
    return tiny.run_stages(tmp_path_factory.mktemp("run"), tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, train={"epochs": 1}), stages=("prepare", "train"),
        in_process=True)


@pytest.mark.parametrize("stage", ["train", "evaluate", "export"])
def test_every_stage_refuses_a_base_model_naming_code(tiny_dirs, data_dir, trained_run, tmp_path,
                                                      capsys, monkeypatch, stage):
    """train reads the model from params (the data prepared for it, as prepare wrote it before
    it refused such a model); evaluate and export from models/textclf.json."""
    marker = tmp_path / "marker"
    base = naming_code(tiny_dirs["gpt2"], tmp_path / "base", "stock_model_type", marker)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run / "data", run_dir / "data")
    shutil.copytree(trained_run / "metrics", run_dir / "metrics")
    with_base_model(trained_run / "models", run_dir / "models", base)
    meta = json.loads((run_dir / "data/prepared/meta.json").read_text())
    (run_dir / "data/prepared/meta.json").write_text(json.dumps({**meta, "model": str(base)}))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny.tiny_params(
        base if stage == "train" else tiny_dirs["gpt2"], data_dir, train={"epochs": 1}),
        sort_keys=False))
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    script, *args = tiny.stage_command(stage, params, run_dir)[1:]
    code = tiny.run_script_in_process(Path(script), args)
    assert not marker.exists(), "the directory's code ran"
    assert code == 2
    one_error_line(capsys.readouterr().err, str(base / "config.json"), "names code to run")
    written = {"train": "outputs/train", "evaluate": "outputs/evaluate", "export": "export"}
    assert not (run_dir / written[stage]).exists()


def test_a_stock_auto_map_of_a_model_transformers_has_is_not_foreign(tmp_path):
    """Phi-3's config.json names modeling_phi3.Phi3ForCausalLM, code since merged into
    transformers: loading without remote code takes transformers' class, the model intended."""
    from textclf.core.families import FAMILIES, check_base_model

    directory = tmp_path / "phi3"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({
        "model_type": "phi3", "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                                           "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"}
    }))
    assert check_base_model(str(directory)) == FAMILIES["phi3"]


# ---------------------------------------------------------------------------------------------
# Damaged and pickled weights

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGED = {  # case: (the directory predict is given, the file cut in half in it)
    "finetune_trained": ("gpt2_finetune", "trained.safetensors"),
    "finetune_head": ("gpt2_finetune", "head.safetensors"),
    "lora_adapter": ("gpt2_lora", "adapter/adapter_model.safetensors"),
    "export_weights": ("gpt2_export", "model.safetensors"),
    "own_export_weights": ("bert_export", "model.safetensors"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_truncated_safetensors_file_is_one_error_line(models, tmp_path, capsys, monkeypatch,
                                                        case):
    source, name = DAMAGED[case]
    model_dir = tmp_path / "model"
    shutil.copytree(models[source], model_dir)
    truncate(model_dir / name)
    code, out, err = predict(model_dir, capsys, monkeypatch)
    assert code == 2 and out == ""
    one_error_line(err, str(model_dir / name), "truncated or damaged", "dvc checkout")


def test_a_truncated_base_model_is_one_error_line(tiny_dirs, models, tmp_path, capsys,
                                                  monkeypatch):
    base = tmp_path / "base"
    shutil.copytree(tiny_dirs["gpt2"], base)
    truncate(base / "model.safetensors")
    code, out, err = predict(with_base_model(models["gpt2_finetune"], tmp_path / "models", base),
                             capsys, monkeypatch)
    assert code == 2 and out == ""
    one_error_line(err, str(base / "model.safetensors"), "truncated or damaged")


def test_evaluate_reports_a_truncated_file_in_one_line(trained_run, tmp_path, tiny_dirs,
                                                       data_dir, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run / "data", run_dir / "data")
    shutil.copytree(trained_run / "models", run_dir / "models")
    truncate(run_dir / "models/trained.safetensors")
    params = write_params(tmp_path, tiny.tiny_params(tiny_dirs["gpt2"], data_dir))
    script, *args = tiny.stage_command("evaluate", params, run_dir)[1:]
    code = tiny.run_script_in_process(Path(script), args)
    assert code == 2
    one_error_line(capsys.readouterr().err, str(run_dir / "models/trained.safetensors"))
    assert not (run_dir / "outputs").exists()


class Payload:
    """What a planted pickle can do: unpickled, it runs Python code (here: writes `marker`)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('ran')",)


PICKLED = {  # case: (directory, the safetensors file replaced, the pickle put in its place)
    "export": ("gpt2_export", "model.safetensors", "pytorch_model.bin"),
    "own_export": ("bert_export", "model.safetensors", "pytorch_model.bin"),
    "lora_adapter": ("gpt2_lora", "adapter/adapter_model.safetensors",
                     "adapter/adapter_model.bin"),
    "base_model": ("base", "model.safetensors", "pytorch_model.bin"),
}


@pytest.mark.parametrize("case", list(PICKLED))
def test_pickled_weights_are_refused_and_never_unpickled(tiny_dirs, models, tmp_path, capsys,
                                                         monkeypatch, case):
    source, replaced, planted = PICKLED[case]
    probe = tmp_path / "probe"
    torch.save({"weight": Payload(probe)}, tmp_path / "probe.bin")
    torch.load(tmp_path / "probe.bin", weights_only=False)
    assert probe.exists(), "the payload is not live: the test proves nothing"

    marker = tmp_path / "marker"
    target = tmp_path / ("base" if source == "base" else "model")
    shutil.copytree(tiny_dirs["gpt2"] if source == "base" else models[source], target)
    (target / replaced).unlink()
    torch.save({"weight": Payload(marker)}, target / planted)
    model_dir = (with_base_model(models["gpt2_finetune"], tmp_path / "models", target)
                 if source == "base" else target)
    code, out, err = predict(model_dir, capsys, monkeypatch)
    assert not marker.exists(), "the pickle was unpickled"
    assert code == 2 and out == ""
    one_error_line(err, str(target / planted), "pickled weights", "re-save them as safetensors")


# ---------------------------------------------------------------------------------------------
# Damaged descriptions: models/textclf.json, an export's config.json

TEXTCLF_JSON = {  # case: (what replaces textclf.json, a fragment of the error)
    "not_json": ('{"base_model": ', "is not valid JSON"),
    "not_an_object": ("[1, 2]", "must be a mapping"),
    "missing_field": (lambda info: {k: v for k, v in info.items() if k != "label_names"},
                      "missing key label_names"),
    "wrong_type": (lambda info: {**info, "pad_id": "zero"}, "pad_id must be an integer"),
    "unknown_method": (lambda info: {**info, "method": "prompting"},
                       "method must be one of 'zero_shot', 'finetune', 'lora'"),
}


@pytest.mark.parametrize("case", list(TEXTCLF_JSON))
def test_a_damaged_textclf_json_is_one_error_line(models, tmp_path, capsys, monkeypatch, case):
    model_dir = tmp_path / "models"
    shutil.copytree(models["gpt2_finetune"], model_dir)
    content, fragment = TEXTCLF_JSON[case]
    if callable(content):
        content = json.dumps(content(json.loads((model_dir / "textclf.json").read_text())))
    (model_dir / "textclf.json").write_text(content)
    code, out, err = predict(model_dir, capsys, monkeypatch)
    assert code == 2 and out == ""
    one_error_line(err, str(model_dir / "textclf.json"), fragment, "dvc repro train")


def without_model_type(config: dict) -> dict:
    base = {k: v for k, v in config["base_config"].items() if k != "model_type"}
    return {**config, "base_config": base}


EXPORT_CONFIG = {  # case: (how config.json changes, a fragment of the error)
    "no_base_model_type": (without_model_type, "has no base_config with a model_type"),
    "unknown_base_model_type": (
        lambda config: {**config, "base_config": {**config["base_config"], "model_type": "t5"}},
        "(base_config): model family 't5' is not supported"),
    "unknown_model_type": (lambda config: {**config, "model_type": "t5", "auto_map": {}},
                           "model family 't5' is not supported"),
    # textclf's class under a stock model_type: transformers would load stock BERT
    "own_class_under_stock_type": (lambda config: {**config, "model_type": "bert"},
                                   "names code to run (auto_map AutoConfig: hf_model."),
    "textclf_entry_missing_a_field": (
        lambda config: {**config, "textclf": {k: v for k, v in config["textclf"].items()
                                              if k != "pad_id"}}, "missing key pad_id"),
}


@pytest.mark.parametrize("case", list(EXPORT_CONFIG))
def test_a_damaged_export_config_is_one_error_line(models, tmp_path, capsys, monkeypatch, case):
    model_dir = tmp_path / "export"
    shutil.copytree(models["bert_export"], model_dir)
    change, fragment = EXPORT_CONFIG[case]
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(change(config)))
    code, out, err = predict(model_dir, capsys, monkeypatch)
    assert code == 2 and out == ""
    one_error_line(err, str(model_dir / "config.json"), fragment)


def code_through_the_base_config(export_dir: Path, directory: Path, marker: Path) -> Path:
    """A copy of an export of textclf's class whose base config names code in the directory
    and whose base_kwargs ask the base model's class to trust it."""
    shutil.copytree(export_dir, directory)
    (directory / "foreign.py").write_text(FOREIGN_CODE.format(marker=str(marker)))
    config = json.loads((directory / "config.json").read_text())
    config["base_kwargs"] = {**config.get("base_kwargs", {}), "trust_remote_code": True}
    config["base_config"] = {**config["base_config"], "_name_or_path": str(directory),
                             "auto_map": {"AutoModel": "foreign.ForeignModel"}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_code_named_through_an_exports_base_config_never_runs(models, tmp_path, capsys,
                                                              monkeypatch):
    """Predict refuses it; and textclf's class, loaded without that check, builds the base model
    without remote code whatever base_kwargs say (before, predict ran the code, no question
    asked)."""
    from transformers import AutoModelForSequenceClassification

    marker = tmp_path / "marker"
    export_dir = code_through_the_base_config(models["bert_export"], tmp_path / "export", marker)
    code, out, err = predict(export_dir, capsys, monkeypatch)
    assert not marker.exists(), "the directory's code ran"
    assert code == 2 and out == ""
    one_error_line(err, f"{export_dir / 'config.json'} (base_config) names code to run")

    import textclf.export  # noqa: F401  (registers textclf's class, as predict does)

    AutoModelForSequenceClassification.from_pretrained(export_dir, trust_remote_code=False)
    assert not marker.exists(), "the directory's code ran"


# ---------------------------------------------------------------------------------------------
# End to end: `echo y | dvc exp run -S model=DIR`

@pytest.mark.slow
def test_y_typed_at_dvc_exp_run_runs_nothing(tiny_dirs, data_dir, tmp_path):
    marker = tmp_path / "marker"
    model = naming_code(tiny_dirs["gpt2"], tmp_path / "model", "unknown_model_type", marker)
    project = tiny.dvc_project(tmp_path / "project", tiny.tiny_params(tiny_dirs["gpt2"], data_dir))
    result = subprocess.run(["dvc", "exp", "run", "-S", f"model={model}"], input="y\n",
                            cwd=project, capture_output=True, text=True, env=fresh_env(tmp_path),
                            timeout=600)
    assert not marker.exists(), "the directory's code ran"
    assert result.returncode != 0
    assert f"error: {model / 'config.json'} names code to run" in result.stderr, \
        result.stdout[-3000:] + result.stderr[-3000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
    assert not (project / "data" / "prepared").exists() and not (project / "models").exists()
