"""The model card (README.md) of an exported model, generated from the run's files.

Everything in it comes from the params, the saved model's description, the train and evaluate
stages' metrics, the per-length table, the published reference of compare/params.yaml and the
export's own notes and check: nothing is typed by hand. The format is the Hugging Face Hub's:
YAML front matter (license, language, base_model, datasets, metrics, model-index with the test
results), then Markdown, with the evaluate stage's confusion matrix and ROC curve as images
beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from textclf.core import data
from textclf.core.families import family_for
from textclf.core.params import Params, flat_params
from textclf.core.prepared_data import LENGTH_UNITS
from textclf.export.hf_export import ExportCheck, ExportNotes
from textclf.export.hf_model import MODULE
from textclf.modeling.model_info import TrainedModelInfo
from textclf.results_table import QUALITY, run_params

LOSS_NOTE = "cross-entropy, nats"
# Keys that define which published configuration a run reproduces; the others (seed, epochs,
# learning rate, ...) are listed as differences from it
IDENTITY_KEYS = ("model", "method", "data.source", "data.hub_config", "data.test_split",
                 "train.head")  # an attention-head run is not compared with a linear one
# Keys that only describe the export (license, language): never a difference in results
DESCRIPTIVE_PREFIXES = ("export.",)
# The evaluate stage's images the card shows, copied beside it: (file name, caption)
FIGURES = (("confusion.png", "Confusion matrix (test)"), ("roc.png", "ROC curve (test)"))


@dataclass(frozen=True)
class Reference:
    """The compare run whose configuration this run matches, and its published figures."""

    run: str  # name in compare/params.yaml
    figures: dict[str, float]  # accuracy, precision, ...
    differences: list[tuple[str, object, object]]  # (dotted key, this run's value, the run's)


@dataclass(frozen=True)
class CardInputs:
    params: Params
    info: TrainedModelInfo  # what train saved
    notes: ExportNotes
    check: ExportCheck
    evaluation: dict  # metrics/eval.json
    length_bins: dict  # the evaluate stage's per-length table (with "length_unit")
    training: dict  # metrics/train.json: trainable_params, total_params, best epoch
    reference: Reference | None
    figures: tuple[tuple[str, str], ...] = ()  # images beside the card: (file name, caption)


def find_reference(params: Params, compare_config: dict, base_params: Path) -> Reference | None:
    """The compare run with a published reference and the same model, method and data as
    `params` (the one differing in the fewest other params), or None."""
    ours = flat_params(params.to_dict())
    best = None
    for name, run in compare_config.get("runs", {}).items():
        if not run.get("reference"):
            continue
        theirs = flat_params(run_params(base_params, compare_config, name).to_dict())
        if any(ours.get(key) != theirs.get(key) for key in IDENTITY_KEYS):
            continue
        differences = [(key, ours.get(key), theirs.get(key))
                       for key in sorted(set(ours) | set(theirs))
                       if ours.get(key) != theirs.get(key)
                       and not key.startswith(DESCRIPTIVE_PREFIXES)]
        if best is None or len(differences) < len(best.differences):
            best = Reference(name, dict(run["reference"]), differences)
    return best


def dataset_id(params: Params) -> str | None:
    """The hub id of the data, or None for a local directory."""
    source = params.data.source
    if source == "imdb":
        return data.IMDB_HUB_ID
    return None if Path(source).expanduser().is_dir() else source


def model_card(c: CardInputs) -> str:
    return front_matter(c) + "\n" + "\n".join(_body(c)) + "\n"


def front_matter(c: CardInputs) -> str:
    p, info = c.params, c.info
    dataset = dataset_id(p)
    on_hub = not Path(info.base_model).expanduser().is_dir()
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-classification"}
    if p.export.license is not None:
        meta["license"] = p.export.license
    if p.export.language is not None:
        meta["language"] = list(p.export.language)
    if on_hub:
        meta["base_model"] = info.base_model
        if info.method != "zero_shot":
            meta["base_model_relation"] = "finetune"  # LoRA too: merged into the weights
    if dataset:
        meta["datasets"] = [dataset]
    meta["metrics"] = [k for k in QUALITY if c.evaluation.get(k) is not None]
    meta["tags"] = ["text-classification", "textclf", info.method.replace("_", "-")]
    if c.notes.remote_code:
        meta["tags"].append("custom_code")
    split = {"name": dataset or f"local: {Path(p.data.source).name}",
             "type": dataset or "local", "split": p.data.test_split}
    if p.data.hub_config:
        split["config"] = p.data.hub_config
    meta["model-index"] = [{
        "name": model_name(c),
        "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": split,
            "metrics": [{"type": k, "value": c.evaluation[k], "name": _title(k)}
                        for k in QUALITY if c.evaluation.get(k) is not None],
        }],
    }]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def model_name(c: CardInputs) -> str:
    base = Path(c.info.base_model).name
    data_name = Path(dataset_id(c.params) or c.params.data.source).name
    return f"{base}-{c.info.method.replace('_', '-')}-{data_name}"


def _title(metric: str) -> str:
    return {"roc_auc": "ROC-AUC", "f1": "F1"}.get(metric, metric.capitalize())


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _body(c: CardInputs) -> list[str]:
    info = c.info
    lines = ["<!-- Generated by stages/export.py from params.yaml, the train and evaluate stages' "
             "metrics and compare/params.yaml: do not edit; run `dvc repro export`. -->", "",
             f"# {model_name(c)}", "",
             f"{_what(c)}, {'built' if info.method == 'zero_shot' else 'trained'} and "
             f"evaluated with textclf (a DVC pipeline). Classes, in "
             f"label order: {', '.join(f'`{n}`' for n in info.label_names)}.", ""]
    lines += _trained_section(c) + _results_section(c) + _use_section(c)
    lines += _input_section(c) + _exactness_section(c) + _limits_section(c)
    return lines


def _what(c: CardInputs) -> str:
    base = c.info.base_model
    return {"finetune": f"{base} fine-tuned for text classification",
            "lora": f"{base} adapted with LoRA (merged into the weights) for text classification",
            "zero_shot": f"{base} as a zero-shot classifier (prompt scoring, no training)",
            }[c.info.method]


def _trained_section(c: CardInputs) -> list[str]:
    p, info, t = c.params, c.info, c.training
    family = family_for(info.family)
    revision = c.notes.base_revision or ("local directory" if Path(info.base_model).is_dir()
                                         else "unknown")
    rows = [("Base model", f"`{info.base_model}` (revision `{revision}`, {family.name} family)"),
            ("Method", info.method), ("What was trained", _trained_parts(c))]
    if "trainable_params" in t:
        share = 100 * t["trainable_params"] / t["total_params"] if t.get("total_params") else 0
        rows.append(("Trainable parameters", f"{t['trainable_params']:,} of "
                                             f"{t.get('total_params', 0):,} ({share:.2f}%)"))
    source = p.data.source + (f" (config `{p.data.hub_config}`)" if p.data.hub_config else "")
    train_cap = f", capped at {p.data.train_size:,} texts" if p.data.train_size else ""
    test_cap = f", capped at {p.data.test_size:,} texts" if p.data.test_size else ""
    rows += [("Data", f"`{source}`: split `{p.data.train_split}`{train_cap}, of which "
                      f"{p.data.val_fraction:.0%} held out for validation; tested on "
                      f"`{p.data.test_split}`{test_cap} (n = {c.evaluation.get('n')})"),
             ("Input", f"{info.max_tokens} tokens, special tokens included"
                       + ("; the prompt's come on top" if info.method == "zero_shot" else "")
                       + f"; {_truncation(info)}")]
    if info.method == "zero_shot":
        zs = p.zero_shot
        rows += [("Prompt", f"`{zs.template}`, answers {', '.join(f'`{a}`' for a in zs.answers)}"),
                 ("Calibration", f"contextual, content-free text `{zs.content_free}`"
                                 if zs.calibrate else "none")]
    else:
        tr = p.train
        epochs = f"{tr.epochs} epoch" + ("s" if tr.epochs != 1 else "")
        rows += [("Training", f"{epochs}, batch {tr.batch_size}, AdamW lr "
                              f"{p.learning_rate:g} ({tr.schedule}, warmup {tr.warmup_ratio:g}), "
                              f"weight decay {tr.weight_decay:g}, grad clip {tr.grad_clip:g}, "
                              f"head dropout {tr.head_dropout:g}, precision "
                              f"{tr.mixed_precision}, seed {p.seed}")]
        if "best_epoch" in t:
            rows.append(("Kept", f"epoch {t['best_epoch']} (validation accuracy "
                                 f"{_pct(t.get('best_val_accuracy'))}%)"))
    return ["## What was trained", "", "| | |", "|---|---|",
            *[f"| {k} | {v} |" for k, v in rows], ""]


def _trained_parts(c: CardInputs) -> str:
    p, info = c.params, c.info
    family = family_for(info.family)
    pooling = {"last": "the last real token's hidden state",
               "mean": "the mean of the hidden states over real tokens"}[family.pooling]
    if info.method == "zero_shot":
        return ("nothing: the head is the language model's output rows of the answer words, "
                "read at the prompt's last token")
    if info.method == "lora":
        lora = p.lora
        targets = ", ".join(lora.target_modules or family.lora_targets)
        return (f"LoRA r={lora.r}, alpha={lora.alpha:g}, dropout {lora.dropout:g} on `{targets}` "
                f"of {_blocks(lora.trainable_blocks)}, and a linear head on {pooling}")
    blocks = p.finetune.trainable_blocks
    norm = (f", the final norm `{family.final_norm}`" if family.final_norm and blocks != "all"
            else "")
    return f"{_blocks(blocks)}{norm} and a linear head on {pooling}"


def _blocks(value) -> str:
    return "every block" if value == "all" else f"the last {value} blocks"


def _truncation(info: TrainedModelInfo) -> str:
    return {"left": "longer texts keep their last tokens",
            "right": "longer texts keep their first tokens",
            "head_tail": f"longer texts keep their first {info.head_tokens} and last tokens "
                         "(head_tail)"}[info.truncation]


def _results_section(c: CardInputs) -> list[str]:
    e = c.evaluation
    lines = [f"## Test results (`{c.params.data.test_split}`, n = {e.get('n')})", "",
             "| Metric | Value | 95% interval |", "|---|---|---|"]
    for key in QUALITY:
        low, high = e.get(f"{key}_ci_low"), e.get(f"{key}_ci_high")
        interval = f"{_pct(low)} – {_pct(high)}" if low is not None else "—"
        lines.append(f"| {_title(key)} | {_pct(e.get(key))} | {interval} |")
    if e.get("loss") is not None:
        lines.append(f"| Loss ({LOSS_NOTE}) | {e['loss']:.4f} | — |")
    lines += ["", f"Intervals: percentile bootstrap over the test texts "
                  f"({c.params.eval.bootstrap} resamples); they do not cover the spread over "
                  "seeds. Precision, recall and F1 are of the second class for two classes, "
                  "macro averages otherwise.", ""]
    lines += _figures(c) + _length_table(c.length_bins) + _reference_table(c)
    return lines


def _figures(c: CardInputs) -> list[str]:
    """The images beside the card, side by side (relative links: the Hub and a local viewer
    both resolve them in the model's directory)."""
    if not c.figures:
        return []
    return [" ".join(f'<img src="{name}" alt="{caption}" width="400">'
                     for name, caption in c.figures), ""]


def _length_table(bins: dict) -> list[str]:
    unit = LENGTH_UNITS.get(bins.get("length_unit"), str(bins.get("length_unit")))
    rows = {k: v for k, v in bins.items() if isinstance(v, dict)}
    extra = [k for k in ("precision", "recall") if any(k in r for r in rows.values())]
    lines = [f"### By text length ({unit}, before truncation)", "",
             "| Length | n | Accuracy |" + "".join(f" {k.capitalize()} |" for k in extra),
             "|---|---|---|" + "---|" * len(extra)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['n']} | {_pct(row.get('accuracy'))} |"
                     + "".join(f" {_pct(row.get(k))} |" for k in extra))
    return lines + [""]


