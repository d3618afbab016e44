"""The pull request report: `python -m textclf.cli.pr_report` in temporary git + DVC
repositories whose branches are the kinds of PR it reports on, its charts, and the workflow that
posts it.

The repositories hold a toy pipeline (pipeline.py below): its numbers are arithmetic on the
params, so `dvc repro` takes a fraction of a second and no model is trained.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import tiny

from textclf.cli import pr_charts, pr_query, pr_render

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "pr-report.yml"
ENV = {**tiny.ENV, "DVC_NO_ANALYTICS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO / "src"), tiny.ENV.get("PYTHONPATH", "")])}
LIMIT = 60_000  # the bound: GitHub rejects a comment over 65,536 characters

# train writes a model file (DVC-cached, so never in a CI checkout), train.json and a dvclive-style
# loss log; evaluate reads the model and writes the headline metrics and the plot CSVs.
PIPELINE = '''\
import json, math, sys
from pathlib import Path
import yaml

params = yaml.safe_load(open("params.yaml"))
if sys.argv[1] == "train":
    quality = {"lora": 0.80, "full": 0.86}[params["method"]] + params["train"]["lr"]
    Path("model.txt").write_text(f"{quality}\\n")
    steps = 10 * params["train"]["epochs"]
    log = Path("metrics/train_log/plots/metrics/train")
    log.mkdir(parents=True, exist_ok=True)
    log.joinpath("loss.tsv").write_text("timestamp\\tstep\\tloss\\n" + "".join(
        f"0\\t{s}\\t{(1.2 - quality) * math.exp(-s / steps) + 0.01 * (s % 3):.6f}\\n"
        for s in range(steps)))
    Path("metrics/train.json").write_text(json.dumps({"best_epoch": params["train"]["epochs"]}))
else:
    q = float(Path("model.txt").read_text())
    Path("metrics/eval.json").write_text(json.dumps({
        "accuracy": round(q, 6), "accuracy_ci_low": round(q - 0.021, 6),
        "accuracy_ci_high": round(q + 0.019, 6), "f1": round(q - 0.01, 6),
        "f1_ci_low": round(q - 0.03, 6), "f1_ci_high": round(q + 0.01, 6),
        "loss": round(1.1 - q, 6), "n": 500}))
    Path("metrics/plots").mkdir(parents=True, exist_ok=True)
    Path("metrics/plots/roc.csv").write_text("fpr,tpr\\n" + "".join(
        f"{f / 50:.6f},{(f / 50) ** (2 * (1 - q)):.6f}\\n" for f in range(51)))
    Path("metrics/plots/length_accuracy.csv").write_text(  # the last bin is empty
        f"length_bin,accuracy,n\\n0-256,{q + 0.02:.4f},300\\n256-512,{q - 0.03:.4f},150\\n"
        ">512,,0\\n")
'''

DVC_YAML = """\
stages:
  train:
    cmd: python pipeline.py train
    deps: [pipeline.py]
    params: [method, train]
    outs: [model.txt]
    metrics:
      - metrics/train.json:
          cache: false
    plots:
      - metrics/train_log:
          cache: false
  evaluate:
    cmd: python pipeline.py evaluate
    deps: [pipeline.py, model.txt]
    metrics:
      - metrics/eval.json:
          cache: false
    plots:
      - metrics/plots:
          cache: false
