"""The compare pipeline end to end on tiny local models, and the README table it generates."""

import json
from pathlib import Path

import pytest
import yaml
from support import tiny
from support.tiny import sh

from textclf.compare import README_END, README_START, markdown_table, update_readme

REPO = Path(__file__).resolve().parents[1]


def tiny_compare_config(tiny_dirs, data_dir) -> dict:
    return {
        "datasets": {
            "gpt2_fixture": {"model": str(tiny_dirs["gpt2"])},
            "bert_fixture": {"model": str(tiny_dirs["bert"])},
        },
        "runs": {
            "gpt2_zero_shot": {"dataset": "gpt2_fixture", "params": {"method": "zero_shot"},
                               "reference": {"accuracy": 0.7078}},
            "gpt2_lora": {"dataset": "gpt2_fixture", "params": {"method": "lora"},
                          "reference": {"accuracy": 0.9107}},
            "bert_finetune": {"dataset": "bert_fixture", "params": {"method": "finetune"},
                              "reference": None},
        },
    }


@pytest.fixture()
def project(tmp_path, tiny_dirs, data_dir) -> Path:
    root = tiny.dvc_project(tmp_path / "project", tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, train={"epochs": 1}))
    (root / "compare" / "params.yaml").write_text(
        yaml.safe_dump(tiny_compare_config(tiny_dirs, data_dir), sort_keys=False))
    sh(root, "git", "commit", "-qam", "tiny compare config")
    return root


@pytest.mark.slow
def test_compare_pipeline_runs_everything_and_reruns_only_what_changed(project):
    compare = project / "compare"
    out = sh(compare, "dvc", "repro")
    assert out.count("Running stage 'prepare@") == 2
    assert out.count("Running stage 'train@") == 3
    assert out.count("Running stage 'baseline@") == 2  # one per dataset
    rows = json.loads((compare / "table" / "compare.json").read_text())
    baseline = json.loads((compare / "results" / "baseline" / "gpt2_fixture.json").read_text())
    for name in ("gpt2_zero_shot", "gpt2_lora"):  # the runs of that dataset
        assert rows[name]["baseline_accuracy"] == baseline["accuracy"]
    assert "baseline_accuracy" in rows["bert_finetune"]
    assert set(rows) == {"gpt2_zero_shot", "gpt2_lora", "bert_finetune"}
    assert rows["gpt2_zero_shot"]["method"] == "zero_shot"
    assert rows["gpt2_zero_shot"]["trainable_params"] == 0
    assert rows["gpt2_lora"]["reference_accuracy"] == 0.9107
    assert rows["gpt2_lora"]["delta_accuracy"] == pytest.approx(
        rows["gpt2_lora"]["accuracy"] - 0.9107, abs=1e-6)
    assert rows["bert_finetune"]["n"] == 12 and rows["bert_finetune"]["device"].startswith("cpu")
    table = sh(project, "textclf", "compare")
    assert "| gpt2_lora |" in table and "| bert_finetune |" in table
    assert (compare / "table" / "compare.csv").read_text().startswith("run,accuracy,f1\n")

    # The top-level pipeline neither runs nor sees the comparison (a DVC project of its own)
    out = sh(project, "dvc", "repro")
    assert "prepare@" not in out and "compare" not in out

    # One changed entry reruns that entry and the compare stage, nothing else (not the baseline)
    config = yaml.safe_load((compare / "params.yaml").read_text())
    config["runs"]["gpt2_lora"]["params"]["lora"] = {"r": 4}
    (compare / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = sh(compare, "dvc", "repro")
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running"))
    assert ran == ["compare", "evaluate@gpt2_lora", "train@gpt2_lora"]


def test_readme_table_is_generated_and_says_what_is_not_measured(tmp_path, tiny_dirs, data_dir):
    config = tiny_compare_config(tiny_dirs, data_dir)
    rows = {"gpt2_lora": {"model": "gpt2", "weights": "hub checkpoint", "method": "lora",
                          "data": "imdb", "split": "test", "n": 25000, "accuracy": 0.93,
                          "precision": 0.92, "recall": 0.94, "f1": 0.93, "roc_auc": 0.98,
                          "accuracy_ci_low": 0.927, "accuracy_ci_high": 0.933,
                          "baseline_accuracy": 0.885, "device": "cuda: NVIDIA H100 80GB HBM3"}}
    table = markdown_table(config, rows)
    assert "| accuracy % (95% CI) | TF-IDF baseline accuracy % | F1 % |" in table
    assert ("| gpt2_lora | gpt2 (hub checkpoint) | lora | imdb test (n=25000) "
            "| 93.00 (92.70-93.30) | 88.50 | 93.00 |") in table
    assert "| gpt2_zero_shot |" in table and "not measured yet" in table
    readme = f"# x\n\n{README_START}\nold\n{README_END}\n\nrest\n"
    updated = update_readme(readme, table)
    assert "old" not in updated and table in updated and updated.endswith("rest\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme("# no markers\n", table)


def test_each_run_gets_the_baseline_of_its_dataset(tmp_path, tiny_dirs, data_dir):
    from textclf.compare import collect

    config = tiny_compare_config(tiny_dirs, data_dir)
    base = tmp_path / "params.yaml"
    base.write_text(yaml.safe_dump(tiny.tiny_params(tiny_dirs["gpt2"], data_dir)))
    results = tmp_path / "results"
    for name, accuracy in (("gpt2_lora", 0.8), ("gpt2_zero_shot", 0.6)):
        (results / name).mkdir(parents=True)
        (results / name / "eval.json").write_text(json.dumps(
            {"accuracy": accuracy, "precision": 0.8, "recall": 0.8, "f1": 0.8, "roc_auc": 0.9,
             "n": 12}))
        (results / name / "train.json").write_text(json.dumps({"trainable_params": 10}))
    rows = collect(config, results, tmp_path / "runs", base)
    assert "baseline_accuracy" not in rows["gpt2_lora"]  # none measured: the cell stays empty
    (results / "baseline").mkdir()
    (results / "baseline" / "gpt2_fixture.json").write_text(json.dumps({"accuracy": 0.75}))
    rows = collect(config, results, tmp_path / "runs", base)
    assert rows["gpt2_lora"]["baseline_accuracy"] == rows["gpt2_zero_shot"]["baseline_accuracy"]
    assert rows["gpt2_lora"]["delta_baseline_accuracy"] == pytest.approx(0.05)
    assert rows["gpt2_zero_shot"]["delta_baseline_accuracy"] == pytest.approx(-0.15)


def test_the_readme_table_is_what_textclf_compare_writes(tmp_path, capsys):
    """README.md's results table, markers included, is regenerated as it stands from
    compare/params.yaml and what the compare stage wrote (nothing yet: every row unmeasured)."""
    from textclf.cli.compare import main

    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    main(["--config", str(REPO / "compare" / "params.yaml"),
          "--metrics", str(REPO / "compare" / "table" / "compare.json"), "--readme", str(readme)])
    assert README_START in readme.read_text() and README_END in readme.read_text()
    assert readme.read_text() == (REPO / "README.md").read_text()
    assert "| gpt2_finetune |" in capsys.readouterr().out
