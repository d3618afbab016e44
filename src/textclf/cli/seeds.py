"""Mean and spread of a configuration's quality over several seeds, from DVC experiments.

    dvc exp run --queue -S 'seed=1,2,3' && dvc queue start   # or one `dvc exp run -S seed=N` each
    python -m textclf.cli.seeds                                  # once they have finished

Experiments (and the baseline commit) whose params differ only in `seed` form one group; each
group of two or more prints the mean, sample standard deviation, min and max of its metrics. A
run whose params file has no `seed` (one written before every knob lived in params.yaml) cannot
be placed and is left out.
Reads `dvc exp show --json`; imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from textclf.cli import HelpFormatter

QUALITY = ("accuracy", "f1", "precision", "recall", "roc_auc")


def experiments(exp_show: list[dict], params_file: str, metrics_file: str) -> list[dict]:
    """(name, params, metrics) of every baseline and experiment in `dvc exp show --json`."""
    out = []

    def add(entry: dict) -> None:
        data = entry.get("data") or {}
        params = ((data.get("params") or {}).get(params_file) or {}).get("data")
        metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
        if params and metrics:
            out.append({"name": entry.get("name") or entry.get("rev"), "params": params,
                        "metrics": metrics})

    for baseline in exp_show:
        if baseline.get("rev") == "workspace":
            continue  # the workspace repeats the last experiment applied to it
        add(baseline)
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                add(rev)
    return out


def seed_groups(runs: list[dict]) -> list[dict]:
    """Runs grouped by their params without `seed`; groups of two or more, summarised."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if not isinstance(run["params"].get("seed"), int):
            continue
        key = json.dumps({k: v for k, v in run["params"].items() if k != "seed"}, sort_keys=True)
        groups.setdefault(key, []).append(run)
    summaries = []
    for members in groups.values():
        seeds = sorted({m["params"].get("seed") for m in members})
        if len(seeds) < 2:
            continue
        by_seed = {m["params"].get("seed"): m for m in members}  # one run per seed
        row = {"model": members[0]["params"].get("model"),
               "method": members[0]["params"].get("method"), "seeds": seeds}
        for metric in QUALITY:
            values = [by_seed[s]["metrics"].get(metric) for s in seeds]
            values = [v for v in values if isinstance(v, (int, float))]
            if len(values) >= 2:
                row[metric] = {"mean": round(statistics.mean(values), 6),
                               "std": round(statistics.stdev(values), 6),
                               "min": min(values), "max": max(values)}
        summaries.append(row)
    return summaries


def markdown(summaries: list[dict]) -> str:
    if not summaries:
        return "No configuration has runs with two or more seeds yet.\n"
    lines = ["| model | method | seeds | accuracy mean ± std | F1 mean ± std | accuracy min-max |",
             "|---|---|---|---|---|---|"]
    for row in summaries:
        acc, f1 = row.get("accuracy"), row.get("f1")

        def fmt(m):
            return f"{m['mean']:.4f} ± {m['std']:.4f}" if m else ""

        span = f"{acc['min']:.4f}-{acc['max']:.4f}" if acc else ""
        lines.append(f"| {row['model']} | {row['method']} | {', '.join(map(str, row['seeds']))} "
                     f"| {fmt(acc)} | {fmt(f1)} | {span} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf seeds", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--params-file", default="params.yaml", help="params file of the runs")
    parser.add_argument("--metrics-file", default="metrics/eval.json",
                        help="metrics file to summarise")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"error: dvc exp show failed: {result.stderr.strip()}", file=sys.stderr)
        sys.exit(2)
    summaries = seed_groups(experiments(json.loads(result.stdout), args.params_file,
                                        args.metrics_file))
    print(json.dumps(summaries, indent=2) if args.json else markdown(summaries), end="")


if __name__ == "__main__":
    main()