"""
PARAMS = {"method": "lora", "train": {"lr": 0.01, "epochs": 3}}

# compare/: a DVC project of its own (as the lead is making it) whose one stage writes RUNS runs'
# metrics, many of them with long names: a PR that changes them all makes a huge diff.
RUNS, METRICS_PER_RUN = 10, 80
COMPARE_SCRIPT = f'''\
import json
from pathlib import Path
import yaml

scale = yaml.safe_load(open("params.yaml"))["scale"]
for run in range({RUNS}):
    metrics = {{f"length_bin_{{b:03d}}_precision_of_the_positive_class_on_the_test_split":
                round(scale * (run + 1) * (b + 1) / 1e4, 6) for b in range({METRICS_PER_RUN})}}
    accuracy = 0.5 + scale * (run + 1) / 100
    metrics.update(accuracy=round(accuracy, 6), accuracy_ci_low=round(accuracy - 0.02, 6),
                   accuracy_ci_high=round(accuracy + 0.02, 6))
    Path(f"results/run_{{run:02d}}").mkdir(parents=True, exist_ok=True)
    Path(f"results/run_{{run:02d}}/eval.json").write_text(json.dumps(metrics))
'''
COMPARE_DVC_YAML = "stages:\n  runs:\n    cmd: python compare.py\n    deps: [compare.py]\n" \
    "    params: [scale]\n    metrics:\n" + "".join(
        f"      - results/run_{run:02d}/eval.json:\n          cache: false\n"
        for run in range(RUNS))


def git(root: Path, *args: str) -> str:
    return tiny.sh(root, "git", *args)


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


def new_repo(root: Path) -> Path:
    """The toy pipeline run and committed on main."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    tiny.sh(root, "dvc", "init", "-q")
    (root / "pipeline.py").write_text(PIPELINE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    write_params(root, PARAMS)
    tiny.sh(root, "dvc", "repro", "-q")
    commit(root, "baseline")
    return root


def branch(root: Path, name: str) -> Path:
    """A worktree of `root` on a new branch `name` from main: one PR, its own directory. DVC's
    cache (model.txt) is not shared, as in a CI checkout."""
    tree = root.parent / name
    git(root, "worktree", "add", "-q", "-b", name, str(tree), "main")
    return tree


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """main, and three PRs: `params-only` (train.lr changed, nothing rerun), `method`
    (method: full, rerun) and `nothing` (no change)."""
    root = new_repo(tmp_path_factory.mktemp("pr") / "main")
    params_only = branch(root, "params-only")
    write_params(params_only, {**PARAMS, "train": {**PARAMS["train"], "lr": 0.02}})
    commit(params_only, "higher lr, not rerun")
    method = branch(root, "method")
    write_params(method, {**PARAMS, "method": "full"})
    tiny.sh(method, "dvc", "repro", "-q")
    commit(method, "full fine-tuning, rerun")
    branch(root, "nothing")
    return root


def run_report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textclf.cli.pr_report", *args], cwd=cwd,
                          capture_output=True, text=True, env=ENV)


def section(md: str, title: str) -> str:
    """The text of a `### title` section, up to the next section or folded block."""
    return re.split(r"\n### |\n<details>", md.split(f"### {title}", 1)[1], maxsplit=1)[0]


def table(markdown: str) -> list[list[str]]:
    """The data rows of the Markdown tables in `markdown`, as lists of cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|")]
    return [row for row in rows if not set("".join(row)) <= set("- ") and row[0] != "metric"
            and row[0] not in ("stage", "file")]


def value_and_ci(text: str) -> tuple[float, float, float]:
    """"0.87 (0.849-0.889)" -> (0.87, 0.849, 0.889)."""
    value, low, high = re.fullmatch(r"([\d.]+) \(([\d.]+)-([\d.]+)\)", text).groups()
    return float(value), float(low), float(high)


def metrics_at(root: Path, rev: str) -> dict:
    return json.loads(git(root, "show", f"{rev}:metrics/eval.json"))


# ---------------------------------------------------------------- the three kinds of PR

@pytest.mark.slow  # seconds: a git + DVC repository, or full-size weights
def test_params_changed_but_not_rerun_is_reported_stale(repo):
    """train.lr changed without `dvc repro`: the report says the metrics are stale, not "No
    metrics changed"."""
    tree = repo.parent / "params-only"
    result = run_report(tree, "--base", "main")
    assert result.returncode == 0, result.stderr
    md = result.stdout
    stale = section(md, "⚠️ Stale results")
    assert "[!WARNING]" in stale and "dvc repro" in stale
    assert ["`train`", "params `train.lr`"] in table(stale)
    # evaluate reads train's model: stale too, though a checkout without the DVC cache (as here
    # and in CI) has no model for `dvc status` to compare; the missing model is no change itself
    assert "Downstream of these, stale too: `evaluate`." in stale
    assert not any(row[0] == "`evaluate`" for row in table(stale))
    assert md.index("Stale results") < md.index("### Headline")
    assert "No metrics changed against `main`." in md
    params = md.split("<summary>Params:", 1)[1].split("</details>")[0]
    assert ["params.yaml", "train.lr", "0.01", "0.02"] in table(params)
    # --fail-on-stale: test_workflow_report_step_runs_here[params-only-True]


