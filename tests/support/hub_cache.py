"""An offline Hugging Face cache and tiktoken cache for the tests: tiny random models and small
datasets under the hub ids that the defaults and the compare configurations name, so the hub
code path a user with internet takes (`from_pretrained("gpt2")`, `load_dataset("stanfordnlp/imdb")`,
tiktoken's gpt2 encoding) runs here without one.

- Models sit where huggingface_hub puts a download, HF_HOME/hub/models--<org>--<name>/ with
  snapshots/<commit>/<files> and refs/main holding the commit (plain files: a download links them
  to blobs/, which resolving a cached file does not need).
- Datasets sit where `datasets` prepares a download, HF_HOME/datasets/<org>___<name>/<config>/
  0.0.0/<commit>/ (arrow files and dataset_info.json): offline, that directory is all
  `load_dataset("<org>/<name>")` reads (datasets' CachedDatasetModuleFactory and its `cache`
  builder), so they are built there from parquet files, as a download is.
- tiktoken's gpt2 encoding is GPT-2's real BPE, /work/shared/data/gpt2-bpe, copied to
  TIKTOKEN_CACHE_DIR under the sha1 of each file's download URL, as tiktoken caches a download.
  The tiny `gpt2` model has the same tokenizer files and vocabulary size, so it is GPT-2's
  tokenizer (textclf.core.tokenization) and tiktoken encodes for it, as for the real one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from support import tiny

REPO = Path(__file__).resolve().parents[2]
GPT2_BPE = REPO.parent / "shared" / "data" / "gpt2-bpe"  # encoder.json, vocab.bpe (see README)
# Where tiktoken downloads the gpt2 encoding's files from (tiktoken_ext/openai_public.py, gpt2())
TIKTOKEN_GPT2_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}
# A GPT-2 architecture with a vocabulary of its own (tests/support/tiny.py's small BPE)
OTHER_VOCAB_GPT2 = "textclf-tests/tiny-gpt2-own-vocab"
# Variables that would send the libraries to other caches than HF_HOME's or TIKTOKEN_CACHE_DIR
OTHER_CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
                         "HF_DATASETS_CACHE", "DATA_GYM_CACHE_DIR")

NEWSGROUPS = ["alt.atheism", "comp.graphics", "comp.os.ms-windows.misc",
              "comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware", "comp.windows.x",
              "misc.forsale", "rec.autos", "rec.motorcycles", "rec.sport.baseball",
              "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
              "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
              "talk.politics.misc", "talk.religion.misc"]


@dataclass(frozen=True)
class OfflineCache:
    hf_home: Path
    tiktoken_dir: Path

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` (a process environment) pointed at these caches, with the hub offline."""
        env = {k: v for k, v in base.items() if k not in OTHER_CACHE_VARIABLES}
        return {**env, "HF_HOME": str(self.hf_home), "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": str(self.tiktoken_dir)}


def build(root: Path, tiny_dirs: dict[str, Path]) -> OfflineCache:
    """Both caches under `root`; `tiny_dirs`: tests/support/tiny.py's model directories by
    family."""
    cache = OfflineCache(root / "hf_home", seed_tiktoken(root / "tiktoken"))
    hub = cache.hf_home / "hub"
    add_model(hub, "gpt2", tiny_gpt2_with_gpt2_tokenizer(root / "tiny_gpt2"))
    add_model(hub, "bert-base-uncased", tiny_dirs["bert"])
    add_model(hub, "EleutherAI/pythia-70m", tiny_dirs["gpt_neox"])
    add_model(hub, OTHER_VOCAB_GPT2, tiny_dirs["gpt2"])
    add_model(hub, "Qwen/Qwen2.5-0.5B", tiny_dirs["qwen2"])
    add_model(hub, "answerdotai/ModernBERT-base", tiny_dirs["modernbert"])
    datasets_dir, sources = cache.hf_home / "datasets", root / "dataset_files"
    add_dataset(datasets_dir, sources, "stanfordnlp/imdb", "plain_text", *imdb())
    add_dataset(datasets_dir, sources, "stanfordnlp/sst2", "default", *sst2())
    add_dataset(datasets_dir, sources, "SetFit/20_newsgroups", "default", *newsgroups())
    return cache


def seed_tiktoken(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, url in TIKTOKEN_GPT2_URLS.items():
        shutil.copy(GPT2_BPE / name, directory / hashlib.sha1(url.encode()).hexdigest())
    return directory


def tiny_gpt2_with_gpt2_tokenizer(directory: Path, layers: int = 4) -> Path:
    """A random 4-block, 32-wide GPT-2 with GPT-2's real tokenizer files and vocabulary size
    (50257 x 32 embeddings: 6 MB), saved as the hub's gpt2 repository holds it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    eos = 50256  # <|endoftext|>
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_embd=32, n_layer=layers, n_head=2,
                                       n_positions=1024, bos_token_id=eos, eos_token_id=eos))
    model.save_pretrained(directory)
    shutil.copy(GPT2_BPE / "encoder.json", directory / "vocab.json")
    shutil.copy(GPT2_BPE / "vocab.bpe", directory / "merges.txt")
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    return directory


def commit_of(repo_id: str) -> str:
    """A fixed 40-hex commit id per repository (what refs/main names)."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


def add_model(hub: Path, repo_id: str, files: Path) -> None:
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(files, repo / "snapshots" / commit_of(repo_id))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit_of(repo_id))


