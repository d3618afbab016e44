"""How an export may be loaded, and how not: the tokenizer classes of the hub models (which
rebuild parts of a tokenizer on load) keep the export exact; the BERT export, whose class is
textclf's own, loads the intended ways only and fails loudly otherwise; and nothing loads code
from a model directory that is not textclf's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import tiny
from test_export import evaluate_probabilities, trained_model_dir

from textclf.export.hf_export import check_export, export_model
from textclf.modeling.classifier import load_model


@pytest.fixture(scope="module")
def hub_tokenizer_dirs(tiny_dirs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub_tokenizers")
    return {family: tiny.hub_tokenizer_model_dir(family, tiny_dirs[family], root / family)
            for family in tiny.HUB_TOKENIZER_CLASS}


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    from test_export import SHORT_TEXTS

    from textclf.core.data import clean_text

    rows = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    return [clean_text(r["text"]) for r in rows] + SHORT_TEXTS


def export_run(base: Path, data_dir: Path, root: Path, family: str, method: str, texts):
    models = trained_model_dir(base, data_dir, root / "models", family, method,
                               "right" if family == "bert" else "left")
    model, info = load_model(models)
    export_model(model, info, root / "export")
    check = check_export(root / "export", model, info, texts)
    return models, root / "export", check


@pytest.mark.parametrize("family,method", [("gpt_neox", "zero_shot"), ("gpt2", "zero_shot"),
                                           ("bert", "finetune")])
def test_export_with_the_hub_tokenizer_class_passes_its_check(hub_tokenizer_dirs, data_dir,
                                                               texts, tmp_path, family, method):
    """GPTNeoXTokenizer rebuilds its post-processor on load (losing a prompt put there),
    GPT2Tokenizer its pre-tokenizer: the export's tokenizer must survive both."""
    _, _, check = export_run(hub_tokenizer_dirs[family], data_dir, tmp_path, family, method,
                             texts)
    assert check.max_diff < 1e-4


# ---------------------------------------------------------------------------------------------
# The BERT export: textclf's own class, loaded the intended ways only

@pytest.fixture(scope="module")
def bert_export(tiny_dirs, data_dir, texts, tmp_path_factory):
    """(models dir, export dir) of a fine-tuned tiny BERT."""
    models, export_dir, _ = export_run(tiny_dirs["bert"], data_dir,
                                       tmp_path_factory.mktemp("bert"), "bert", "finetune", texts)
    return models, export_dir


# Each way a user might load the export without textclf and without trust_remote_code
WRONG_WAYS = """
import json, sys
from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

ways = {
    "AutoConfig": lambda: AutoConfig.from_pretrained(sys.argv[1]),
    "AutoModelForSequenceClassification":
        lambda: AutoModelForSequenceClassification.from_pretrained(sys.argv[1]),
    "pipeline": lambda: pipeline("text-classification", model=sys.argv[1], device="cpu"),
}
outcomes = {}
for name, load in ways.items():
    try:
        loaded = load()
    except Exception as e:
        outcomes[name] = f"raised {type(e).__name__}: {' '.join(str(e).split())}"
    else:
        outcomes[name] = f"loaded {type(getattr(loaded, 'model', loaded)).__name__}"
print()  # after transformers' question to a terminal (none here: stdin is empty)
print(json.dumps(outcomes))
"""

# The intended way in a process that has textclf: importing textclf.export registers the class
WITH_TEXTCLF = """
import json, sys
import textclf.export
from transformers import pipeline

classify = pipeline("text-classification", model=sys.argv[1], truncation=True, top_k=None,
                    device="cpu")
names = [classify.model.config.id2label[i] for i in range(classify.model.config.num_labels)]
rows = classify(json.loads(sys.stdin.read()), batch_size=4)
print(json.dumps({"class": type(classify.model).__name__,
                  "probs": [[{r["label"]: r["score"] for r in row}[n] for n in names]
                            for row in rows]}))
"""