@pytest.mark.slow
def test_stale_names_the_params_changed_since_the_stage_ran_not_since_the_base(repo):
    """dvc status finds the train group changed against dvc.lock; the params to name under it
    are those that differ from dvc.lock, not from the base: train.epochs changed and was rerun,
    then train.lr changed without a rerun. Only train.lr is stale."""
    tree = branch(repo, "epochs-then-lr")
    write_params(tree, {**PARAMS, "train": {**PARAMS["train"], "epochs": 4}})
    tiny.sh(tree, "dvc", "repro", "-q")
    commit(tree, "more epochs, rerun")
    write_params(tree, {**PARAMS, "train": {**PARAMS["train"], "epochs": 4, "lr": 0.03}})
    commit(tree, "higher lr, not rerun")
    md = run_report(tree, "--base", "main").stdout
    assert ["`train`", "params `train.lr`"] in table(section(md, "⚠️ Stale results")), md
    params = table(md.split("<summary>Params:", 1)[1].split("</details>")[0])
    assert {row[1] for row in params} == {"train.epochs", "train.lr"}  # both differ from main


def test_method_change_headline_ci_delta_and_charts(repo):
    tree = repo.parent / "method"
    (tree / "sub").mkdir(exist_ok=True)
    result = run_report(tree / "sub", "--base", "main", "--fail-on-stale")  # runs at the root
    assert result.returncode == 0, result.stderr
    md = result.stdout
    lines = md.splitlines()
    assert lines[0] == pr_render.MARKER == "<!-- textclf-pr-report -->"
    assert lines[2].startswith("## ") and "`main`" in lines[2]
    assert "Stale results" not in md
    # The headline comes first, after the title
    assert lines[4] == "### Headline: `metrics/eval.json`"
    rows = {row[0]: row for row in table(section(md, "Headline: `metrics/eval.json`"))}
    old, new = metrics_at(repo, "main"), metrics_at(repo, "method")
    assert set(rows) == {"accuracy", "f1", "loss", "n"}  # the CI bounds are no rows of their own
    for name in ("accuracy", "f1"):
        _, base_cell, pr_cell, change = rows[name]
        for cell, values in ((base_cell, old), (pr_cell, new)):
            assert value_and_ci(cell) == pytest.approx(
                (values[name], values[f"{name}_ci_low"], values[f"{name}_ci_high"]), abs=1e-4)
        assert float(change) == pytest.approx(new[name] - old[name], abs=1e-4)
        assert change.startswith("+")  # full fine-tuning scores higher in the toy pipeline
    assert rows["n"][1:] == [str(old["n"]), str(new["n"]), "0"]
    # the other metric file and the method param in the folded details
    assert "<summary>Other metrics: 0" not in md
    assert ["params.yaml", "method", "lora", "full"] in table(
        md.split("<summary>Params:", 1)[1].split("</details>")[0])

    # The charts: base and PR series on one grid, drawn by GitHub (Mermaid)
    plots = section(md, "Plots")
    charts = re.findall(r"```mermaid\n(.*?)```", plots, re.S)
    assert len(charts) == len(pr_charts.CHARTS)
    roc = next(c for c in charts if "ROC curve" in c)
    assert "xychart-beta" in roc
    labels = re.search(r"x-axis .*\[(.*)\]", roc).group(1).split(", ")
    series = [[float(v) for v in line.split(", ")] for line in re.findall(r"line \[(.*)\]", roc)]
    assert len(series) == 2 and all(len(s) == len(labels) <= 25 for s in series)
    assert all(0 <= v <= 1 for s in series for v in s)
    assert series[0] != series[1]
    assert "grey: `main`, blue: this PR" in plots


@pytest.mark.parametrize("base", ["main", pytest.param("sha", marks=pytest.mark.slow)])
def test_nothing_changed_says_so_plainly(repo, base):
    if base == "sha":
        base = git(repo, "rev-parse", "main").strip()
    result = run_report(repo.parent / "nothing", "--base", base)
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert f"No params changed against `{base}`." in md
    assert f"No metrics changed against `{base}`." in md
    assert "<details>" not in md and "Stale" not in md
    for cell in table(section(md, "Headline: `metrics/eval.json`")):
        assert cell[1] == cell[2] and cell[3] == "0"


# ---------------------------------------------------------------- the size limit

@pytest.fixture(scope="module", params=[
    "own project", pytest.param("same project", marks=pytest.mark.slow)])
