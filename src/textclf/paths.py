"""Default locations of the pipeline's files: the ones dvc.yaml declares."""

from pathlib import Path

PREPARED = Path("data/prepared")  # token ids and test texts (prepare stage, DVC-cached)
MODEL_DIR = Path("models")  # what training produced: head, trained blocks or adapter (DVC-cached)
CHECKPOINTS = Path("checkpoints")  # resumable training state (persisted, not cached)
METRICS = Path("metrics")  # small JSON/CSV/Markdown results, kept in git
PREDICTIONS = Path("outputs/predictions.jsonl")  # one line per test text (DVC-cached)

# Inside PREPARED
SPLIT_FILE = "{split}.npz"
TEST_TEXTS = "test_texts.jsonl"
META = "meta.json"
