"""Bad input gets one clear `error:` line and exit status 2 from the stage, before any expensive
work, or is handled and reported. Each case runs the real stage script in this process."""

import gzip
import json
from pathlib import Path

import pytest
import torch
import yaml
from support import tiny

REPO = Path(__file__).resolve().parents[1]


def run(stage: str, args: list, capsys) -> tuple[int, str, str]:
    """Run stages/<stage>.py with `args`; returns (exit status, stdout, stderr)."""
    code = tiny.run_script_in_process(REPO / "stages" / f"{stage}.py", args)
    out, err = capsys.readouterr()
    return code, out, err


def write_params(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(tmp_path, raw, capsys):
    params = write_params(tmp_path, raw)
    return run("prepare", ["--params", params, "--out", tmp_path / "prepared",
                           "--inputs", tmp_path / "inputs.json"], capsys)


def train(tmp_path, params: Path, capsys):
    """The train stage on what `prepare` wrote in `tmp_path`."""
    return run("train", ["--params", params, "--prepared", tmp_path / "prepared",
                         "--out", tmp_path / "models", "--metrics", tmp_path / "t.json",
                         "--outputs", tmp_path / "train", "--log-dir", tmp_path / "log",
                         "--checkpoints", tmp_path / "ckpt"], capsys)


def assert_clear_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def write_jsonl(directory: Path, name: str, rows: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


GOOD_ROWS = [{"text": r["text"], "label": r["label"]} for r in tiny.fixture_reviews()]


@pytest.mark.parametrize("override, fragments", [
    ({"method": "prompting"}, ["method must be one of 'zero_shot', 'finetune', 'lora'"]),
    ({"train": {"batch_size": 0}}, ["train.batch_size must be a positive integer, got 0"]),
    ({"train": {"batch_size": "big"}}, ["train.batch_size must be an integer, got 'big'"]),
    ({"train": {"lr": -0.001}}, ["train.lr must be positive"]),
    ({"lora": {"r": 0}}, ["lora.r must be a positive integer, got 0"]),
    ({"data": {"train_size": 0}}, ["data.train_size must be a positive integer or null"]),
    ({"data": {"source": "/no/such/dir"}}, ["data.source: no such directory '/no/such/dir'"]),
    ({"train": {"epochs": 1, "warmup": 3}}, ["unknown key train.warmup", "allowed in train"]),
])
def test_bad_params(tmp_path, tiny_dirs, data_dir, capsys, override, fragments):
    code, _, err = prepare(tmp_path, tiny.tiny_params(tiny_dirs["gpt2"], data_dir, **override),
                           capsys)
    assert_clear_error(code, err, *fragments)
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("family, head_tokens, budget", [
    ("bert", 62, 62),  # max_tokens 64 minus [CLS] and [SEP]: head_tokens leaves no tail
    ("bert", 63, 62),  # over the text budget, though under data.max_tokens
])
def test_head_tail_with_no_room_for_a_tail_is_refused(tmp_path, tiny_dirs, data_dir, capsys,
                                                      family, head_tokens, budget):
    """head_tail keeping head_tokens of a text budget of at most head_tokens would silently be
    right truncation: prepare refuses it, naming the range the model's special tokens leave."""
    raw = tiny.tiny_params(tiny_dirs[family], data_dir,
                           data={"truncation": "head_tail", "head_tokens": head_tokens})
    code, _, err = prepare(tmp_path, raw, capsys)
    assert_clear_error(code, err, "data.head_tokens", f"[1, {budget})", f"got {head_tokens}")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("family, head_tokens", [("bert", 61), ("gpt2", 63)])
def test_head_tail_with_one_token_of_tail_is_accepted(tmp_path, tiny_dirs, data_dir, capsys,
                                                      family, head_tokens):
    """The largest head_tokens each model allows: GPT-2 adds no special tokens, BERT two."""
    raw = tiny.tiny_params(tiny_dirs[family], data_dir,
                           data={"truncation": "head_tail", "head_tokens": head_tokens})
    code, _, err = prepare(tmp_path, raw, capsys)
    assert code == 0, err


@pytest.mark.parametrize("family, override, fragments", [
    ("gpt2", {"finetune": {"trainable_blocks": 9}},
     ["finetune.trainable_blocks is 9 but", "has 4 blocks (allowed: 1..4 or 'all')"]),
    ("bert", {"method": "zero_shot"},
     ["zero_shot needs a causal language model", "bert encoder: use finetune or lora"]),
])
def test_a_method_the_model_cannot_take_fails_at_the_start_of_train(tmp_path, tiny_dirs, data_dir,
                                                                    capsys, family, override,
                                                                    fragments):
    """The method is checked against the model by train, before any weights load; prepare,
    whose output does not depend on the method (dvc.yaml does not list it), leaves it be."""
    raw = tiny.tiny_params(tiny_dirs[family], data_dir, **override)
    assert prepare(tmp_path, raw, capsys)[0] == 0
    code, _, err = train(tmp_path, write_params(tmp_path, raw), capsys)
    assert_clear_error(code, err, *fragments)
    assert not (tmp_path / "models").exists()


def test_unknown_model_family(tmp_path, data_dir, capsys):
    model = tmp_path / "t5"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "t5"}))
    code, _, err = prepare(tmp_path, tiny.tiny_params(model, data_dir), capsys)
    assert_clear_error(code, err, "model family 't5' is not supported",
                       "supported: gpt2, bert, gpt_neox, llama, qwen2, mistral, gemma3_text, "
                       "phi3, roberta, xlm-roberta, distilbert, deberta-v2, modernbert")


