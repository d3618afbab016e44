"""Two CPU processes over gloo (`accelerate launch --multi_gpu --num_processes 2`): each epoch
reshuffles, and the processes' batches together hold every training text once per epoch; scoring
gives each text's logits once, as one process does; the train stage launches itself inside DVC
(train.processes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from support import tiny
from support.tiny import sh

from textclf.train.launch import free_port

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
from textclf.modeling.accelerator import make_accelerator
from textclf.train.loop import Recipe, train_classifier

params = load_params(sys.argv[1])
out = Path(sys.argv[2])
tok = load_tokenizer(params.model, FAMILIES["gpt2"])
corpus = load_corpus(params.data, params.seed)
train, val = (tokenize_split(tok, split.texts, split.labels, params.data.max_tokens,
                             params.data.truncation, params.data.head_tokens)
              for split in (corpus.train, corpus.val))
accelerator = make_accelerator("fp32")
clf = build_classifier(params, FAMILIES["gpt2"], 2)
batches = []


class Recording(Collator):
    """The collator, recording training batches (validation and the cache run in eval mode)."""

    def __call__(self, items):
        if clf.training:
            batches.append([i for i, _, _ in items])
        return super().__call__(items)


recording = Recording(classifier_format(tok), tok.pad_id)
result = train_classifier(clf, train, val, recording,
                          Recipe(params.train, params.learning_rate, 8, params.seed), accelerator,
                          log=lambda *a: None)
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


# Run as one process or under accelerate launch: the tiny GPT-2's logits of a 13-text and a
# 21-text split in batches of 4, written by the main process to <out>/<name>.npz; given a 5th
# argument, batches of at most that many tokens a thread, the processes' thread counts differing.
SCORER = '''
import sys
from pathlib import Path

import numpy as np
import torch

from textclf.core.families import FAMILIES
from textclf.core.params import load_params
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import build_classifier
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.inference import predict_logits

params = load_params(sys.argv[1])
out, name = Path(sys.argv[2]), sys.argv[3]
texts = [line for line in Path(sys.argv[4]).read_text().splitlines()]
tok = load_tokenizer(params.model, FAMILIES["gpt2"])
accelerator = make_accelerator("fp32")
torch.manual_seed(0)
clf = build_classifier(params, FAMILIES["gpt2"], 2).to(accelerator.device)
collator = Collator(classifier_format(tok), tok.pad_id)
if len(sys.argv) > 5:  # a token bound on CPU batches, and 1 thread in process 0, 2 in process 1
    from textclf.modeling import batching

    batching.CPU_SCORING_TOKENS_PER_THREAD = int(sys.argv[5])
    batching.CPU_SCORING_TOKENS_LEAST = 0
    torch.set_num_threads(1 + accelerator.process_index)
logits = {}
for n in (13, 21):
    split = tokenize_split(tok, texts[:n], np.zeros(n, dtype=np.int64), 64, "left", 0)
    logits[n] = predict_logits(clf, split, collator, 4, accelerator)
if accelerator.is_main_process:
    np.savez(out / f"{name}.npz", **{str(n): v for n, v in logits.items()})
'''


def launch_two(script, *args) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), str(script), *map(str, args)]


@pytest.mark.slow
@pytest.mark.parametrize("bound", [(), ("40",)])
def test_two_processes_score_each_text_once_as_one_process_does(tiny_dirs, data_dir, tmp_path,
                                                                bound):
    """Split sizes that no process count x batch divides (13 and 21 texts, batches of 4: 4 and
    6 batches, the last short): each text's logits exactly once, equal to one process's. With a
    bound of 40 tokens a thread on CPU batches, and processes of 1 and 2 threads: both cut the
    batches at the fewer tokens, as one process of 1 thread does."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny.tiny_params(tiny_dirs["gpt2"], data_dir)))
    texts = tmp_path / "texts.txt"
    reviews = [r["text"] for r in tiny.fixture_reviews()]
    texts.write_text("\n".join(reviews[:21]))
    scorer = tmp_path / "scorer.py"
    scorer.write_text(SCORER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(scorer), params, tmp_path, "one", texts, *bound],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(launch_two(scorer, params, tmp_path, "two", texts, *bound),
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for n in ("13", "21"):
        assert single[n].shape == double[n].shape == (int(n), 2)
        np.testing.assert_allclose(double[n], single[n], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_the_train_stage_runs_two_processes_inside_dvc(tiny_dirs, data_dir, tmp_path):
    """`dvc exp run -S train.processes=2`: the train stage launches itself on two processes
    (gloo on the CPU); 12 validation texts in batches of 8 (a full and a half batch, which
    crashed accelerate's gather before), so validation accuracy is a multiple of 1/12."""
    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, data={"val_fraction": 0.43},
                              train={"epochs": 2}, eval={"batch_size": 8})
    project = tiny.dvc_project(tmp_path / "project", params)
    out = sh(project, "dvc", "exp", "run", "-S", "train.processes=2")
    assert "running under accelerate launch" in out, out
    report = json.loads((project / "data/prepared/report.json").read_text())
    assert report["sizes"]["val"] == 12
    run = json.loads((project / "outputs/train/run.json").read_text())
    assert run["processes"] == 2
    accuracy = json.loads((project / "metrics/train.json").read_text())["best_val_accuracy"]
    assert abs(accuracy * 12 - round(accuracy * 12)) < 1e-4, accuracy  # written to 6 digits
    assert (project / "models" / "trained.safetensors").is_file()
    assert json.loads((project / "metrics/eval.json").read_text())["n"] == 12
    # the run is an experiment like any other: DVC recorded it with its params
    assert "train.processes" in sh(project, "dvc", "exp", "show", "--only-changed", "--csv")
