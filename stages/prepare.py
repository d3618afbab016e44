"""Prepare: load and clean the data, carve a validation split out of train, tokenize once.

    python stages/prepare.py                # what `dvc repro prepare` runs (params.yaml)

Reads params: seed, model and model_revision (its config and tokenizer), data.
Writes: data/prepared/ (token ids of train/val/test, their cleaned texts and labels, meta.json, and
report.json: split sizes, dropped empty texts, invalid UTF-8 lines, truncation counts) and
metrics/inputs.json: what the run reads, the model's and the data's hub commits or local content
hashes (also in meta.json).
"""

from pathlib import Path

import this_checkout  # noqa: F401  (first: this checkout's src/ on the import path)

from textclf.core import paths
from textclf.core.data import load_corpus
from textclf.core.families import checked_config_and_family
from textclf.core.outputs import staged_dir, write_json, write_text
from textclf.core.prepared_data import prepared_meta
from textclf.core.prepared_texts import text_lines
from textclf.core.provenance import model_provenance, run_inputs
from textclf.core.runner import log, params_from_args, run_stage, stage_parser
from textclf.core.tokenization import (
    check_head_tokens,
    length_in_gpt2_tokens,
    load_tokenizer,
    tokenize_split,
)


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, default=paths.PREPARED)
    parser.add_argument("--inputs", type=Path, default=paths.INPUTS)
    args = parser.parse_args()
    params = params_from_args(args)
    p = params.data

    # Model family and tokenizer: config and tokenizer files only, no weights
    # the input length against the model's limit; the method is train's to check
    _, family = checked_config_and_family(params, method_checks=False)
    tokenizer = load_tokenizer(params.model, family, params.model_revision)
    model_read = model_provenance(params.model, params.model_revision)
    check_head_tokens(tokenizer, p.max_tokens, p.truncation, p.head_tokens)

    # Load, clean, cap, split
    corpus = load_corpus(p, params.seed)
    log(f"data: {p.source} -> train {len(corpus.train)}, val {len(corpus.val)}, "
        f"test {len(corpus.test)}; classes {corpus.label_names}")
    inputs = run_inputs(model_read, corpus.provenance)
    log(f"inputs: model {model_read.shown(40)}; data {corpus.provenance.shown(40)}")

    # Tokenize once
    texts = {"train": corpus.train, "val": corpus.val, "test": corpus.test}
    splits = {name: tokenize_split(tokenizer, split.texts, split.labels, p.max_tokens,
                                   p.truncation, p.head_tokens)
              for name, split in texts.items()}
    lengths, unit = length_in_gpt2_tokens(tokenizer, corpus.test.texts, splits["test"].full_lengths)
    for i in range(min(2, len(splits["train"]))):
        ids = splits["train"].ids[i]
        log(f"example {i} (label {corpus.label_names[splits['train'].labels[i]]}, "
            f"{len(ids)} of {splits['train'].full_lengths[i]} tokens kept): "
            f"{tokenizer.decode(ids.tolist())[:300]!r}")

    # Write: the directory is swapped in only once complete
    report = {
        "sizes": {name: len(split) for name, split in splits.items()},
        "dropped_empty": corpus.report["dropped_empty"],
        "invalid_utf8_lines": corpus.report.get("invalid_utf8", {}),
        "truncated": {name: int((split.full_lengths > split.lengths).sum())
                      for name, split in splits.items()},
        "mean_tokens": {name: round(float(split.full_lengths.mean()), 1)
                        for name, split in splits.items()},
    }
    with staged_dir(args.out) as tmp:
        for name, split in splits.items():
            split.save(tmp / paths.SPLIT_FILE.format(split=name))
            write_text(tmp / paths.TEXTS_FILE.format(split=name),
                       text_lines(texts[name], lengths if name == "test" else None))
        write_json(tmp / paths.META, prepared_meta(params, family, tokenizer, corpus, unit,
                                                   inputs))
        write_json(tmp / paths.REPORT, report)
    write_json(args.inputs, {"inputs": inputs})
    log(f"wrote {args.out}/: dropped empty {report['dropped_empty']}, "
        f"truncated {report['truncated']}")


if __name__ == "__main__":
    run_stage(main)
