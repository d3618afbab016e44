"""Export: the trained model as a standard Hugging Face model directory, with its model card.

    python stages/export.py                  # what `dvc repro export` runs

Then, from Python or the shell (the card, export/README.md, says which and why):
    pipeline("text-classification", model="export", truncation=True, top_k=None)
    textclf predict --model-dir export --file reviews.txt

Reads params: all of them (seed, model, method, data, zero_shot, finetune, lora, train, eval,
export): the model card reports them, compares them with the published reference run's, and
states export.license and export.language.
Reads: models/ (what train saved), data/prepared (test texts for the check), metrics/eval.json,
metrics/train.json, metrics/plots/per_class.csv and confused_pairs.csv (the card's per-class
table), outputs/evaluate/ (length_bins.json; predictions.jsonl and run.json: evaluate's
own probabilities and the precision it computed them in), outputs/train/run.json (training's
precision), metrics/plots/confusion.png and roc.png (the card's figures) and compare/params.yaml
(the published reference rows).
Writes: export/ — config.json (class names, textclf's input description), model.safetensors
(full weights, LoRA merged), the tokenizer files, README.md (the model card), confusion.png and
roc.png (its figures) and, for textclf's own class (every family but GPT-2's and GPT-NeoX's
linear head), hf_model.py (load after `import textclf.export` or with trust_remote_code=True).
Before it replaces the previous export, the new one is loaded back with transformers and its
probabilities compared with the trained model's on the shortest and longest test texts, both in
fp32 (at most 1e-4 apart, or it fails), and with the evaluate stage's own predictions of those
texts (computed in bf16 autocast where the hardware has native bf16: labels that agree, the
largest probability difference; reported in the log and the card). When evaluate scored texts
over the limit whole (eval.long_texts windows), which an export loaded with transformers
truncates, that comparison leaves them out.
"""

import shutil
from pathlib import Path

import numpy as np
import this_checkout  # noqa: F401  (first: this checkout's src/ on the import path)
import yaml

from textclf.core import paths
from textclf.core.outputs import read_json, staged_dir, write_text
from textclf.core.prepared_data import load_prepared
from textclf.core.provenance import hub_commit
from textclf.core.runner import log, params_from_args, run_stage, stage_parser
from textclf.evaluate.per_class import CONFUSED_PAIRS, PER_CLASS, csv_rows
from textclf.evaluate.reports import read_prediction_probs
from textclf.export.hf_export import agreement_with_evaluate, check_export, export_model
from textclf.export.model_card import FIGURES, CardInputs, model_card
from textclf.export.reference import find_reference
from textclf.modeling.classifier import load_model

CHECK_TEXTS = 32  # test texts the export is checked on: half the shortest, half the longest


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    parser.add_argument("--eval-metrics", type=Path, default=paths.METRICS / "eval.json")
    parser.add_argument("--train-metrics", type=Path, default=paths.METRICS / "train.json")
    # length_bins.json (the card's per-length table), predictions.jsonl and run.json (what the
    # export is compared with, and in which precision evaluate computed it)
    parser.add_argument("--eval-outputs", type=Path, default=paths.EVAL_OUTPUTS)
    parser.add_argument("--train-outputs", type=Path, default=paths.TRAIN_OUTPUTS)  # run.json
    parser.add_argument("--plots-dir", type=Path, default=paths.PLOTS)  # the card's figures
    parser.add_argument("--compare-config", type=Path, default=Path("compare/params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.EXPORT)
    args = parser.parse_args()
    params = params_from_args(args)

    # Load the trained model, the texts to check the export on, and the run's results
    # fp32 weights (model_dtype bf16: the frozen ones upcast exactly, LoRA merged in fp32): the
    # export is a plain model, checked against this one
    model, info = load_model(args.model_dir, fp32=True)
    prepared = load_prepared(args.prepared, with_train=False)
    order = np.argsort(prepared.test_lengths, kind="stable")
    half = CHECK_TEXTS // 2
    picked = sorted(set(order[:half].tolist()) | set(order[-half:].tolist()))
    texts = [prepared.test_texts[i] for i in picked]
    revision = info.base_revision or hub_commit(info.base_model)
    compare_config = yaml.safe_load(args.compare_config.read_text())
    eval_run = read_json(args.eval_outputs / paths.RUN_INFO)
    evaluated = read_prediction_probs(
        (args.eval_outputs / paths.PREDICTIONS).read_text(encoding="utf-8"))

    # Export, check it as a user loads it, and write its card; then swap it into place
    with staged_dir(args.out) as tmp:
        notes = export_model(model, info, tmp, revision)
        check = check_export(tmp, model, info, texts)
        # evaluate scored texts over the limit whole (eval.long_texts windows): the export
        # truncates them, so only the others compare
        same = (np.ones(len(picked), dtype=bool) if eval_run.get("long_texts") != "windows" else
                prepared.test.full_lengths[picked] == prepared.test.lengths[picked])
        agreement = agreement_with_evaluate(check.probabilities[same],
                                            evaluated[picked][same],
                                            eval_run.get("precision", "not recorded"))
        for name, _ in FIGURES:
            shutil.copyfile(args.plots_dir / name, tmp / name)
        card = CardInputs(params=params, info=info, notes=notes, check=check,
                          agreement=agreement, evaluation=read_json(args.eval_metrics),
                          evaluate_run=eval_run,
                          train_run=read_json(args.train_outputs / paths.RUN_INFO),
                          length_bins=read_json(args.eval_outputs / "length_bins.json"),
                          per_class=csv_rows(args.plots_dir / PER_CLASS),
                          confused_pairs=csv_rows(args.plots_dir / CONFUSED_PAIRS),
                          training=read_json(args.train_metrics),
                          reference=find_reference(params, compare_config,
                                                   Path(args.params)),
                          figures=FIGURES)
        write_text(tmp / "README.md", model_card(card))

    loader = " (trust_remote_code=True)" if notes.remote_code else ""
    log(f"wrote {args.out}/: {notes.architecture}{loader}; probabilities within "
        f"{check.max_diff:.1e} of the trained model on {check.n_texts} test texts "
        f"({check.n_cut} truncated), both in fp32; {agreement.shown(check.n_texts)}")
    if not notes.exact_truncation:
        seen = ("" if check.max_diff_head_tail is None else
                f" (probabilities up to {check.max_diff_head_tail:.2f} apart on the checked ones)")
        log(f"warning: head_tail truncation cannot be expressed by a tokenizer: the export keeps "
            f"the {'last' if notes.truncation_side == 'left' else 'first'} {notes.max_length} "
            f"tokens of longer texts{seen}; `textclf predict --model-dir {args.out}` cuts them "
            "as in training")


if __name__ == "__main__":
    run_stage(main)
