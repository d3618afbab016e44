"""The export stage: a Hugging Face model directory that pipeline() and the Auto classes load
(in a fresh process, as a user does) with the evaluate stage's probabilities, the model card
generated from the run's files, and `textclf predict --model-dir` on an export.

The trained models are built with the library (models/ as the train stage leaves it, the trainable
weights moved off their initial values at random instead of trained), so the tests take seconds;
one slow test runs the real stages, export included, in a temporary directory."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support import tiny
from support.tensors import PARAMS_YAML, REPO, run_params

from textclf.cli.predict import main
from textclf.core.data import clean_text
from textclf.core.errors import ExportError
from textclf.core.families import FAMILIES
from textclf.core.params import load_params
from textclf.core.tokenization import classifier_format, load_tokenizer
from textclf.evaluate.metrics import bootstrap_ci, classification_metrics, length_bins
from textclf.export.hf_export import (
    EvaluateAgreement,
    agreement_with_evaluate,
    check_export,
    export_model,
    fold_head_bias,
)
from textclf.export.model_card import CardInputs, front_matter, model_card
from textclf.export.reference import find_reference
from textclf.modeling.classifier import (
    build_classifier,
    load_model,
    parameter_counts,
    save_model,
)
from textclf.modeling.model_info import TrainedModelInfo
from textclf.predictor import load_predictor
from textclf.train.zero_shot import zero_shot_classifier

MAX_TOKENS = 16  # far below the fixture reviews' 20-30 tokens: every review is cut
HEAD_TOKENS = 4
LABELS = ["negative", "positive"]
RUNS = {  # name: (family, method, truncation)
    "gpt2_finetune": ("gpt2", "finetune", "left"),
    "gpt2_lora": ("gpt2", "lora", "left"),
    "bert_finetune": ("bert", "finetune", "right"),
    "gpt_neox_finetune": ("gpt_neox", "finetune", "left"),
    # calibrated: the answer rows' head has a bias to fold; the prompt comes from the tokenizer
    "gpt2_zero_shot": ("gpt2", "zero_shot", "left"),
    # a tokenizer cannot cut head + tail: exact up to max_tokens, approximated beyond
    "bert_head_tail": ("bert", "finetune", "head_tail"),
}
# Not cut (padded in batches); special-token strings in a text are text, as training read them
SHORT_TEXTS = ["Great film.", "Dull, dull, dull.", "I loved it <|endoftext|> [SEP] [CLS]"]


@pytest.fixture(scope="module")
def gpt2_hub_like(tiny_dirs, tmp_path_factory) -> Path:
    """The tiny GPT-2 with its tokenizer saved as hub GPT-2's is (tokenizer_class
    GPT2Tokenizer, a class that rebuilds its pre-tokenizer from tokenizer_config.json), where
    the fixture's is a generic TokenizersBackend (which reads tokenizer.json as it is)."""
    return tiny.hub_tokenizer_model_dir("gpt2", tiny_dirs["gpt2"],
                                        tmp_path_factory.mktemp("gpt2_hub_like"))


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    """Cleaned texts, as the prepare stage writes them: the fixture's test reviews (all longer
    than MAX_TOKENS) and a few short ones."""
    rows = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    return [clean_text(r["text"]) for r in rows] + SHORT_TEXTS


@pytest.fixture(scope="module")
def exported(tiny_dirs, gpt2_hub_like, data_dir, texts, tmp_path_factory):
    """name -> (models dir, export dir, notes, check), each built on first use."""
    root = tmp_path_factory.mktemp("exports")
    done = {}

    def get(name: str):
        if name not in done:
            family, method, truncation = RUNS[name]
            base = gpt2_hub_like if family == "gpt2" else tiny_dirs[family]
            models = trained_model_dir(base, data_dir, root / name / "models", family, method,
                                       truncation)
            model, info = load_model(models)
            notes = export_model(model, info, root / name / "export")
            check = check_export(root / name / "export", model, info, texts)
            done[name] = (models, root / name / "export", notes, check)
        return done[name]

    return get