def _reference_table(c: CardInputs) -> list[str]:
    ref = c.reference
    if ref is None:
        return ["### Published reference", "", "No published figures are recorded in "
                "compare/params.yaml for this model, method and data.", ""]
    lines = ["### Published reference", "",
             f"The reference row of `{ref.run}` in compare/params.yaml:", "",
             "| Metric | This model | Reference | Difference |", "|---|---|---|---|"]
    for key, value in ref.figures.items():
        ours = c.evaluation.get(key)
        delta = f"{100 * (ours - value):+.2f}" if ours is not None else "n/a"
        lines.append(f"| {_title(key)} | {_pct(ours)} | {_pct(value)} | {delta} |")
    if ref.differences:
        diffs = "; ".join(f"`{k}` {a!r} (reference run: {b!r})" for k, a, b in ref.differences)
        lines += ["", f"This run differs from that configuration in: {diffs}."]
    else:
        lines += ["", "This run has that configuration's params exactly."]
    return lines + [""]


def _use_section(c: CardInputs) -> list[str]:
    remote = ", trust_remote_code=True" if c.notes.remote_code else ""
    return [
        "## How to use", "",
        "Clean each text as training did (the tokenizer cannot): HTML line breaks become "
        "spaces, runs of whitespace one space, ends stripped.", "",
        "```python", "import re", "from transformers import pipeline", "",
        "def clean(text):",
        # the patterns data.clean_text applies, as raw strings
        f"    text = re.sub(r\"{data.HTML_BREAK.pattern}\", \" \", text, flags=re.IGNORECASE)",
        f"    return re.sub(r\"{data.WHITESPACE.pattern}\", \" \", text).strip()", "",
        f"classify = pipeline(\"text-classification\", model=\"PATH\", truncation=True, "
        f"top_k=None{remote})",
        "print(classify([clean(\"A wonderful film.<br /><br />I would watch it again.\")]))",
        "```", "",
        "`truncation=True` is required: without it, texts longer than the model's input are not "
        "cut as in training (and beyond the position embeddings, fail). With "
        "`AutoModelForSequenceClassification`, call the tokenizer with `truncation=True, "
        f"padding=True`{' and load with `trust_remote_code=True`' if remote else ''}; "
        "the logits are the trained model's.", "",
        "With textclf installed, `textclf predict --model-dir PATH --file texts.txt` cleans, "
        "cuts (head_tail included) and scores exactly as the evaluate stage did, one JSON line "
        "per input line.", ""]