def add_dataset(datasets_dir: Path, sources: Path, repo_id: str, config: str,
                splits: dict[str, dict[str, list]], features) -> None:
    """Prepare `splits` (columns by split) as `load_dataset(repo_id)` leaves a download: parquet
    files read by the parquet builder into the datasets cache."""
    from datasets import Dataset
    from datasets.data_files import DataFilesDict
    from datasets.load import configure_builder_class
    from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

    namespace, name = repo_id.split("/")
    files = {}
    for split, columns in splits.items():
        path = sources / repo_id / config / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(columns, features=features).to_parquet(str(path))
        files[split] = [str(path)]
    builder_class = configure_builder_class(
        Parquet, [ParquetConfig(name=config, data_files=DataFilesDict.from_local_or_remote(files))],
        default_config_name=config, dataset_name=name)
    builder = builder_class(cache_dir=str(datasets_dir), dataset_name=name, config_name=config,
                            hash=commit_of(repo_id))
    builder.download_and_prepare()
    # Built from local files, the directory is named <name>; from the hub, <namespace>___<name>
    # (a builder given the repo_id would insist on hf:// data files)
    os.rename(datasets_dir / name, datasets_dir / f"{namespace}___{name}")


# ---------------------------------------------------------------------------------------------
# Small datasets of the real ones' shape: splits, columns and features as on the hub

def _fixture_split(n_test: int) -> tuple[list[dict], list[dict]]:
    """The fixture reviews as (train, test), test a balanced `n_test`."""
    rows = tiny.fixture_reviews()
    pos = [r for r in rows if r["label"] == 1]
    neg = [r for r in rows if r["label"] == 0]
    test = pos[: n_test // 2] + neg[: n_test // 2]
    return [r for r in rows if r not in test], test


def imdb():
    """stanfordnlp/imdb: text, label (ClassLabel neg/pos); train, test and an unlabelled
    `unsupervised` split (label -1)."""
    from datasets import ClassLabel, Features, Value

    train, test = _fixture_split(12)
    splits = {name: {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}
              for name, rows in (("train", train), ("test", test))}
    splits["unsupervised"] = {"text": ["An unlabelled review.", "Another one."], "label": [-1, -1]}
    return splits, Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})


def sst2():
    """stanfordnlp/sst2: idx, sentence, label (ClassLabel negative/positive); train, validation,
    and test with its labels hidden (-1)."""
    from datasets import ClassLabel, Features, Value

    train, validation = _fixture_split(12)
    test = validation[:4]
    splits = {}
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        sentences = [r["text"].split(".")[0].lower() + " ." for r in rows]  # SST-2's style
        labels = [-1] * len(rows) if name == "test" else [r["label"] for r in rows]
        splits[name] = {"idx": list(range(len(rows))), "sentence": sentences, "label": labels}
    features = Features({"idx": Value("int32"), "sentence": Value("string"),
                         "label": ClassLabel(names=["negative", "positive"])})
    return splits, features


def newsgroups(per_class: dict[str, int] | None = None):
    """SetFit/20_newsgroups: text, label (plain int64), label_text (the newsgroup); train, test.
    As in the real one, a post may be empty (prepare drops it)."""
    from datasets import Features, Value

    per_class = per_class or {"train": 3, "test": 1}
    splits = {}
    for name, n in per_class.items():
        rows = [(f"Post {i} to {group}: a question about {group.split('.')[-1]}.", label, group)
                for label, group in enumerate(NEWSGROUPS) for i in range(n)]
        if name == "train":
            rows.append(("", 0, NEWSGROUPS[0]))
        splits[name] = {"text": [r[0] for r in rows], "label": [r[1] for r in rows],
                        "label_text": [r[2] for r in rows]}
    features = Features({"text": Value("string"), "label": Value("int64"),
                         "label_text": Value("string")})
    return splits, features


# ---------------------------------------------------------------------------------------------
# In the test process

def use_offline_cache(offline_cache: OfflineCache, monkeypatch):
    """The libraries in this process read the offline caches while a test runs (the body of
    conftest's `offline_hub` fixture). huggingface_hub and datasets read their cache paths from
    the environment once, at import: their module constants are pointed here as well."""
    import datasets.config
    import huggingface_hub.constants
    import tiktoken.registry

    from textclf.core.tokenization import tiktoken_gpt2

    for key in OTHER_CACHE_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    for key, value in offline_cache.env({}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE",
                        str(offline_cache.hf_home / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", offline_cache.hf_home / "datasets")
    # Encodings tiktoken loads here are forgotten afterwards, as is textclf's cached lookup
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    tiktoken_gpt2.cache_clear()
    yield offline_cache
    tiktoken_gpt2.cache_clear()