def big_repo(request, tmp_path_factory) -> Path:
    """main with compare/, a DVC project of its own (where the lead is taking it) or a second
    dvc.yaml of the root project (as before); the PR reruns every compare run with another
    scale (RUNS x METRICS_PER_RUN rows change) and changes train.lr without rerunning."""
    root = new_repo(tmp_path_factory.mktemp("big") / "main")
    compare = root / "compare"
    compare.mkdir()
    if request.param == "own project":
        tiny.sh(compare, "dvc", "init", "--subdir", "-q")
    (compare / "compare.py").write_text(COMPARE_SCRIPT)
    (compare / "dvc.yaml").write_text(COMPARE_DVC_YAML)
    (compare / "params.yaml").write_text("scale: 1\n")
    tiny.sh(compare, "dvc", "repro", "-q")
    commit(root, "compare runs")
    tree = branch(root, "everything")
    (tree / "compare" / "params.yaml").write_text("scale: 2\n")
    tiny.sh(tree / "compare", "dvc", "repro", "-q")
    write_params(tree, {**PARAMS, "train": {**PARAMS["train"], "lr": 0.05}})
    commit(tree, "rescale every compare run; higher lr, not rerun")
    return tree


def compare_block(md: str) -> str:
    return md.split("<summary>`compare/` metrics:", 1)[1].split("</details>", 1)[0]


def test_a_huge_diff_is_cut_to_fit_and_says_what_was_left_out(big_repo):
    found = pr_query.gather("main", big_repo)  # what the command reads, rendered twice below
    uncut = pr_render.render(found, max_chars=0)
    assert len(uncut) > 1.5 * LIMIT  # the test is meaningful: this would be rejected
    every_row = table(compare_block(uncut))
    assert len(every_row) == RUNS * (METRICS_PER_RUN + 1)  # accuracy's CI is in its own row

    md = pr_render.render(found)  # the command's default
    assert pr_render.MAX_CHARS <= LIMIT and len(md) <= LIMIT
    # what was left out, and how to see it
    block = compare_block(md)
    shown = table(block)
    left_out = int(re.search(r"\*\*(\d+) more rows not shown\*\*", block).group(1))
    assert shown == every_row[:len(shown)] and len(shown) + left_out == len(every_row)
    assert len(shown) > 0 and left_out > 0
    assert "textclf pr-report --base main --max-chars 0" in block
    # the headline, the stale section and the charts all survive the cut
    assert section(md, "Headline: `metrics/eval.json`") == \
        section(uncut, "Headline: `metrics/eval.json`")
    assert ["`train`", "params `train.lr`"] in table(section(md, "⚠️ Stale results"))
    assert md.count("```mermaid") == len(pr_charts.CHARTS)
    # the nested project's params count once each, however many projects read the file
    params = table(md.split("<summary>Params:", 1)[1].split("</details>")[0])
    assert params == [["compare/params.yaml", "scale", "1", "2"],
                      ["params.yaml", "train.lr", "0.01", "0.05"]]


def small_findings() -> pr_query.Findings:
    """Findings with every part of a report: stale stages, headline, warnings, two folded
    blocks and a chart, about 3,000 characters rendered."""
    def metric(file, name, old, new):
        return pr_query.Row(file, name, old, new, (old - 0.02, old + 0.02),
                            (new - 0.02, new + 0.02))

    headline = [metric("metrics/eval.json", name, 0.8 + i / 100, 0.82 + i / 100)
                for i, name in enumerate(["accuracy", "f1", "precision", "recall", "roc_auc"])]
    others = [metric("metrics/train.json", f"epoch_{i}_validation_accuracy", 0.7, 0.71)
              for i in range(12)]
    params = [pr_query.Row("params.yaml", f"train.knob_{i}", i, i + 1) for i in range(12)]
    stale = [pr_query.Stale("train", ["params `train.lr`"], "dvc repro")]
    chart = "```mermaid\nxychart-beta\n    line [" + ", ".join(["0.5"] * 25) + "]\n```"
    return pr_query.Findings(
        base="main", title="## DVC report: workspace (abc1234) against `main` (def5678)",
        params=params, metrics=headline + others, headline_order=[r.name for r in headline],
        stale=stale, downstream=["evaluate"], warnings=["WARNING: cannot read metrics/x.json"],
        charts=[chart])


