"""TF-IDF of word n-grams and logistic regression, the classical baseline of text classification:
fitted on the training texts, its regularisation C chosen on the validation texts.

Features: lower-cased tokens of two or more letters, digits or underscores (scikit-learn's
default pattern), n-grams of 1 to `ngrams` of them kept when they occur in at least `min_df`
training texts, weighted by sublinear term frequency (1 + log tf) times smoothed inverse
document frequency, each text's vector of unit length. Classifier: L2-regularised logistic
regression (multinomial for more than two classes) fitted by lbfgs: deterministic for the same
texts and knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from textclf.core.data import Split
from textclf.core.errors import DataError

MAX_ITER = 2000  # lbfgs iterations at most (scikit-learn warns of a fit that stops short)


@dataclass
class BaselineFit:
    """The fitted vectorizer and classifier, the C kept and how each C of the grid did on the
    validation split."""
    vectorizer: TfidfVectorizer
    model: LogisticRegression
    num_labels: int
    c: float
    validation: list[dict]  # per C of the grid, in its order: {"c", "accuracy", "loss"}

    @property
    def vocabulary_size(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, (len(texts), num_labels): a class absent from the training texts
        gets probability 0."""
        return _all_classes(self.model, self.model.predict_proba(self.vectorizer.transform(texts)),
                            self.num_labels)


def _all_classes(model: LogisticRegression, probs: np.ndarray, num_labels: int) -> np.ndarray:
    out = np.zeros((len(probs), num_labels), dtype=np.float64)
    out[:, model.classes_] = probs
    return out


def make_vectorizer(ngrams: int, min_df: int) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, ngrams), min_df=min_df, sublinear_tf=True)


def fit_baseline(train: Split, val: Split, num_labels: int, c_grid: list[float], ngrams: int,
                 min_df: int) -> BaselineFit:
    """Fit the vectorizer on the training texts, a classifier per C of `c_grid`, and keep the
    one of highest validation accuracy (ties: lower validation log loss, then the smaller C)."""
    if len(np.unique(train.labels)) < 2:
        raise DataError("baseline: the training texts hold a single class; a classifier needs "
                        "two or more")
    vectorizer = make_vectorizer(ngrams, min_df)
    try:
        x_train = vectorizer.fit_transform(train.texts)
    except ValueError as e:  # no feature occurs in min_df texts
        raise DataError(f"baseline: no word n-gram occurs in baseline.min_df = {min_df} of the "
                        f"{len(train)} training texts ({e}); lower baseline.min_df") from None
    x_val = vectorizer.transform(val.texts)
    fits, validation = [], []
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(x_train, train.labels)
        probs = _all_classes(model, model.predict_proba(x_val), num_labels)
        validation.append({
            "c": c,
            "accuracy": round(float(skm.accuracy_score(val.labels, probs.argmax(axis=1))), 6),
            "loss": round(float(skm.log_loss(val.labels, np.clip(probs, 1e-12, 1.0),
                                             labels=list(range(num_labels)))), 6),
        })
        fits.append(model)
    best = min(range(len(c_grid)), key=lambda i: (-validation[i]["accuracy"],
                                                   validation[i]["loss"], c_grid[i]))
    return BaselineFit(vectorizer, fits[best], num_labels, c_grid[best], validation)
