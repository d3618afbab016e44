"""The model card's tables of test results by text length and by class, from the evaluate
stage's per-length table (length_bins.json) and per-class files (per_class.csv,
confused_pairs.csv)."""

from __future__ import annotations

from textclf.core.prepared_data import LENGTH_UNITS, OVER_LIMIT

TOP_CONFUSIONS = 5  # pairs of classes the card names


def title(metric: str) -> str:
    return {"roc_auc": "ROC-AUC", "f1": "F1"}.get(metric, metric.capitalize())


def pct(x) -> str:
    return "n/a" if x is None or x == "" else f"{100 * float(x):.2f}"


def length_table(bins: dict) -> list[str]:
    """Accuracy (precision and recall for two classes) by length, and on the texts over the
    input length; beside it, when evaluate scored those whole, the accuracy truncated."""
    unit = LENGTH_UNITS.get(bins.get("length_unit"), str(bins.get("length_unit")))
    rows = {k: v for k, v in bins.items() if isinstance(v, dict) and k != OVER_LIMIT}
    extra = [k for k in ("accuracy_truncated", "precision", "recall")
             if any(k in r for r in rows.values())]
    names = {"accuracy_truncated": "Accuracy, truncated"}
    lines = [f"### By text length ({unit}, before truncation)", "",
             "| Length | n | Accuracy |" + "".join(f" {names.get(k, title(k))} |" for k in extra),
             "|---|---|---|" + "---|" * len(extra)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['n']} | {pct(row.get('accuracy'))} |"
                     + "".join(f" {pct(row.get(k))} |" for k in extra))
    over = bins.get(OVER_LIMIT)
    if over:
        whole = ("" if "accuracy_truncated" not in over else
                 f", scored whole as overlapping windows ({pct(over['accuracy_truncated'])}% "
                 "when truncated)")
        lines += ["", f"Texts over the input length ({over['max_tokens']} of the model's "
                      f"tokens): {over['n']}, accuracy {pct(over['accuracy'])}%{whole}."]
    return lines + [""]


def per_class_table(per_class: list[dict], pairs: list[dict]) -> list[str]:
    """Precision, recall, F1 and support of each class, then the classes most confused."""
    if not per_class:
        return []
    lines = ["### By class", "", "| Class | Precision | Recall | F1 | Support |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['class']} | {pct(r['precision'])} | {pct(r['recall'])} | {pct(r['f1'])} "
              f"| {r['support']} |" for r in per_class]
    if pairs:
        named = "; ".join(confusion(p) for p in pairs[:TOP_CONFUSIONS])
        lines += ["", f"Most often confused with each other: {named}."]
    return lines + [""]


def confusion(pair: dict) -> str:
    """A row of confused_pairs.csv in words."""
    a, b = pair["class_a"], pair["class_b"]
    return (f"{a} and {b}, {pair['count']} times ({pair['a_as_b']} {a} predicted as {b}, "
            f"{pair['b_as_a']} {b} as {a})")
