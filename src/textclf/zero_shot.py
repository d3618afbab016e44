"""Zero-shot prompt scoring with a causal LM: the answer words' next-token logits at the last
real position of "Review: <text> Sentiment:", as a classifier (see models.build_zero_shot)."""

from __future__ import annotations

import torch

from .models import Classifier, build_zero_shot, calibrate
from .errors import ParamsError
from .params import Params
from .families import Family
from .tokenization import InputFormat, TextTokenizer, prompt_format, truncate


def prompt_tokens(params: Params, tokenizer: TextTokenizer) -> int:
    """Tokens the zero-shot prompt adds to each input on top of data.max_tokens (which counts
    the special tokens only); 0 for the other methods."""
    if params.method != "zero_shot":
        return 0
    return prompt_format(tokenizer, params.zero_shot.template).extra - tokenizer.n_special


def zero_shot_classifier(params: Params, family: Family, tokenizer: TextTokenizer,
                         num_labels: int, device: torch.device | str = "cpu"
                         ) -> tuple[Classifier, InputFormat, list[float] | None]:
    """The scorer, its prompt format, and the content-free answer probabilities if calibrated."""
    zs = params.zero_shot
    if len(zs.answers) != num_labels:
        raise ParamsError(f"zero_shot.answers lists {len(zs.answers)} words but the data has "
                          f"{num_labels} classes: give one answer word per class, in label order")
    answer_ids = [tokenizer.single_token(word) for word in zs.answers]
    fmt = prompt_format(tokenizer, zs.template)
    clf = build_zero_shot(params.model, family, answer_ids).to(device).eval()
    content_free = None
    if zs.calibrate:
        budget = params.data.max_tokens - tokenizer.n_special
        ids = fmt.apply(truncate(tokenizer.encode([zs.content_free])[0], budget,
                                 params.data.truncation, params.data.head_tokens))
        x = torch.tensor([ids], device=device)
        with torch.inference_mode():
            logits = clf(x, torch.ones_like(x))[0]
        content_free = calibrate(clf, logits)
    return clf, fmt, content_free