def trained_model_dir(base: Path, data_dir: Path, out: Path, family: str, method: str,
                      truncation: str) -> Path:
    """models/ as the train stage writes it, for a tiny base model: the trainable weights (head,
    last blocks and final norm, LoRA matrices) moved off their starting values at random, so
    every part the export copies, merges or folds changes the output."""
    params = run_params(base, data_dir, method=method, zero_shot={"calibrate": True},
                        data={"max_tokens": MAX_TOKENS, "truncation": truncation,
                              "head_tokens": HEAD_TOKENS})
    fam = FAMILIES[family]
    tokenizer = load_tokenizer(params.model, fam)
    torch.manual_seed(0)
    if method == "zero_shot":
        model, fmt, _ = zero_shot_classifier(params, fam, tokenizer, len(LABELS))
    else:
        model = build_classifier(params, fam, len(LABELS))
        fmt = classifier_format(tokenizer)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.3 * torch.randn_like(p))
    info = TrainedModelInfo(base_model=params.model, base_revision=None, family=family,
                            method=method, label_names=LABELS, tokenizer=tokenizer.name,
                            input_prefix=list(fmt.prefix), input_suffix=list(fmt.suffix),
                            pad_id=tokenizer.pad_id, max_tokens=MAX_TOKENS,
                            truncation=truncation, head_tokens=HEAD_TOKENS)
    save_model(model, out, info)
    return out


def evaluate_probabilities(models: Path, texts: list[str]) -> np.ndarray:
    """The evaluate stage's probabilities of `texts` (predict computes them as it does: see
    test_predict.test_predict_equals_evaluate)."""
    return load_predictor(models, "cpu", "fp32").probabilities(texts, batch_size=8)


# A user's process: the pipeline with nothing of textclf imported, on one export
PIPELINE = """
import json, sys
from transformers import pipeline

texts = json.loads(sys.stdin.read())
classify = pipeline("text-classification", model=sys.argv[1], trust_remote_code=True,
                    truncation=True, top_k=None, device="cpu")
config = classify.model.config
names = [config.id2label[i] for i in range(config.num_labels)]
probs = {size: [[{r["label"]: r["score"] for r in row}[n] for n in names]
                for row in classify(texts, batch_size=size)] for size in (1, 4)}
print(json.dumps({"labels": names, "class": type(classify.model).__name__, "probs": probs}))
"""


@pytest.mark.parametrize("name", [
    "gpt2_finetune",
    *[pytest.param(n, marks=pytest.mark.slow)
      for n in ("gpt2_lora", "bert_finetune", "gpt_neox_finetune", "gpt2_zero_shot")]])
