"""Tiny random models with real tokenizers, saved as local Hugging Face directories, and fixture
data directories: everything the tests need, offline, in seconds."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures"
# Words the tokenizers must hold as single tokens (the zero-shot prompt and answers).
PROMPT_TEXT = "Review: Sentiment: Positive Negative N/A " * 50


def fixture_reviews() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "reviews.jsonl").read_text().splitlines()]


def corpus_texts() -> list[str]:
    return [r["text"] for r in fixture_reviews()] + [PROMPT_TEXT]


def _bpe_tokenizer(vocab_size: int = 600):
    """A byte-level BPE trained on the fixture texts, GPT-2 style."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")


def _wordpiece_tokenizer(vocab_size: int = 400):
    """An uncased WordPiece with [CLS] text [SEP], BERT style."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus_texts(), trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials))
    return with_cls_and_sep(tok)


def with_cls_and_sep(tok):
    """A tokenizers.Tokenizer whose vocabulary holds BERT's special tokens, putting [CLS] and
    [SEP] around each text, as a transformers fast tokenizer."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_model_dir(family: str, directory: Path, layers: int = 4, dropout: float = 0.1,
                   seed: int = 0) -> Path:
    """Save a randomly initialised 4-block, 32-wide model of `family` with its tokenizer (the
    benchmarks' builder, benchmarks/random_models.py, at the tests' size)."""
    from random_models import save_random_model

    if family not in ("gpt2", "bert", "gpt_neox"):  # with the tokenizer class of its hub models
        from support.tiny_families import family_model_dir

        return family_model_dir(family, directory, layers, dropout, seed)
    directory = Path(directory)
    tok = _wordpiece_tokenizer() if family == "bert" else _bpe_tokenizer()
    ids = {"pad_id": tok.pad_token_id} if family == "bert" else {"eos_id": tok.eos_token_id}
    save_random_model(family, directory, seed, layers=layers, width=32, heads=2, vocab=len(tok),
                      intermediate=64, positions=512, dropout=dropout, **ids)
    tok.save_pretrained(directory)
    return directory


