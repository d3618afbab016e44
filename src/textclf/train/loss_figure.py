"""The training loss as a PNG image beside dvclive's log (metrics/train_log/loss.png).

`dvc plots show` draws dvclive's loss.tsv with Vega from a CDN (a white page offline); this image
it shows as it is. Drawn from the log file itself, so a resumed run's image has every step.
matplotlib's Agg canvas, no timestamp or version in the PNG: the same log gives the same bytes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from textclf.core.outputs import write_bytes
from textclf.train.train_log import LOGGED

IMAGE = "loss.png"  # inside the log directory; dvc.yaml declares it as a plot


def loss_png(steps: list[float], losses: list[float]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    if steps:
        ax.plot(steps, losses, color="C0", marker="." if len(steps) < 30 else None)
        ax.xaxis.get_major_locator().set_params(integer=True)  # steps are whole numbers
    else:
        ax.text(0.5, 0.5, "no loss logged\n(zero-shot, or fewer steps than train.log_every)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (cross-entropy, nats)")
    ax.set_title("Training loss (mean of each train.log_every steps)", fontsize="medium")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_loss_figure(log_dir: Path) -> Path:
    """Draw log_dir's training loss (dvclive's loss.tsv) into log_dir/loss.png."""
    name, path = LOGGED[0]  # ("train/loss", plots/metrics/train/loss.tsv)
    log = Path(log_dir) / path
    text = log.read_text() if log.is_file() else ""
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    column = name.split("/")[-1]
    steps = [float(row["step"]) for row in rows]
    losses = [float(row[column]) for row in rows]
    out = Path(log_dir) / IMAGE
    write_bytes(out, loss_png(steps, losses))
    return out
