"""A Hugging Face cache holding two revisions of one model and of one dataset, laid out as
downloads leave them, so that pinning a revision (`from_pretrained(..., revision=...)`,
`load_dataset_builder(..., revision=...)`) resolves offline and reads other files:

- the model MODEL: commit MAIN (refs/main) is the tiny GPT-2 with its own vocabulary; commit
  TAGGED (refs/v1, the tag TAG) has other weights, 3 blocks instead of 4 in its config, and a
  pad token in its tokenizer_config.json.
- the dataset DATASET: the datasets cache holds the copy of commit MAIN (the fixture reviews) and
  of commit TAGGED (the same reviews, every text with "(v1)" after it), and the hub cache the
  refs of both (main, v1) as `datasets` writes them when it resolves a revision online.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support import hub_cache, tiny

MODEL = "textclf-tests/pinned-gpt2"
DATASET = "textclf-tests/pinned-reviews"
TAG = "v1"
MAIN = "1" * 40
TAGGED = "2" * 40
PAD_TOKEN_ID = 300  # the token TAGGED's tokenizer_config.json names as its pad token


def build(root: Path) -> hub_cache.OfflineCache:
    cache = hub_cache.OfflineCache(root / "hf_home", root / "tiktoken")
    cache.tiktoken_dir.mkdir(parents=True)
    hub = cache.hf_home / "hub"
    add_model_revision(hub, MODEL, "main", MAIN, tiny.tiny_model_dir("gpt2", root / "main"))
    tagged = tiny.tiny_model_dir("gpt2", root / "tagged", layers=3, seed=1)
    config = json.loads((tagged / "tokenizer_config.json").read_text())
    vocab = json.loads((tagged / "tokenizer.json").read_text())["model"]["vocab"]
    pad = next(token for token, i in vocab.items() if i == PAD_TOKEN_ID)
    (tagged / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": pad}))
    add_model_revision(hub, MODEL, TAG, TAGGED, tagged)
    for ref, commit, suffix in (("main", MAIN, ""), (TAG, TAGGED, " (v1)")):
        add_dataset_revision(cache.hf_home, root / ref, ref, commit, suffix)
    return cache


def add_model_revision(hub: Path, repo_id: str, ref: str, commit: str, files: Path) -> None:
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(files, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


def add_dataset_revision(hf_home: Path, work: Path, ref: str, commit: str, suffix: str) -> None:
    """DATASET's copy of `commit` in the datasets cache (its fixture reviews with `suffix` after
    each text), and `ref` naming it in the hub cache."""
    from datasets import ClassLabel, Features, Value

    train, test = hub_cache._fixture_split(12)
    splits = {name: {"text": [r["text"] + suffix for r in rows],
                     "label": [r["label"] for r in rows]}
              for name, rows in (("train", train), ("test", test))}
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    hub_cache.add_dataset(work / "datasets", work / "files", DATASET, "default", splits, features)
    built = work / "datasets" / DATASET.replace("/", "___")
    target = hf_home / "datasets" / DATASET.replace("/", "___") / "default" / "0.0.0" / commit
    target.parent.mkdir(parents=True, exist_ok=True)
    (built / "default" / "0.0.0" / hub_cache.commit_of(DATASET)).rename(target)
    refs = hf_home / "hub" / ("datasets--" + DATASET.replace("/", "--")) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / ref).write_text(commit)
