"""Two CPU processes over gloo (`accelerate launch --multi_gpu --num_processes 2`): each epoch
reshuffles, and the processes' batches together hold every training text once per epoch."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from support import tiny

# Run in each process: trains the tiny GPT-2 and writes the text indices of every training
# batch it built, in order, to <out>/rank<process index>.json.
WORKER = '''
import json
import sys
from pathlib import Path

from textclf.modeling.batching import Collator
from textclf.core.data import load_corpus
from textclf.core.families import FAMILIES
from textclf.modeling.classifier import build_classifier
from textclf.core.params import load_params
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.device import make_accelerator
from textclf.train.loop import train_classifier

params = load_params(sys.argv[1])
out = Path(sys.argv[2])
tok = load_tokenizer(params.model, FAMILIES["gpt2"])
corpus = load_corpus(params.data, params.seed)
train, val = (tokenize_split(tok, split.texts, split.labels, params.data.max_tokens,
                             params.data.truncation, params.data.head_tokens)
              for split in (corpus.train, corpus.val))
accelerator = make_accelerator("no")
clf = build_classifier(params, FAMILIES["gpt2"], 2)
collate = Collator(classifier_format(tok), tok.pad_id)
batches = []


def recording(items):  # training batches only: validation and the cache run in eval mode
    if clf.training:
        batches.append([i for i, _, _ in items])
    return collate(items)


result = train_classifier(clf, train, val, recording, params.train, params.learning_rate, 8,
                          params.seed, accelerator, log=lambda *a: None)
(out / f"rank{accelerator.process_index}.json").write_text(json.dumps(
    {"texts": len(train), "steps": result.steps, "batches": batches}))
'''


@pytest.mark.slow
def test_two_processes_reshuffle_every_epoch_and_share_each_text_once(tiny_dirs, data_dir,
                                                                       tmp_path):
    epochs = 3
    # 21 training texts in batches of 5: 5 batches, an odd count for 2 processes
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, train={"epochs": epochs, "batch_size": 5,
                                            "cache_frozen": True})))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(worker), str(params), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    n = ranks[0]["texts"]
    assert n == 21 and ranks[0]["steps"] == ranks[1]["steps"]
    shares = []  # shares[epoch][rank]: that process's batches of that epoch
    for rank in ranks:
        batches = rank["batches"]
        assert len(batches) == rank["steps"] and len(batches) % epochs == 0
        per_epoch = len(batches) // epochs
        shares.append([batches[e * per_epoch:(e + 1) * per_epoch] for e in range(epochs)])
    shares = list(zip(*shares))
    for epoch in shares:
        seen = sorted(i for share in epoch for batch in share for i in batch)
        assert seen == list(range(n))  # every text once, none repeated to even out a batch
        assert all(0 < len(batch) <= 5 for share in epoch for batch in share)
    for rank in (0, 1):  # every epoch a new order and a new share of the texts
        mine = [[sorted(batch) for batch in epoch[rank]] for epoch in shares]
        assert mine[0] != mine[1] and mine[1] != mine[2] and mine[0] != mine[2]
        texts = [sorted(i for batch in epoch[rank] for i in batch) for epoch in shares]
        assert texts[0] != texts[1] or texts[1] != texts[2]
