"""The predictor: a trained model directory (models/ or an export) loaded on a device, with the
input pipeline it was trained with, scoring texts as the evaluate stage scores the test split.
`textclf predict` (textclf.cli.predict) reads and writes the records around it.

    from textclf.predictor import load_predictor
    load_predictor("export").predict(["A wonderful film."])  # [{"predicted": "pos", ...}]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textclf.core import paths
from textclf.core.data import clean_text

# torch and transformers are imported inside the functions that need them: bad input fails at
# once, before seconds of imports.

DEFAULT_BATCH_SIZE = 128  # params.yaml's eval.batch_size: the evaluate stage's batches
# params.yaml's eval.window_overlap and eval.window_combine: how texts over the limit are read
# whole when asked (eval.long_texts windows, `textclf predict --long-texts windows`)
DEFAULT_WINDOW_OVERLAP = 0.5
DEFAULT_WINDOW_COMBINE = "mean_logits"
QUANTIZE = ("none", "int8")  # --quantize: int8 = textclf.quantize's int8 products (opt-in)


class PredictError(ValueError):
    """Input the predictor cannot use (no texts, an empty text, an unusable device)."""


@dataclass
class Predictor:
    """A trained classifier on its device, with the input pipeline it was trained with."""

    model: Any  # a Classifier (modeling.classifier) or ExportedClassifier (export), in eval mode
    info: Any  # textclf.modeling.model_info.TrainedModelInfo: base model, labels, input format
    tokenizer: Any  # textclf.core.tokenization.TextTokenizer
    accelerator: Any  # accelerate.Accelerator: device and autocast, as in the evaluate stage
    # textclf.modeling.windows.Windows: texts over the limit scored whole, as overlapping
    # windows (evaluate's eval.long_texts windows); None cuts them as training did
    windows: Any = None
    # predict --compile (eval.compile): the model's torch.compile version scores, compiled on
    # the first batch of the first call (textclf.modeling.inference.compiled_scorer)
    compiled: bool = False

    @property
    def label_names(self) -> list[str]:
        return self.info.label_names

    @functools.cached_property
    def scorer(self):
        """predict_logits' `forward`: with `compiled`, the compiled scorer (made once, on first
        use); else None, the model as it is."""
        from textclf.modeling.inference import compiled_scorer

        return compiled_scorer(self.model) if self.compiled else None

    def probabilities(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(N, K) float32 class probabilities of `texts`, in their order."""
        from textclf.core.tokenization import encode_texts, text_budget, truncated_split
        from textclf.modeling.batching import Collator, pad_multiple_for
        from textclf.modeling.inference import predict_logits, softmax
        from textclf.modeling.windows import whole_text_logits

        cleaned = cleaned_texts(texts)
        if batch_size < 1:
            raise PredictError(f"--batch-size must be a positive integer, got {batch_size}")
        info = self.info
        full = encode_texts(self.tokenizer, cleaned)
        budget = text_budget(self.tokenizer, info.max_tokens)
        split = truncated_split(full, np.zeros(len(cleaned), dtype=np.int64), budget,
                                info.truncation, info.head_tokens)
        collator = Collator(info.input_format, info.pad_id,
                            pad_multiple_for(self.accelerator.device))
        logits = predict_logits(self.model, split, collator, batch_size, self.accelerator,
                                self.scorer)
        if self.windows is not None:
            logits = whole_text_logits(self.model, split, full, logits, budget, self.windows,
                                       collator, batch_size, self.accelerator,
                                       self.scorer).logits
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
    # float() of each float32, as the evaluate stage writes its predictions.jsonl
    best = int(np.argmax(probs))
    return {"predicted": names[best], "probability": float(probs[best]),
            "probs": {name: float(p) for name, p in zip(names, probs)}}


def check_device(device: str, mixed_precision: str, quantize: str = "none") -> None:
    from textclf.modeling.device import DEVICES, PRECISIONS, cuda_available

    if device not in DEVICES:
        raise PredictError(f"--device must be auto, cpu or cuda, got {device!r}")
    if mixed_precision not in PRECISIONS:
        raise PredictError(f"--mixed-precision must be {', '.join(PRECISIONS)}, "
                           f"got {mixed_precision!r}")
    if device == "cuda" and not cuda_available():
        raise PredictError("--device cuda: no CUDA GPU is available to torch; use --device cpu "
                           "(or auto)")
    if quantize not in QUANTIZE:
        raise PredictError(f"--quantize must be {' or '.join(QUANTIZE)}, got {quantize!r}")
    if quantize == "int8" and (device == "cuda" or mixed_precision == "bf16"):
        raise PredictError("--quantize int8 runs on the CPU, in fp32 around its int8 products: "
                           "use --device cpu (or auto) and --mixed-precision fp32 (or auto)")


def make_device_accelerator(device: str, mixed_precision: str = "auto"):
    """The evaluate stage's Accelerator and precision rule (textclf.modeling.device), on the
    device asked for: auto (a GPU if there is one), cpu or cuda."""
    from textclf.modeling.accelerator import make_accelerator

    check_device(device, mixed_precision)
    return make_accelerator(mixed_precision, device)


def windows_of(long_texts: str, overlap: float = DEFAULT_WINDOW_OVERLAP,
               combine: str = DEFAULT_WINDOW_COMBINE):
    """How a predictor reads texts over the limit: None for "truncate" (as training did), a
    textclf.modeling.windows.Windows for "windows"."""
    if long_texts == "truncate":
        return None
    from textclf.modeling.windows import Windows

    return Windows(overlap, combine)


def load_predictor(model_dir: str | Path = paths.MODEL_DIR, device: str = "auto",
                   mixed_precision: str = "auto", windows=None,
                   quantize: str = "none", compiled: bool = False) -> Predictor:
    """Load a model directory for prediction: the train stage's (modeling.classifier.save_model)
    or an export (export.hf_export.export_model). Predictors of other devices and precisions,
    and the stages, may come before or after it in the same process. `windows`
    (textclf.modeling.windows.Windows) scores texts over the limit whole. `quantize` int8: the
    blocks' linear layers dynamically quantized (textclf.quantize; CPU, fp32 around the int8
    products), opt-in: probabilities move by int8's rounding. `compiled`: scored by the model's
    torch.compile version (eval.compile), the same function to the precision's rounding."""
    from textclf.core.families import family_for
    from textclf.export.hf_loading import is_export, load_export
    from textclf.modeling.classifier import load_model

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {str(model_dir)!r} does not exist; train a "
                                "model first (dvc repro) or pass --model-dir")
    check_device(device, mixed_precision, quantize)  # before seconds of loading
    if is_export(model_dir):
        model, info, tokenizer = load_export(model_dir)
    else:
        model, info = load_model(model_dir)
        tokenizer = info.load_tokenizer(model_dir)
    if quantize == "int8":
        from textclf.quantize import quantize_int8

        model = quantize_int8(model, family_for(info.family))
        device, mixed_precision = "cpu", "fp32"
    accelerator = make_device_accelerator(device, mixed_precision)
    return Predictor(model.to(accelerator.device), info, tokenizer, accelerator, windows,
                     compiled)


def predict_texts(model_dir: str | Path, texts: Sequence[str],
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                  mixed_precision: str = "auto", quantize: str = "none") -> list[dict]:
    """Load `model_dir` and predict `texts`: one record per text (see Predictor.predict)."""
    texts = cleaned_texts(texts)  # bad input fails before the model loads
    return load_predictor(model_dir, device, mixed_precision,
                          quantize=quantize).predict(texts, batch_size)