def _input_section(c: CardInputs) -> list[str]:
    n, info = c.notes, c.info
    side = {"left": "keeps the last tokens (`truncation_side=left`)",
            "right": "keeps the first tokens (`truncation_side=right`)"}[n.truncation_side]
    lines = ["## Input format", "",
             f"- Tokenizer: the base model's, at most {n.max_length} tokens "
             f"(`model_max_length`); truncation {side}; padding on the right with "
             f"`{info.pad_id}` as the pad id.",
             "- Special-token strings inside a text (such as `<|endoftext|>` or `[SEP]`) are "
             "read as plain text (`split_special_tokens=True`), as in training."]
    if n.leading_space:
        lines.append("- A space is put before each text (a `Prepend` normalizer in "
                     "tokenizer.json): training encoded every text as \" \" + text, so its first "
                     "word has the token it has inside a sentence.")
    if n.prompt:
        lines.append(f"- The zero-shot prompt `{c.params.zero_shot.template}` is added around "
                     "the text by the tokenizer (a post-processor, as BERT adds [CLS] and "
                     "[SEP]); truncation keeps room for it.")
    if not n.exact_truncation:
        lines.append(f"- **Truncation differs from training for long texts.** The model was "
                     f"trained on head_tail cuts (the first {info.head_tokens} and the last "
                     f"tokens); a tokenizer can cut one side only, so this one "
                     f"{side.split(' (')[0]}. Texts within {n.max_length} tokens are scored "
                     "exactly; for longer ones use `textclf predict`, which cuts as in "
                     "training.")
    return lines + [""]


