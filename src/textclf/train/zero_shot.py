"""Zero-shot prompt scoring with a causal LM, all of it: the prompt around the text, the answer
words' next-token logits at the last real position of "Review: <text> Sentiment:" as a
classifier's head, and contextual calibration."""

from __future__ import annotations

import torch

from textclf.core.errors import ParamsError
from textclf.core.families import Family, n_blocks
from textclf.core.params import Params
from textclf.core.tokenization import InputFormat, TextTokenizer, truncate
from textclf.modeling.classifier import Classifier, from_pretrained, keep_frozen_in


def prompt_format(tokenizer: TextTokenizer, template: str) -> InputFormat:
    """The zero-shot prompt around the text, e.g. "Review: {text} Sentiment:".

    The text ids carry their own leading space, so the space before {text} is left to them.
    """
    before, after = template.split("{text}")
    return InputFormat(
        tuple(tokenizer.special_prefix + tokenizer.encode_plain(before.rstrip(" "))),
        tuple(tokenizer.encode_plain(after) + tokenizer.special_suffix),
    )


def build_zero_shot(model: str, family: Family, answer_ids: list[int],
                    model_dtype: str = "fp32", revision: str | None = None) -> Classifier:
    """A causal LM (a hub model's at `revision`) as a classifier: the head's rows are the LM
    head's rows of the answer words (fp32, copied before the base model is cast to
    `model_dtype`: all of it is frozen)."""
    from transformers import AutoModelForCausalLM

    lm = from_pretrained(AutoModelForCausalLM, model, dtype=torch.float32, revision=revision)
    output = lm.get_output_embeddings()
    backbone = lm.base_model
    backbone.requires_grad_(False)
    clf = Classifier(backbone, family, len(answer_ids), 0.0, n_blocks(backbone.config))
    with torch.no_grad():
        clf.head.weight.copy_(output.weight[answer_ids])
        clf.head.bias.copy_(output.bias[answer_ids] if output.bias is not None else 0.0)
    clf.head.requires_grad_(False)
    keep_frozen_in(backbone, family, model_dtype)
    return clf


def calibrate(clf: Classifier, content_free_logits: torch.Tensor) -> list[float]:
    """Contextual calibration (Zhao et al., 2021): divide the answer probabilities by those of a
    content-free input, i.e. subtract its log-probabilities from the head's bias."""
    log_p = torch.log_softmax(content_free_logits.float(), dim=-1)
    with torch.no_grad():
        clf.head.bias -= log_p.to(clf.head.bias.dtype)
    return log_p.exp().tolist()


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
    clf = build_zero_shot(params.model, family, answer_ids, params.model_dtype,
                          params.model_revision).to(device).eval()
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