def test_unreachable_hub_model(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = tiny.tiny_params("nobody-org/no-such-model", data_dir)
    code, _, err = prepare(tmp_path, raw, capsys)
    assert_clear_error(code, err, "model 'nobody-org/no-such-model' (hub id) could not be loaded",
                       "set `model` to a local directory")


def test_answer_words_must_be_single_tokens(tmp_path, tiny_dirs, data_dir, capsys):
    raw = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, method="zero_shot",
                           zero_shot={"answers": [" Negative", " Positively wonderful"]})
    assert prepare(tmp_path, raw, capsys)[0] == 0
    params = write_params(tmp_path, raw)
    code, _, err = train(tmp_path, params, capsys)
    assert_clear_error(code, err, "answer word ' Positively wonderful' is", "single-token")
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("train_rows, fragments", [
    ([], ["is empty"]),
    ([{"review": "good", "label": 1}], ["no column 'text'", "set data.text_column"]),
    ([{"text": "good", "label": 1}, {"text": "bad", "label": 2}],
     ["integer labels must be 0..K-1", "train has [1, 2], test has [0, 1]"]),
    ([{"text": "good", "label": 1}, {"text": "bad", "label": [0]}],
     ["a label [0] (list) is neither an integer class id nor a class name"]),
    ([{"text": "good", "label": 1}, {"text": "bad", "label": 1}],
     ["only one class (1) in train"]),
])
def test_bad_data(tmp_path, tiny_dirs, capsys, train_rows, fragments):
    data = tmp_path / "data"
    write_jsonl(data, "train.jsonl", train_rows)
    write_jsonl(data, "test.jsonl", GOOD_ROWS[:4])
    code, _, err = prepare(tmp_path, tiny.tiny_params(tiny_dirs["gpt2"], data), capsys)
    assert_clear_error(code, err, *fragments)


@pytest.mark.parametrize("names", [["a"], []])
def test_label_names_short_of_the_classes_ask_for_one_per_class(tmp_path, tiny_dirs, data_dir,
                                                                capsys, names):
    """data.label_names [a] on two classes: the error says how many names it takes."""
    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, data={"label_names": names})
    code, _, err = prepare(tmp_path, params, capsys)
    assert_clear_error(code, err, f"data.label_names lists {len(names)} name",
                       "the data has 2 classes (0, 1): give one name per class")
    assert err.count("\n") == 1


def test_missing_split_file(tmp_path, tiny_dirs, capsys):
    data = tmp_path / "data"
    write_jsonl(data, "train.jsonl", GOOD_ROWS)
    code, _, err = prepare(tmp_path, tiny.tiny_params(tiny_dirs["gpt2"], data), capsys)
    assert_clear_error(code, err, "no file for split 'test'", "test.jsonl, test.jsonl.gz")


def test_messy_texts_are_handled_and_reported(tmp_path, tiny_dirs, capsys):
    """Empty and whitespace-only texts are dropped and counted; invalid UTF-8 bytes are
    replaced and counted; a 100k-character review is truncated like any other."""
    data = tmp_path / "data"
    rows = GOOD_ROWS + [{"text": "", "label": 0}, {"text": "  \n\t ", "label": 1},
                        {"text": "great " * 20_000, "label": 1}]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    lines += b'{"text": "caf\xe9 au lait, a lovely film", "label": 1}\n'  # Latin-1 byte
    data.mkdir()
    (data / "train.jsonl.gz").write_bytes(gzip.compress(lines))
    write_jsonl(data, "test.jsonl", GOOD_ROWS[:6])
    code, out, err = prepare(tmp_path, tiny.tiny_params(tiny_dirs["gpt2"], data), capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "prepared" / "report.json").read_text())
    assert report["dropped_empty"] == {"train": 2, "test": 0}
    assert report["invalid_utf8_lines"] == {"train": 1, "test": 0}
    assert report["truncated"]["train"] + report["truncated"]["val"] == 1
    assert report["sizes"]["train"] + report["sizes"]["val"] == len(GOOD_ROWS) + 2


def test_cuda_out_of_memory_names_the_knobs(capsys):
    from textclf.core.runner import run_stage

    def main():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ran out of memory" in err and "train.batch_size" in err and "eval.batch_size" in err


def test_train_refuses_prepared_data_cut_another_way(tmp_path, tiny_dirs, data_dir, capsys):
    """The input format saved with the model is the prepared data's; prepared data that params
    no longer describe (a stale prepare) is refused before any training."""
    raw = tiny.tiny_params(tiny_dirs["gpt2"], data_dir)
    assert prepare(tmp_path, raw, capsys)[0] == 0
    params = write_params(tmp_path, {**raw, "data": {**raw["data"], "max_tokens": 48,
                                                     "truncation": "right"}})
    code, _, err = train(tmp_path, params, capsys)
    assert_clear_error(code, err, "does not match params.yaml", "max_tokens is 64 there, 48 in",
                       "truncation is 'left' there, 'right' in", "run the prepare stage again")
    assert not (tmp_path / "models").exists()


def test_zero_shot_prompt_beyond_the_position_limit_fails_before_scoring(tmp_path, tiny_dirs,
                                                                          data_dir, capsys):
    """The tiny GPT-2 takes 512 positions: 512 text tokens fit, the prompt's words on top do
    not, and the train stage says so before it loads any weights."""
    raw = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, method="zero_shot",
                           data={"max_tokens": 512})
    assert prepare(tmp_path, raw, capsys)[0] == 0
    params = write_params(tmp_path, raw)
    code, _, err = train(tmp_path, params, capsys)
    assert_clear_error(code, err, "data.max_tokens is 512 plus", "of the zero-shot prompt",
                       "takes at most 512 tokens")
    assert not (tmp_path / "models").exists()