def _exactness_section(c: CardInputs) -> list[str]:
    n, k = c.notes, c.check
    family = family_for(c.info.family)
    if n.remote_code:
        pooling = {"last": "the last real token's hidden state",
                   "mean": "the mean of the last hidden states over the real tokens"}
        attention = (f", one self-attention layer ({c.info.attention_heads} heads, padding "
                     "masked)" if c.info.attention_heads else "")
        model = (f"`{n.architecture}` ({MODULE}.py in this directory, named by config.json's "
                 f"`auto_map`): the {family.name} base model{attention}, "
                 f"{pooling[family.pooling]} and a linear head with bias, as trained. No stock "
                 "class computes this exactly, hence a class of textclf's own.")
    else:
        model = (f"the stock `{n.architecture}`, which pools the last token that is not the pad "
                 "token: with right padding, the last real token, as in training.")
    lines = ["## How the export relates to the trained model", "", f"- Model: {model}"]
    if c.info.method == "lora":
        lines.append("- The LoRA adapter is merged into the weights: no peft needed.")
    if n.bias_folded_into:
        lines.append(f"- The stock classification head (`score`) has no bias; the trained "
                     f"head's bias b is folded into `{n.bias_folded_into}`, the bias of the "
                     "final layer norm, which feeds only the head: shifting it by d with W d = b "
                     "adds exactly b to the logits W y. The logits are unchanged, but that norm "
                     f"is no longer {family.name}'s: do not reuse these weights as the base "
                     "language model.")
    checked = (f"- Checked at export: on {k.n_texts} test texts (the shortest and the longest; "
               f"{k.n_cut} of them truncated), the probabilities of this directory loaded with "
               f"transformers differ from the trained model's by at most {k.max_diff:.1e} "
               "(float32)")
    if k.max_diff_head_tail is not None:
        checked += (f"; on the texts head_tail truncation cut, where the tokenizer cuts "
                    f"otherwise, by up to {k.max_diff_head_tail:.2f}")
    return lines + [checked + ".", ""]


def _limits_section(c: CardInputs) -> list[str]:
    p, info = c.params, c.info
    lines = ["## Limits", "",
             f"- Trained and tested on `{p.data.source}` only; other kinds of text, or texts "
             "cleaned otherwise, may score worse than the figures above.",
             f"- Inputs are cut to {info.max_tokens} tokens ({_truncation(info)}); the table by "
             "length shows what that costs.",
             "- Probabilities are the softmax of the head, not calibrated on held-out data.",
             f"- The figures are of one run (seed {p.seed})."]
    if info.method == "zero_shot":
        lines.append("- Zero-shot: the label is whichever answer word the language model finds "
                     "likelier after the prompt; nothing was learned from the data.")
    return lines
