"""Predict: label new texts with a trained model, one JSON line per text.

    textclf-predict "A wonderful film." "Dull and lifeless."     # texts as arguments
    textclf-predict --file reviews.txt                            # one text per line
    textclf-predict --file reviews.jsonl                          # JSON lines with a "text" field
    cat reviews.txt | python -m textclf.predict --model-dir models --device cpu

Reads the model directory written by the train stage (models/ by default: what was trained and
textclf.json, which names the base model and the input format). Each text is cleaned, tokenized
and truncated exactly as for training and evaluation, and scored as the evaluate stage scores the
test split, so with --batch-size equal to eval.batch_size (and the same device and precision) the
probabilities are those of outputs/predictions.jsonl, bit for bit.

Prints, per text and in input order:
    {"predicted": "pos", "probability": 0.93, "probs": {"neg": 0.07, "pos": 0.93}}
Errors (no model, no texts, an empty text) print one `error:` line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np

from . import paths
from .data import DataError, clean_text, jsonl_rows

# torch and transformers are imported inside the functions that need them: bad arguments and
# empty input fail at once, before seconds of imports.

DEFAULT_BATCH_SIZE = 128  # params.yaml's eval.batch_size: the evaluate stage's batches


class PredictError(ValueError):
    """Input the predictor cannot use (no texts, an empty text, an unusable device)."""


@dataclass
class Predictor:
    """A trained classifier on its device, with the input pipeline it was trained with."""

    model: Any  # textclf.models.Classifier, in eval mode
    info: dict[str, Any]  # textclf.json: base model, labels, input format, truncation
    tokenizer: Any  # textclf.tokenization.TextTokenizer
    accelerator: Any  # accelerate.Accelerator: device and autocast, as in the evaluate stage

    @property
    def label_names(self) -> list[str]:
        return self.info["label_names"]

    def probabilities(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(N, K) float32 class probabilities of `texts`, in their order."""
        from .batching import Collator, pad_multiple_for
        from .inference import predict_logits, softmax
        from .tokenization import InputFormat, tokenize_split

        cleaned = cleaned_texts(texts)
        if batch_size < 1:
            raise PredictError(f"--batch-size must be a positive integer, got {batch_size}")
        info = self.info
        split = tokenize_split(self.tokenizer, cleaned, np.zeros(len(cleaned), dtype=np.int64),
                               info["max_tokens"], info["truncation"], info["head_tokens"])
        collator = Collator(InputFormat(tuple(info["input_prefix"]), tuple(info["input_suffix"])),
                            info["pad_id"], pad_multiple_for(self.accelerator.device))
        logits = predict_logits(self.model, split, collator, batch_size, self.accelerator)
        return softmax(logits)

    def predict(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict]:
        """One record per text: predicted label name, its probability, every class's."""
        probs = self.probabilities(texts, batch_size)
        return [prediction_record(row, self.label_names) for row in probs]


def cleaned_texts(texts: Sequence[str]) -> list[str]:
    """The texts as the prepare stage cleans them; an empty one is an error (prepare drops
    them, and a GPT-2 input without a single token has nothing to classify)."""
    if not texts:
        raise PredictError("no texts to predict")
    cleaned = [clean_text(t) for t in texts]
    empty = [i for i, t in enumerate(cleaned) if not t]
    if empty:
        raise PredictError(f"text {empty[0] + 1} of {len(texts)} is empty (after removing HTML "
                           "line breaks and whitespace); nothing to classify")
    return cleaned


def prediction_record(probs: np.ndarray, names: list[str]) -> dict:
    # float() of each float32, as the evaluate stage writes outputs/predictions.jsonl
    best = int(np.argmax(probs))
    return {"predicted": names[best], "probability": float(probs[best]),
            "probs": {name: float(p) for name, p in zip(names, probs)}}


def check_device(device: str, mixed_precision: str) -> None:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise PredictError(f"--device must be auto, cpu or cuda, got {device!r}")
    if mixed_precision not in ("auto", "bf16", "no"):
        raise PredictError(f"--mixed-precision must be auto, bf16 or no, got {mixed_precision!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda: no CUDA GPU is available to torch; use --device cpu "
                           "(or auto)")