def well_formed(md: str) -> bool:
    """Every <details> closed before the next opens, every code fence closed."""
    tags = re.findall(r"</?details>", md)
    return tags == ["<details>", "</details>"] * (len(tags) // 2) and md.count("```") % 2 == 0


def test_any_max_chars_gives_a_well_formed_report_that_says_it_was_cut():
    """--max-chars below the size of the headline (and everything else) still closes each
    folded block, and says the report was cut."""
    found = small_findings()
    uncut = pr_render.render(found, max_chars=0)
    assert well_formed(uncut) and uncut.count("<details>") == 2
    headline = section(uncut, "Headline: `metrics/eval.json`")
    headline_end = uncut.index("### Headline") + len(headline)
    for limit in range(300, len(uncut) + 40, 20):
        md = pr_render.render(found, max_chars=limit)
        assert well_formed(md), (limit, md)
        assert md.startswith(pr_render.MARKER) and len(md) <= limit, (limit, md)
        if limit < headline_end:
            assert "**Report cut at the size limit" in md, (limit, md)
        if md != uncut:
            assert "cut" in md or "Left out" in md, (limit, md)


# ---------------------------------------------------------------- the model beside the baseline

def baseline_rows(model: float | None, baseline: float | None, n_model=500, n_baseline=500,
                  base_model=None, base_baseline=None) -> list[pr_query.Row]:
    """The rows of metrics/eval.json and metrics/baseline.json (accuracy, n): None is absent."""
    out = []
    for file, new, old, n in ((pr_query.HEADLINE, model, base_model, n_model),
                              (pr_query.BASELINE, baseline, base_baseline, n_baseline)):
        if new is not None or old is not None:
            ci = None if new is None else (new - 0.02, new + 0.02)
            out += [pr_query.Row(str(file), "accuracy", old, new, None, ci),
                    pr_query.Row(str(file), "n", n if old is not None else None, n)]
    return out


def test_the_report_puts_the_model_beside_the_baseline():
    text = pr_render.baseline_section(baseline_rows(0.882, 0.861), "main")
    assert "**+2.1 points over** TF-IDF + logistic regression" in text
    assert "0.861 (0.841-0.881), on the same 500 test texts" in text
    assert "At `main`" not in text
    text = pr_render.baseline_section(
        baseline_rows(0.85, 0.861, base_model=0.87, base_baseline=0.861), "main")
    assert "**-1.1 points under** TF-IDF" in text and "At `main`: +0.9 points." in text


def test_the_report_says_when_the_baseline_is_missing_or_scored_other_texts():
    assert "No baseline in this PR: `metrics/baseline.json` is missing" in \
        pr_render.baseline_section(baseline_rows(0.88, None), "main")
    assert "it scored 400 test texts, the model 500" in \
        pr_render.baseline_section(baseline_rows(0.88, 0.86, n_baseline=400), "main")
    assert pr_render.baseline_section(baseline_rows(None, 0.86), "main") is None


def test_the_rendered_report_holds_the_line_after_the_headline_table():
    metrics = baseline_rows(0.882, 0.861, base_model=0.88, base_baseline=0.861)
    found = pr_query.Findings(base="main", title="## DVC report", params=[], metrics=metrics,
                              headline_order=["accuracy", "n"], stale=[], downstream=[],
                              warnings=[], charts=[])
    md = pr_render.render(found)
    assert md.index("### Headline") < md.index("| accuracy |") < md.index("Against the baseline")


# ---------------------------------------------------------------- charts, errors, imports

def roc_csv(quality: float) -> str:
    return "fpr,tpr\n" + "".join(f"{f / 200},{(f / 200) ** (1 - quality)}\n" for f in range(201))


def loss_tsv(steps: int) -> str:
    return "timestamp\tstep\tloss\n" + "".join(f"0\t{s}\t{1 / (1 + s) + 0.05 * (s % 2)}\n"
                                               for s in range(steps))


def chart(title: str) -> pr_charts.Chart:
    return next(c for c in pr_charts.CHARTS if c.title.startswith(title))


def series(block: str) -> tuple[list[str], list[list[float]]]:
    labels = re.search(r"x-axis .*\[(.*)\]", block).group(1).split(", ")
    lines = [[float(v) for v in line.split(", ")] for line in re.findall(r"line \[(.*)\]", block)]
    return [label.strip('"') for label in labels], lines


def test_chart_thins_a_curve_to_a_shared_grid():
    block = pr_charts.mermaid(chart("ROC"), roc_csv(0.5), roc_csv(0.9), "main")
    labels, (base, pr) = series(block)
    assert len(labels) == pr_charts.POINTS and float(labels[0]) == 0 and float(labels[-1]) == 1
    for x, b, p in zip(map(float, labels), base, pr):  # the curve's own values on the grid
        assert b == pytest.approx(x ** 0.5, abs=0.01) and p == pytest.approx(x ** 0.1, abs=0.01)


def test_chart_of_runs_of_different_lengths_uses_the_fraction_of_each_run():
    block = pr_charts.mermaid(chart("Training loss"), loss_tsv(60), loss_tsv(200), "main")
    labels, (base, pr) = series(block)
    assert labels[0] == "0%" and labels[-1] == "100%" and len(base) == len(pr) == len(labels)
    assert "step: main 0 to 59, this PR 0 to 199" in block
    assert base[-1] < base[0] and pr[-1] < pr[0]  # smoothed, the loss still falls


def loss_tsv_from(first: int, last: int, every: int) -> str:
    return "timestamp\tstep\tloss\n" + "".join(f"0\t{s}\t{1 / (1 + s)}\n"
                                               for s in range(first, last + 1, every))


@pytest.mark.parametrize("first, last, every", [(2, 8, 2), (0, 7, 1), (0, 1234, 2), (20, 60, 20),
                                                      (0, 12000, 100)])
def test_loss_chart_steps_are_whole_thinned_and_distinct(first, last, every):
    """A short run (a few logged steps) once gave 21 fractional labels such as 2.3 and 2.6;
    the step axis holds whole steps, one step apart at most, a round stride apart at least."""
    text = loss_tsv_from(first, last, every)
    labels, (base, pr) = series(pr_charts.mermaid(chart("Training loss"), text, text, "main"))
    steps = [int(label) for label in labels]  # integers, or this raises
    assert len(set(steps)) == len(steps) == len(base) <= pr_charts.POINTS
    assert first <= steps[0] and steps[-1] <= last and steps == sorted(steps)
    strides = {b - a for a, b in zip(steps, steps[1:])}
    assert len(strides) == 1 and str(strides.pop())[0] in "125"  # 1, 2, 5, 10, 20, 50, ...
    assert len(steps) >= min(pr_charts.POINTS // 2, last - first + 1)


def test_chart_of_categories_keeps_bins_with_values_on_every_side():
    base = "length_bin,accuracy,n\n0-256,0.9,10\n256-512,0.8,5\n>512,,0\n"
    pr = "length_bin,accuracy,n\n0-256,0.92,10\n256-512,0.85,5\n>512,0.5,1\n"
    labels, lines = series(pr_charts.mermaid(chart("Accuracy by review length"), base, pr, "main"))
    assert labels == ["0-256", "256-512"] and lines == [[0.9, 0.8], [0.92, 0.85]]


def test_chart_with_one_side_says_which_and_none_without_files():
    block = pr_charts.mermaid(chart("ROC"), None, roc_csv(0.7), "main")
    assert len(series(block)[1]) == 1
    assert "blue: this PR (`main`: no data in `metrics/plots/roc.csv`)" in block
    assert pr_charts.mermaid(chart("ROC"), None, None, "main") is None
    assert pr_charts.mermaid(chart("ROC"), "fpr,tpr\n", "fpr,tpr\n", "main") is None


def test_unknown_base_is_one_error_line(repo):
    result = run_report(repo, "--base", "no-such-branch")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: `no-such-branch` is not a git revision")
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_imports_only_the_standard_library():
    """CI installs dvc alone: importing the report may pull in nothing outside the standard
    library and textclf's own light modules (no torch, numpy or yaml)."""
    code = ("import sys, textclf.cli.pr_report; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    env = {**ENV, "PYTHONPATH": str(REPO / "src")}
    imported = json.loads(subprocess.run([sys.executable, "-S", "-c", code], env=env, text=True,
                                         capture_output=True, check=True).stdout.replace("'", '"'))
    outside = set(imported) - sys.stdlib_module_names - {"textclf", "__main__"}
    assert not outside, outside


# ---------------------------------------------------------------- the workflow

NODE24_MAJORS = {"actions/checkout": 5, "actions/setup-python": 6, "actions/github-script": 8,
                 "actions/upload-artifact": 6}  # the first majors that run on Node 24


def steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["report"]["steps"]


def test_workflow():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # PyYAML reads the key `on` as True
    (job,) = workflow["jobs"].values()
    assert workflow["permissions"]["pull-requests"] == "write"
    assert "gpu" not in json.dumps(job["runs-on"]).lower()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    uses = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}

    # Actions on majors that run on Node 24 (GitHub retired the Node 20 ones)
    for step in job["steps"]:
        if "uses" in step:
            action, version = step["uses"].split("@")
            assert int(version.lstrip("v").split(".")[0]) >= NODE24_MAJORS[action], step["uses"]

    # Full history and the base branch fetched; Python and dvc installed, nothing else
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0
    assert "git fetch" in runs and "${BASE_REF}" in runs
    assert job["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert "actions/setup-python" in uses
    installs = [step["run"] for step in job["steps"] if "pip install" in step.get("run", "")]
    assert len(installs) == 1 and "dvc" in installs[0]
    assert not any(name in installs[0] for name in ("torch", "transformers", " -e", "textclf"))
    assert "dvc pull" not in runs and "dvc remote" not in runs  # metrics live in git

    # The report against the base branch, failing on stale results only after it is posted
    (report,) = [s for s in job["steps"] if "textclf.cli.pr_report" in s.get("run", "")]
    assert 'python -m textclf.cli.pr_report --base "origin/${BASE_REF}" --fail-on-stale' \
        in report["run"]
    assert report["env"]["PYTHONPATH"] == "src" and "$GITHUB_STEP_SUMMARY" in report["run"]
    post = uses["actions/github-script"]
    script = post["with"]["script"]
    assert pr_render.MARKER in script and "updateComment" in script and "createComment" in script
    assert "head.repo.full_name == github.repository" in post["if"]  # forks: summary only
    last = job["steps"][-1]
    assert job["steps"].index(post) < len(job["steps"]) - 1
    assert last["if"] == f"steps.{report['id']}.outputs.stale == 'true'" and "exit 1" in last["run"]
    # no zip of HTML: the charts are in the Markdown
    assert "actions/upload-artifact" not in uses and "dvc plots diff" not in runs


@pytest.mark.parametrize("pr, stale", [("method", False), ("params-only", True)])
def test_workflow_report_step_runs_here(repo, tmp_path, pr, stale):
    """The workflow's report step in a fresh clone (no DVC cache, the base as a remote ref)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", pr, str(repo), str(clone)], check=True,
                   capture_output=True)
    (step,) = [s for s in steps() if "textclf.cli.pr_report" in s.get("run", "")]
    summary, output = tmp_path / "summary", tmp_path / "output"
    env = {**ENV, "BASE_REF": "main", "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_OUTPUT": str(output)}
    subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=clone, env=env, check=True)
    md = (clone / "pr-report.md").read_text()
    assert md.startswith(pr_render.MARKER) and md == summary.read_text()
    assert ("stale=true" in (output.read_text() if output.exists() else "")) == stale
    assert ("Stale results" in md) == stale


@pytest.mark.slow  # a DVC project inside a DVC project, run and reported three times
def test_a_nested_project_that_never_ran_is_not_stale(tmp_path):
    """compare/ in a fresh clone has a dvc.yaml and no dvc.lock: none of its stages has results,
    so none is stale, and the report does not fail on it."""
    root = new_repo(tmp_path / "main")
    compare = root / "compare"
    compare.mkdir()
    tiny.sh(compare, "dvc", "init", "--subdir", "-q")
    (compare / "compare.py").write_text(COMPARE_SCRIPT)
    (compare / "dvc.yaml").write_text(COMPARE_DVC_YAML.replace("deps: [compare.py]",
                                                              "deps: [compare.py, ../pipeline.py]"))
    (compare / "params.yaml").write_text("scale: 1\n")
    commit(root, "a comparison, not run yet")
    result = run_report(root, "--base", "main", "--fail-on-stale")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stale" not in result.stdout
    # once it ran, a change to a file outside it (../pipeline.py) makes it stale, named as the
    # repository names it
    tiny.sh(compare, "dvc", "repro", "-q")
    commit(root, "the comparison ran")
    (root / "pipeline.py").write_text(PIPELINE + "\n# an edit\n")
    md = run_report(root, "--base", "main").stdout
    stale = table(section(md, "⚠️ Stale results"))
    assert [row for row in stale if "runs" in row[0] and "files `pipeline.py`" in row[1]], md