def fixture_data_dir(directory: Path, n_test: int = 12, seed: int = 0) -> Path:
    """train.jsonl / test.jsonl from the fixture reviews (test: a balanced sample)."""
    return balanced_splits_dir(directory, fixture_reviews(), n_test // 2, seed)


def fixture_topics_dir(directory: Path, n_test: int = 9, seed: int = 0) -> Path:
    """train.jsonl / test.jsonl of three classes (cooking, sport, travel: the labels are class
    names) from tests/fixtures/topics.jsonl (test: a balanced sample)."""
    rows = [json.loads(line) for line in (FIXTURES / "topics.jsonl").read_text().splitlines()]
    return balanced_splits_dir(directory, rows, n_test // 3, seed)


def balanced_splits_dir(directory: Path, rows: list[dict], per_class: int, seed: int) -> Path:
    """train.jsonl / test.jsonl of `rows`, shuffled: `per_class` texts of each label in test."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    labels = sorted({r["label"] for r in rows}, key=str, reverse=True)
    of = {label: [r for r in rows if r["label"] == label] for label in labels}
    test = [r for label in labels for r in of[label][:per_class]]
    train = [r for label in labels for r in of[label][per_class:]]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("test", test)):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    return directory


def tiny_params(model_dir: Path, data_dir: Path, **overrides) -> dict:
    """params.yaml of the repository, pointed at a tiny model and fixture data, sized for CPU
    seconds; `overrides` are deep-merged (e.g. method="lora", train={"epochs": 2})."""
    import yaml

    from textclf.core.params import deep_merge

    repo = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    small = {
        "model": str(model_dir),
        "data": {"source": str(data_dir), "val_fraction": 0.25, "max_tokens": 64},
        "train": {"epochs": 2, "batch_size": 4, "log_every": 2, "checkpoint_every": 3},
        "eval": {"batch_size": 8, "bootstrap": 50, "errors": 3},
    }
    return deep_merge(deep_merge(raw, small), overrides)


def stage_command(stage: str, params_file: Path, run_dir: Path) -> list[str]:
    """A stage script with its params file and every path inside `run_dir`, laid out as dvc.yaml
    lays them out in the repository (data/prepared, models, outputs/, metrics/, checkpoints)."""
    run = Path(run_dir)
    layout = {
        "prepare": ["--out", run / "data/prepared", "--inputs", run / "metrics/inputs.json"],
        "baseline": ["--prepared", run / "data/prepared",
                     "--metrics", run / "metrics/baseline.json",
                     "--outputs", run / "outputs/baseline"],
        "train": ["--prepared", run / "data/prepared", "--out", run / "models",
                  "--outputs", run / "outputs/train", "--metrics", run / "metrics/train.json",
                  "--log-dir", run / "metrics/train_log", "--checkpoints", run / "checkpoints"],
        "evaluate": ["--prepared", run / "data/prepared", "--model-dir", run / "models",
                     "--metrics", run / "metrics/eval.json", "--plots-dir", run / "metrics/plots",
                     "--outputs", run / "outputs/evaluate"],
        "export": ["--prepared", run / "data/prepared", "--model-dir", run / "models",
                   "--eval-metrics", run / "metrics/eval.json",
                   "--train-metrics", run / "metrics/train.json",
                   "--eval-outputs", run / "outputs/evaluate",
                   "--train-outputs", run / "outputs/train",
                   "--plots-dir", run / "metrics/plots",
                   "--compare-config", Path(__file__).resolve().parents[2] / "compare/params.yaml",
                   "--out", run / "export"],
    }[stage]
    repo = Path(__file__).resolve().parents[2]
    return [sys.executable, str(repo / "stages" / f"{stage}.py"), "--params", str(params_file),
            *map(str, layout)]


def run_script_in_process(script: Path, args: list) -> int:
    """Run a script in this process as `python script args...` would (run as __main__, with
    sys.argv set): no interpreter start and no second import of torch and transformers. Returns
    its exit status."""
    import runpy

    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(script), *map(str, args)]
    sys.path.insert(0, str(Path(script).parent))  # as python puts the script's folder first
    try:
        runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as e:
        return e.code or 0
    finally:
        sys.argv, sys.path[:] = argv, path


def run_stages(run_dir: Path, params: dict | Path, stages=("prepare", "train", "evaluate"),
               env: dict | None = None, in_process: bool = False) -> Path:
    """Run stage scripts one after the other in `run_dir` (the one pipeline runner of the tests,
    without DVC); fail the test with a stage's output if it fails. `params` is a params dict
    (written to run_dir/params.yaml) or a params file. `in_process` runs them in this process
    (faster; `env` does not apply), otherwise each is a subprocess as DVC runs it."""
    import yaml

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(params, dict):
        params_file = run_dir / "params.yaml"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    else:
        params_file = Path(params)
    for stage in stages:
        if in_process:
            script, *args = stage_command(stage, params_file, run_dir)[1:]
            code = run_script_in_process(Path(script), args)
            assert code == 0, f"{stage} exited with status {code}"
            continue
        result = subprocess.run(stage_command(stage, params_file, run_dir), capture_output=True,
                                text=True, env=env or ENV)
        assert result.returncode == 0, \
            f"{stage} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return run_dir


# Files of the repository a DVC project needs (the package itself is installed).
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "src", "compare", ".dvc/config",
                 ".dvc/plots",  # the custom plot templates dvc.yaml names
                 ".dvcignore", ".gitignore"]  # compare/ brings its own .dvc/config


def dvc_project(root: Path, params: dict) -> Path:
    """A copy of the repository's pipeline in a fresh git repository, with `params` as its
    params.yaml, committed once (DVC experiments need a commit)."""
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[2]
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src, dst = repo / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                "__pycache__", "*.egg-info", "results", "runs", "prepared", "table",
                "checkpoints", "dvc.lock", "tmp", "cache"))
        else:
            shutil.copy(src, dst)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "start"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, env=ENV)
    return root


# The author and committer of the test repositories' commits, git's and those DVC makes for
# experiments: the suite needs no git identity of the machine's and sets none.
GIT_IDENTITY = {f"GIT_{role}_{field}": value for role in ("AUTHOR", "COMMITTER")
                for field, value in (("NAME", "textclf tests"), ("EMAIL", "tests@example.com"))}

# dvc and the stages' `python` resolve to this interpreter's environment, activated or not; git
# and dvc commit as GIT_IDENTITY
ENV = {**os.environ, **GIT_IDENTITY,
       "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def sh(cwd: Path, *cmd: str) -> str:
    """Run a command (dvc, git, ...) in `cwd`; fail the test with its output if it fails."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# The tokenizer class each family's reference model ships with on the hub (gpt2,
# bert-base-uncased, EleutherAI/pythia-70m). Such classes rebuild parts of the tokenizer from
# their own settings on load, where the generic class of tiny_model_dir reads tokenizer.json as
# it is.
HUB_TOKENIZER_CLASS = {"gpt2": "GPT2Tokenizer", "bert": "BertTokenizer",
                       "gpt_neox": "GPTNeoXTokenizer"}


def hub_tokenizer_model_dir(family: str, source: Path, directory: Path) -> Path:
    """A copy of the tiny model at `source` (tiny_model_dir) with the same trained vocabulary
    saved by the hub model's tokenizer class (HUB_TOKENIZER_CLASS), offline."""
    import shutil

    import transformers

    directory = Path(directory)
    shutil.copytree(source, directory, dirs_exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (directory / name).unlink(missing_ok=True)
    model = json.loads((Path(source) / "tokenizer.json").read_text())["model"]
    cls = getattr(transformers, HUB_TOKENIZER_CLASS[family])
    if family == "bert":
        tok = cls(vocab=model["vocab"], do_lower_case=True)
    else:
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in model["merges"]]
        # pythia's pad token <|padding|> is not in the tiny vocabulary: pad with EOS instead
        extra = {"pad_token": "<|endoftext|>"} if family == "gpt_neox" else {}
        tok = cls(vocab=model["vocab"], merges=merges, **extra)
    tok.save_pretrained(directory)
    saved = json.loads((directory / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert saved == HUB_TOKENIZER_CLASS[family], saved
    return directory