def test_pipeline_in_a_fresh_process_gives_evaluate_probabilities(exported, texts, tmp_path, name):
    models, export_dir, notes, _ = exported(name)
    reference = evaluate_probabilities(models, texts)
    env = {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}  # remote code goes here
    result = subprocess.run([sys.executable, "-c", PIPELINE, str(export_dir)],
                            input=json.dumps(texts), capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["labels"] == LABELS and out["class"] == notes.architecture
    assert notes.remote_code == (RUNS[name][0] == "bert")
    for size, probs in out["probs"].items():  # one text at a time, and padded batches
        np.testing.assert_allclose(probs, reference, rtol=0, atol=1e-4, err_msg=f"batch {size}")


@pytest.mark.parametrize("name", ["gpt2_finetune", "gpt_neox_finetune", "gpt2_zero_shot"])
def test_stock_class_holds_the_head_bias_in_the_final_norm(exported, texts, name):
    """The stock head has no bias: the logits themselves (not only probabilities) are the
    trained model's, and only the final norm's bias differs from the trained weights."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    models, export_dir, notes, _ = exported(name)
    family = FAMILIES[RUNS[name][0]]
    assert notes.bias_folded_into == f"{family.final_norm}.bias"
    trained, _ = load_model(models)
    model = AutoModelForSequenceClassification.from_pretrained(export_dir).eval()
    assert model.score.bias is None
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    encoded = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = trained(encoded["input_ids"], encoded["attention_mask"])
        theirs = model(**encoded).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    changed = [n for n, p in model.base_model.state_dict().items()
               if not torch.equal(p, trained.backbone.state_dict()[n])]
    assert changed == [family.final_norm + ".bias"]


def test_a_head_with_dependent_rows_cannot_be_folded(tiny_dirs, data_dir):
    model = build_classifier(run_params(tiny_dirs["gpt2"], data_dir), FAMILIES["gpt2"], 2)
    with torch.no_grad():
        model.head.weight[1] = 2 * model.head.weight[0]
    with pytest.raises(ExportError, match="linearly dependent"):
        fold_head_bias(model.head, model.backbone, FAMILIES["gpt2"])


@pytest.mark.parametrize("name", ["bert_head_tail", "gpt2_zero_shot"])
def test_predict_reads_an_export_as_it_reads_models(exported, texts, tmp_path, capsys, name):
    """`textclf predict --model-dir <export>` cuts as training did, head_tail included (which
    pipeline() cannot), and puts the prompt around the text."""
    models, export_dir, notes, check = exported(name)
    assert notes.exact_truncation == (RUNS[name][2] != "head_tail")
    if name == "bert_head_tail":
        assert check.max_diff_head_tail is not None and check.max_diff_head_tail > 1e-3
        assert check.max_diff < 1e-4  # the texts within max_tokens: exact
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    records = {}
    for source in (models, export_dir):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model-dir", str(source), "--file", str(tmp_path / "texts.txt"),
                  "--batch-size", "8", "--device", "cpu", "--mixed-precision", "fp32"])
        assert exit_info.value.code == 0
        records[source] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records[export_dir]) == len(texts)
    np.testing.assert_allclose([list(r["probs"].values()) for r in records[export_dir]],
                               evaluate_probabilities(models, texts), rtol=0, atol=1e-6)
    assert [r["predicted"] for r in records[export_dir]] == \
        [r["predicted"] for r in records[models]]


# ---------------------------------------------------------------------------------------------
# The model card

def card_inputs(exported, texts, name: str, params) -> CardInputs:
    """The card's inputs computed as the stages compute them for this model and texts."""
    models, _, notes, check = exported(name)
    model, info = load_model(models)
    probs = evaluate_probabilities(models, texts)
    labels = np.arange(len(texts)) % 2
    evaluation = classification_metrics(labels, probs)
    evaluation.update(bootstrap_ci(labels, probs.argmax(1), 2, 50, seed=0))
    lengths = np.array([len(t.split()) * 40 for t in texts])  # some bins filled, others empty
    bins = {"length_unit": "gpt2_tokens", **length_bins(labels, probs.argmax(1), lengths, 2)}
    counts = parameter_counts(model)
    training = {"trainable_params": 1234, "total_params": counts["total_params"],
                "best_epoch": 2, "best_val_accuracy": 0.75}
    reference = find_reference(params, yaml.safe_load((REPO / "compare/params.yaml").read_text()),
                               PARAMS_YAML)
    agreement = EvaluateAgreement("bf16 autocast", len(texts), len(texts) - 1, 0.0123)
    return CardInputs(params, info, notes, check, evaluation, bins, training, reference,
                      agreement=agreement,
                      evaluate_run={"precision": "bf16 autocast", "device": "cpu: Test CPU"},
                      train_run={"precision": "bf16 autocast"})


def test_default_params_find_their_published_reference():
    """params.yaml's defaults are the compare run gpt2_finetune; a changed knob is listed."""
    config = yaml.safe_load((REPO / "compare/params.yaml").read_text())
    params = load_params(PARAMS_YAML)
    ref = find_reference(params, config, PARAMS_YAML)
    assert ref.run == "gpt2_finetune" and ref.differences == []
    assert ref.figures == config["runs"]["gpt2_finetune"]["reference"]
    fewer = load_params(PARAMS_YAML, {"train": {"epochs": 1}, "method": "lora"})
    ref = find_reference(fewer, config, PARAMS_YAML)
    assert ref.run == "gpt2_lora" and ref.differences == [("train.epochs", 1, 3)]
    assert find_reference(load_params(PARAMS_YAML, {"model": "distilgpt2"}), config,
                          PARAMS_YAML) is None


@pytest.mark.parametrize("name", ["gpt2_finetune", "bert_head_tail"])
def test_model_card_is_generated_from_the_run(exported, texts, name):
    params = load_params(PARAMS_YAML)  # the hub run (gpt2 on IMDb), as the pipeline's default
    c = card_inputs(exported, texts, name, params)
    c = dataclasses.replace(c, info=dataclasses.replace(c.info, base_model="gpt2"))
    card = model_card(c)

    # Front matter: the Hub's fields, with the test results
    head, body = re.fullmatch(r"---\n(.*?)---\n(.*)", card, re.S).groups()
    meta = yaml.safe_load(head)
    assert meta["base_model"] == "gpt2" and meta["datasets"] == ["stanfordnlp/imdb"]
    assert meta["pipeline_tag"] == "text-classification"
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == params.data.test_split
    assert {m["type"]: m["value"] for m in result["metrics"]} == \
        {k: c.evaluation[k] for k in meta["metrics"]}
    assert ("custom_code" in meta["tags"]) == c.notes.remote_code

    # Body: metrics with intervals, every length bin, the reference, loading, limits
    acc = c.evaluation
    assert f"| Accuracy | {100 * acc['accuracy']:.2f} | {100 * acc['accuracy_ci_low']:.2f} – " \
           f"{100 * acc['accuracy_ci_high']:.2f} |" in body
    for bin_name, row in c.length_bins.items():
        if isinstance(row, dict):
            assert f"| {bin_name} | {row['n']} |" in body
    assert "`gpt2_finetune`" in body and "1,234" in body
    assert ("trust_remote_code=True" in body) == c.notes.remote_code
    assert ("Truncation differs from training for long texts" in body) == (
        name == "bert_head_tail")
    assert f"differ from the trained model's by at most {c.check.max_diff:.1e}" in body
    # which precision each figure was computed in, and the export beside evaluate's own figures
    assert "Computed by the evaluate stage in bf16 autocast on cpu: Test CPU" in body
    assert f"the predicted labels agree on {len(texts) - 1} of {len(texts)}, and the " \
           "probabilities differ by at most 1.2e-02" in body
    assert "precision bf16 autocast (mixed_precision auto)" in body
    assert "## Limits" in body

    # The cleaning the card tells users to apply is the pipeline's own
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    namespace: dict = {}
    exec(code.split("classify = ")[0], namespace)
    for raw in ("Fine.<br /><br />Really  fine.", "  a\tb <BR/>c\u2028d "):
        assert namespace["clean"](raw) == clean_text(raw)


def test_local_base_model_and_data_stay_out_of_the_hub_fields(exported, texts, tiny_dirs,
                                                             data_dir):
    params = run_params(tiny_dirs["gpt2"], data_dir)
    meta = yaml.safe_load(front_matter(card_inputs(exported, texts, "gpt2_finetune", params))
                          .strip("-\n"))
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "local"


def test_agreement_with_evaluate_counts_labels_and_the_largest_difference():
    exported = np.array([[0.9, 0.1], [0.4, 0.6], [0.51, 0.49]])
    evaluated = np.array([[0.89, 0.11], [0.45, 0.55], [0.49, 0.51]])
    a = agreement_with_evaluate(exported, evaluated, "bf16 autocast")
    assert (a.n_texts, a.labels_agree, a.precision) == (3, 2, "bf16 autocast")
    assert a.max_diff == pytest.approx(0.05)
    with pytest.raises(ExportError, match="run the pipeline again"):
        agreement_with_evaluate(exported, evaluated[:2], "fp32")


def test_the_log_says_when_no_checked_text_compares_with_evaluate():
    """Every checked text over the limit (evaluate scored them whole): the log says none
    compares, not "labels agree on 0 of 0"."""
    none = agreement_with_evaluate(np.zeros((0, 2)), np.zeros((0, 2)), "fp32")
    assert none.shown(12) == ("beside evaluate's predictions (fp32): none of the 12 checked "
                              "texts compares (all over the limit, which evaluate scored whole)")
    some = agreement_with_evaluate(np.array([[0.9, 0.1]]), np.array([[0.8, 0.2]]), "fp32")
    assert some.shown(3) == ("beside evaluate's predictions (fp32): labels agree on 1 of 1, "
                             "probabilities within 1.0e-01 (2 of the 3 texts over the limit, "
                             "which evaluate scored whole, left out)")
    assert some.shown(1).endswith("labels agree on 1 of 1, probabilities within 1.0e-01")


# ---------------------------------------------------------------------------------------------
# The real stages

@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_export_says_which_precision_each_figure_was_computed_in(tiny_dirs, data_dir, tmp_path,
                                                                 capsys, precision):
    """Evaluate in bf16 (what auto picks where the hardware computes bf16) and an fp32 export:
    the log and the card say so, and how far the export is from evaluate's own predictions."""
    run = tiny.run_stages(tmp_path, tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, data={"max_tokens": MAX_TOKENS},
        train={"epochs": 1, "mixed_precision": precision}, eval={"bootstrap": 0}),
        stages=("prepare", "train", "evaluate", "export"), in_process=True)
    out = capsys.readouterr().out
    computed = {"bf16": "bf16 autocast", "fp32": "fp32"}[precision]
    assert json.loads((run / "outputs/evaluate/run.json").read_text())["precision"] == computed

    # evaluate's own probabilities beside the export's, scored here as a user loads it
    evaluated = np.array([json.loads(line)["probs"] for line in
                          (run / "outputs/evaluate/predictions.jsonl").read_text().splitlines()])
    texts = [json.loads(line)["text"] for line in
             (run / "data/prepared/test_texts.jsonl").read_text().splitlines()]
    exported = np.array(evaluate_probabilities(run / "export", texts))
    agree = int((exported.argmax(1) == evaluated.argmax(1)).sum())
    diff = float(np.abs(exported - evaluated).max())
    if precision == "fp32":
        assert diff < 1e-5 and agree == len(texts)
    line = f"beside evaluate's predictions ({computed}): labels agree on {agree} of {len(texts)}"
    assert line in out
    card = (run / "export/README.md").read_text()
    assert f"Computed by the evaluate stage in {computed} on cpu" in card
    said = re.search(rf"which it computed in {computed} \(the test results above\): the "
                     rf"predicted labels agree on {agree} of {len(texts)}, and the probabilities "
                     r"differ by at most ([0-9.e+-]+)\.", card)
    assert said, card
    # the same figure, up to the batching's float32 rounding
    assert float(said.group(1)) == pytest.approx(diff, rel=0.06, abs=1e-6)