def make_device_accelerator(device: str, mixed_precision: str = "auto"):
    """The evaluate stage's Accelerator (bf16 autocast on GPUs that support it when `auto`), on
    the device asked for: auto (a GPU if there is one), cpu or cuda."""
    import torch

    from .training import make_accelerator

    check_device(device, mixed_precision)
    if device == "cpu" and torch.cuda.is_available():
        from accelerate import Accelerator

        # make_accelerator picks the GPU whenever there is one; auto precision on CPU is fp32
        return Accelerator(mixed_precision="no" if mixed_precision == "auto" else mixed_precision,
                           cpu=True)
    return make_accelerator(mixed_precision)


def load_predictor(model_dir: str | Path = paths.MODEL_DIR, device: str = "auto",
                   mixed_precision: str = "auto") -> Predictor:
    """Load a trained model directory (see textclf.models.save_model) for prediction.

    Accelerate keeps one device and precision per process: after an Accelerator with other
    settings was built in this process, building this one fails (accelerate's ValueError).
    """
    from .families import family_for
    from .models import load_model
    from .tokenization import load_tokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {str(model_dir)!r} does not exist; train a "
                                "model first (dvc repro) or pass --model-dir")
    check_device(device, mixed_precision)  # before seconds of loading
    model, info = load_model(model_dir)
    accelerator = make_device_accelerator(device, mixed_precision)
    tokenizer = load_tokenizer(info["base_model"], family_for(info["family"]))
    if tokenizer.name != info["tokenizer"]:
        # e.g. trained on a local GPT-2 directory's tokenizer, now resolved to tiktoken
        raise PredictError(f"{model_dir} was trained with tokenizer {info['tokenizer']!r}, but "
                           f"{info['base_model']!r} now loads {tokenizer.name!r}")
    return Predictor(model.to(accelerator.device), info, tokenizer, accelerator)


def predict_texts(model_dir: str | Path, texts: Sequence[str],
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                  mixed_precision: str = "auto") -> list[dict]:
    """Load `model_dir` and predict `texts`: one record per text (see Predictor.predict)."""
    texts = cleaned_texts(texts)  # bad input fails before the model loads
    return load_predictor(model_dir, device, mixed_precision).predict(texts, batch_size)


def read_texts(path: Path) -> list[str]:
    """Texts of a file: a .jsonl file's "text" fields, else one text per line (blank lines
    skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"--file {path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        return [row["text"] for row in jsonl_rows(text, path, string_field="text")]
    return [line for line in text.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf-predict",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("texts", nargs="*", help="texts to classify (default: --file or stdin)")
    parser.add_argument("--file", type=Path, default=None,
                        help="one text per line, or a .jsonl file with a \"text\" field")
    parser.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR,
                        help="trained model directory (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="texts per batch (default: %(default)s, eval.batch_size's default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto = a GPU if there is one (default: %(default)s)")
    parser.add_argument("--mixed-precision", choices=("auto", "bf16", "no"), default="auto",
                        help="as train.mixed_precision: auto = bf16 on GPUs that support it")
    args = parser.parse_args(argv)
    if args.texts and args.file:
        parser.error("give texts as arguments or --file, not both")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")

    try:
        texts = input_texts(args.texts, args.file)
    except (PredictError, DataError, OSError) as e:
        fail(str(e))
    from .cli import EXPECTED_ERRORS, quiet_libraries  # imports torch

    quiet_libraries()
    try:
        records = predict_texts(args.model_dir, texts, args.batch_size, args.device,
                                args.mixed_precision)
    except (PredictError, OSError, *EXPECTED_ERRORS) as e:
        fail(str(e))
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            fail("the GPU ran out of memory; lower --batch-size")
        raise
    sys.stdout.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def input_texts(texts: list[str], file: Path | None) -> list[str]:
    """The texts of the command line: its arguments, else --file, else stdin (one per line)."""
    if not texts:
        if file:
            texts = read_texts(file)
        else:
            if sys.stdin.isatty():
                print("reading texts from stdin, one per line (end with Ctrl-D)", file=sys.stderr)
            texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise PredictError(f"no texts to predict: {f'--file {file}' if file else 'stdin'} "
                           "holds none")
    cleaned_texts(texts)  # an empty one fails here, before the model loads
    return texts


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