def fresh_process(script: str, export_dir: Path, tmp_path: Path, stdin: str | None = None):
    env = {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-c", script, str(export_dir)], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, cwd=tmp_path)


def test_bert_export_loaded_without_textclf_or_remote_code_fails_loudly(bert_export, tmp_path):
    """Stock transformers does not know the export's model_type: each way raises (before, each
    loaded BertForSequenceClassification with a random pooler and scored other numbers)."""
    _, export_dir = bert_export
    result = fresh_process(WRONG_WAYS, export_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.splitlines()[-1])
    assert set(outcomes) == {"AutoConfig", "AutoModelForSequenceClassification", "pipeline"}
    for way, outcome in outcomes.items():
        assert outcome.startswith("raised ValueError") and "trust_remote_code" in outcome, \
            f"{way}: {outcome}"


@pytest.mark.slow
def test_bert_export_with_textclf_imported_gives_evaluate_probabilities(bert_export, texts,
                                                                        tmp_path):
    models, export_dir = bert_export
    result = fresh_process(WITH_TEXTCLF, export_dir, tmp_path, stdin=json.dumps(texts))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["class"] == "TextclfForSequenceClassification"
    np.testing.assert_allclose(out["probs"], evaluate_probabilities(models, texts), rtol=0,
                               atol=1e-4)


# ---------------------------------------------------------------------------------------------
# No code from a model directory

# A modelling file that leaves a mark when anything imports it
FOREIGN_CODE = """
from pathlib import Path
Path({marker!r}).write_text("this code ran")
from transformers import GPT2Config, GPT2ForSequenceClassification

class ForeignConfig(GPT2Config):
    pass

class ForeignModel(GPT2ForSequenceClassification):
    pass
"""
FOREIGN_AUTO_MAP = {  # which file names the foreign code: (json file, auto_map)
    "config": ("config.json", {"AutoConfig": "foreign.ForeignConfig"}),
    "model": ("config.json", {"AutoModelForSequenceClassification": "foreign.ForeignModel"}),
    "tokenizer": ("tokenizer_config.json", {"AutoTokenizer": [None, "foreign.ForeignTokenizer"]}),
}


@pytest.fixture(scope="module")
def gpt2_export(tiny_dirs, data_dir, texts, tmp_path_factory) -> Path:
    _, export_dir, _ = export_run(tiny_dirs["gpt2"], data_dir, tmp_path_factory.mktemp("gpt2"),
                                  "gpt2", "finetune", texts)
    return export_dir


@pytest.mark.parametrize("fresh_process", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("where", list(FOREIGN_AUTO_MAP))
def test_predict_refuses_a_directory_naming_foreign_code(gpt2_export, tmp_path, where,
                                                         fresh_process, capsys, monkeypatch):
    """In this process (main()) and, slow, as a user runs it (a fresh `python -m`)."""
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(gpt2_export, model_dir)
    marker = tmp_path / "marker"
    (model_dir / "foreign.py").write_text(FOREIGN_CODE.format(marker=str(marker)))
    name, auto_map = FOREIGN_AUTO_MAP[where]
    data = json.loads((model_dir / name).read_text())
    data["auto_map"] = auto_map
    (model_dir / name).write_text(json.dumps(data))

    args = ["--model-dir", str(model_dir), "--device", "cpu", "A fine film."]
    if fresh_process:
        env = {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules"),
               "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        result = subprocess.run([sys.executable, "-m", "textclf.cli.predict", *args],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=300)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        from textclf.cli.predict import main

        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exit_:
            main(args)
        code = exit_.value.code
        out, err = capsys.readouterr()
    assert not marker.exists(), "the directory's code ran"
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "foreign." in lines[0], \
        err[-3000:]


# config.json of the exports older textclf versions wrote, each released on main before the one
# class of textclf.export.hf_model: (model_type, auto_map). Every one names a modelling file this
# textclf does not ship (hf_loading.OLDER_MODULES).
OLDER_EXPORTS = {
    # the first BERT export: textclf's class under stock BERT's model_type (stock transformers
    # would load BertForSequenceClassification with a random pooler)
    "bert_under_stock_type": ("bert", {"AutoModelForSequenceClassification":
                                       "hf_pooling.BertForMeanPooledClassification"}),
    # then a model_type of its own per class, in hf_pooling.py and hf_attention.py
    "bert_mean_pooled": ("textclf-bert-mean-pooled",
                         {"AutoConfig": "hf_pooling.BertMeanPooledConfig",
                          "AutoModelForSequenceClassification":
                          "hf_pooling.BertForMeanPooledClassification"}),
    "gpt2_attention_head": ("textclf-gpt2-attention-head",
                            {"AutoConfig": "hf_attention.GPT2AttentionHeadConfig",
                             "AutoModelForSequenceClassification":
                             "hf_attention.GPT2ForAttentionHeadClassification"}),
}


@pytest.mark.parametrize("older", list(OLDER_EXPORTS))
def test_an_older_export_is_refused_not_misread(bert_export, tmp_path, capsys, older):
    """An export of an older textclf's classes cannot load as written (its modelling file is
    gone, or stock transformers would read it as another model): predict says to export it
    again, in one line."""
    import shutil

    from textclf.cli.predict import main

    _, export_dir = bert_export
    shutil.copytree(export_dir, tmp_path / "old")
    config = json.loads((tmp_path / "old/config.json").read_text())
    config["model_type"], config["auto_map"] = OLDER_EXPORTS[older]
    (tmp_path / "old/config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-dir", str(tmp_path / "old"), "--device", "cpu", "A fine film."])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "exported by an older textclf" in lines[0], lines
    assert "Export it again (dvc repro export)" in lines[0]
