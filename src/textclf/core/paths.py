"""Default locations of the pipeline's files: the ones dvc.yaml declares."""

from pathlib import Path

PREPARED = Path("data/prepared")  # token ids and texts of each split (prepare stage, DVC-cached)
MODEL_DIR = Path("models")  # what training produced: head, trained blocks or adapter (DVC-cached)
TRAIN_OUTPUTS = Path("outputs/train")  # run.json of training: steps, seconds, history (DVC-cached)
EVAL_OUTPUTS = Path("outputs/evaluate")  # predictions, errors, per-length table (DVC-cached)
BASELINE_OUTPUTS = Path("outputs/baseline")  # run.json of the baseline: C kept, sizes (DVC-cached)
EXPORT = Path("export")  # the trained model as a Hugging Face model directory (DVC-cached)
CHECKPOINTS = Path("checkpoints")  # resumable training state: not a DVC output, ignored by git
METRICS = Path("metrics")  # headline metrics and plot data, kept in git (cache: false)
TRAIN_LOG = METRICS / "train_log"  # dvclive's per-step training log (plots)
PLOTS = METRICS / "plots"  # evaluation curves and tables as CSV (plots)
INPUTS = METRICS / "inputs.json"  # what the run reads: hub commits or content hashes (prepare)

# Inside PREPARED
SPLIT_FILE = "{split}.npz"
TEXTS_FILE = "{split}_texts.jsonl"  # the cleaned texts and labels of train, val and test
META = "meta.json"
REPORT = "report.json"  # split sizes, dropped empty texts, invalid UTF-8 lines, truncation counts

# Inside EVAL_OUTPUTS
PREDICTIONS = "predictions.jsonl"  # one line per test text
RUN_INFO = "run.json"  # inside each stage's outputs: what ran, where and how long
