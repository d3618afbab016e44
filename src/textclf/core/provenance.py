"""What a run reads of its model and its data: pinned, resolved and recorded.

A hub model or dataset is read at a revision (`model_revision`, `data.revision`: a commit, tag or
branch; null: the default branch) and recorded by the commit that revision resolved to. A local
directory has no revision: it is recorded by a content hash of the files its loads read. The
prepare stage writes the record of both (data/prepared/meta.json and metrics/inputs.json), the
train stage checks that it still holds and carries it into models/textclf.json, from which
evaluate, predict and the export load the same base commit; the model card and `textclf
pr-report` show it. Where each is and how to pin the defaults: docs/inputs.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The files of a local model directory that textclf's loads read: config, tokenizer, weights
# (safetensors only: pickled weights are never read, model_loading.py). Its content hash covers
# these, so a README, a pickle or an ONNX copy beside them changes nothing recorded.
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
               "tokenizer.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
               "vocab.txt", "merges.txt", "*.model", "chat_template.jinja", "chat_template.json",
               "*.safetensors", "*.safetensors.index.json")
COMMIT = re.compile(r"[0-9a-f]{40}")  # a full hub commit hash
CHUNK = 1 << 20  # bytes read at a time while hashing


@dataclass(frozen=True)
class Provenance:
    """One input as a run read it: a hub id at the commit its revision resolved to, or a local
    directory and the content hash of the files read there."""
    source: str  # hub id (the dataset's full id: stanfordnlp/imdb for 'imdb') or local directory
    revision: str | None  # the revision asked for (params); None: the default branch, or local
    commit: str | None  # hub: the commit read; None for a local directory (or not found)
    sha256: str | None  # local directory: content hash of the files read; None on the hub

    def shown(self, digits: int = 12) -> str:
        """"gpt2 @ commit 607a30d783df", "data/reviews @ sha256 3fa4c1d09e2b" (shortened)."""
        if self.commit:
            return f"{self.source} @ commit {self.commit[:digits]}"
        if self.sha256:
            return f"{self.source} @ sha256 {self.sha256[:digits]}"
        return f"{self.source} (no commit or content hash recorded)" if self.source \
            else "not recorded"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Provenance:
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})


def run_inputs(model: Provenance, data: Provenance) -> dict:
    """The record prepare writes: meta.json's "inputs", and metrics/inputs.json's (under the key
    "inputs" there, so that `dvc exp show` and `dvc metrics diff` name its values
    inputs.model.commit and so on, apart from the params model and data.source)."""
    return {"model": model.to_dict(), "data": data.to_dict()}


# ---------------------------------------------------------------------------------------------
# The hub: a revision resolved to the commit read

def hub_commit(repo_id: str, revision: str | None = None,
               cache_dir: str | Path | None = None) -> str | None:
    """The commit of a hub model at `revision` (None: the default branch); None when it can be
    neither reached nor found in the cache. Read from the path of its config.json in the Hugging
    Face cache (.../snapshots/<commit>/config.json), where loading it put the file, so it works
    offline once the model was loaded."""
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        path = cached_file(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    except OSError:  # not cached and no network, no such repository or revision
        return None
    return extract_commit_hash(path, None)


def cached_dataset_commit(repo_id: str, revision: str) -> str | None:
    """The commit a hub dataset's `revision` names in the Hugging Face hub cache, without the
    network: a full commit hash names itself; a tag or branch, the commit its refs/ file holds
    (written when `datasets` resolved it online). None when the cache does not know it."""
    if COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    ref = (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="dataset")
           / "refs" / revision)
    return ref.read_text().strip() if ref.is_file() else None


# ---------------------------------------------------------------------------------------------
# A local directory: the content hash of the files read

def files_sha256(root: Path, files: Iterable[Path]) -> str:
    """One sha256 over `files` (under `root`): each file's path relative to `root` and the
    sha256 of its bytes, in path order. Renaming, editing, adding or removing a file changes
    it; reading the same bytes elsewhere does not."""
    total = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        total.update(f"{path.relative_to(root).as_posix()}\0{digest.hexdigest()}\n".encode())
    return total.hexdigest()


def model_files(directory: Path) -> list[Path]:
    """The files of a model directory that its loads read (MODEL_FILES)."""
    return sorted({p for pattern in MODEL_FILES for p in directory.glob(pattern) if p.is_file()})


def model_provenance(model: str, revision: str | None) -> Provenance:
    """What loading `model` at `revision` reads: the hub commit, or for a local directory the
    content hash of its config, tokenizer and weight files (MODEL_FILES)."""
    directory = Path(model).expanduser()
    if directory.is_dir():
        return Provenance(model, None, None, files_sha256(directory, model_files(directory)))
    return Provenance(model, revision, hub_commit(model, revision), None)