@pytest.mark.slow
def test_export_stage_after_the_real_pipeline(tiny_dirs, data_dir, tmp_path):
    """prepare, train (1 epoch), evaluate and export as dvc.yaml runs them, on the tiny
    GPT-NeoX; the export, in a fresh process, gives evaluate's predictions.jsonl."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny.tiny_params(
        tiny_dirs["gpt_neox"], data_dir, data={"max_tokens": MAX_TOKENS},
        train={"epochs": 1, "mixed_precision": "fp32"}), sort_keys=False))
    for script in ("prepare", "train", "evaluate", "export"):
        result = subprocess.run(tiny.stage_command(script, params, tmp_path),
                                capture_output=True, text=True, env=tiny.ENV)
        assert result.returncode == 0, f"{script}:\n{result.stdout}\n{result.stderr}"
    assert "probabilities within" in result.stdout
    export_dir = tmp_path / "export"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= \
        {p.name for p in export_dir.iterdir()}
    rows = [json.loads(line) for line in (tmp_path / "data/prepared/test_texts.jsonl")
            .read_text().splitlines()]
    predictions = [json.loads(line) for line in (tmp_path / "outputs/evaluate/predictions.jsonl")
                   .read_text().splitlines()]
    env = {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", PIPELINE, str(export_dir)],
                            input=json.dumps([r["text"] for r in rows]), capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr
    probs = json.loads(result.stdout.splitlines()[-1])["probs"]["4"]
    np.testing.assert_allclose(probs, [p["probs"] for p in predictions], rtol=0, atol=1e-4)
    card = (export_dir / "README.md").read_text()
    evaluation = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert f"value: {evaluation['accuracy']}" in card
