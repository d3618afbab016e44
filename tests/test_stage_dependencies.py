"""Each DVC stage depends on exactly the code it runs and the params it reads: complete (a change
can never leave a result silently stale) and precise (editing the model card never retrains a
model). Checked statically on dvc.yaml and compare/dvc.yaml, by recording what each stage reads
of the params object while it runs, and end to end with `dvc status`."""

import ast
import dataclasses
import json
import types
from pathlib import Path

import pytest
import yaml
from support import tiny
from support.tiny import sh

from textclf.core import runner
from textclf.core.params import flat_params

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src"
PIPELINES = (REPO / "dvc.yaml", REPO / "compare" / "dvc.yaml")


def stages_of(path: Path) -> dict:
    stages = yaml.safe_load(path.read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def module_file(dotted: str) -> Path | None:
    parts = dotted.split(".")
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"),
                      PACKAGE.joinpath(*parts) / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_modules_imported_by(script: Path) -> set[Path]:
    """Files of src/textclf that running `script` executes: every module it imports, directly or
    through other package modules (import statements inside functions count too), and the
    __init__.py of every package on the way (importing textclf.core.params runs
    textclf/__init__.py and textclf/core/__init__.py first)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert not node.level, f"{path}: relative import (the package uses absolute ones)"
                module = node.module or ""
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for name in names:
                if not name.startswith("textclf"):
                    continue
                parts = name.split(".")
                for end in range(1, len(parts) + 1):  # the packages on the way, then the module
                    found = module_file(".".join(parts[:end]))
                    if found and found not in seen:
                        seen.add(found)
                        todo.append(found)
    return seen


def declared_modules(path: Path, deps: list[str]) -> set[Path]:
    """The package's .py files that a stage's deps cover (folders: every file under them)."""
    out = set()
    for dep in deps:
        target = (path.parent / dep).resolve()
        if target.is_dir() and PACKAGE in target.parents:
            out |= {p for p in target.rglob("*.py")}
        elif target.suffix == ".py" and PACKAGE in target.parents:
            out.add(target)
    return out


@pytest.mark.parametrize("path", PIPELINES, ids=["dvc.yaml", "compare/dvc.yaml"])
def test_each_stage_depends_on_exactly_the_code_it_imports(path):
    for name, stage in stages_of(path).items():
        script = (path.parent / next(d for d in stage["deps"] if d.endswith(".py")
                                     and "stages/" in d)).resolve()
        assert script.name in stage["cmd"], f"{name}: its script {script} is not what it runs"
        # the script puts its checkout's src/ first (stages/this_checkout.py): a dependency too
        assert "import this_checkout" in script.read_text(), f"{name}: {script.name}"
        assert (script.parent / "this_checkout.py").resolve() in \
            {(path.parent / d).resolve() for d in stage["deps"]}, f"{name}: this_checkout.py"
        imported = package_modules_imported_by(script)
        declared = declared_modules(path, stage["deps"])

        def rel(files):
            return sorted(f.relative_to(PACKAGE).as_posix() for f in files)

        assert not imported - declared, f"{name} imports, without depending on: " \
                                        f"{rel(imported - declared)}"
        assert not declared - imported, f"{name} depends on, without importing: " \
                                        f"{rel(declared - imported)}"


def test_the_walk_follows_the_package():
    """The import walk reaches modules imported only indirectly: the train stage reaches the
    zero-shot code, the classifier and tokenization; no stage reaches the command-line tools."""
    reached = {m.relative_to(PACKAGE / "textclf").as_posix()
               for m in package_modules_imported_by(REPO / "stages" / "train.py")}
    assert {"train/zero_shot.py", "modeling/classifier.py", "core/tokenization.py",
            "train/loop.py", "__init__.py", "core/__init__.py"} <= reached
    for script in (REPO / "stages").glob("*.py"):
        for module in package_modules_imported_by(script):
            assert "cli" not in module.relative_to(PACKAGE).parts, (script, module)


@pytest.mark.parametrize("path", PIPELINES, ids=["dvc.yaml", "compare/dvc.yaml"])
def test_every_stage_can_be_run_cached(path):
    """DVC never run-caches a stage with a `persist` output or a plain output that is not
    cached (metrics and plots may be `cache: false`)."""
    for name, stage in stages_of(path).items():
        for out in stage.get("outs", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            assert not options.get("persist"), f"{name}: persist disables the run-cache"
            assert options.get("cache", True), f"{name}: a plain cache: false output " \
                                               "disables the run-cache"
        for kind in ("metrics", "plots"):
            for out in stage.get(kind, []):
                options = next(iter(out.values())) if isinstance(out, dict) else {}
                assert not options.get("persist"), f"{name}: persist disables the run-cache"


# ---------------------------------------------------------------------------------------------
# Params: what each stage reads, recorded while it runs

class Recorder:
    """Stands in for the params object (or one of its sections) and records the dotted key of
    every field read; properties and methods run on the recorder, so what they read counts."""

    def __init__(self, obj, seen: set[str], prefix: str = ""):
        self._obj, self._seen, self._prefix = obj, seen, prefix

    def __getattr__(self, name):
        obj = self._obj
        attr = getattr(type(obj), name, None)
        if isinstance(attr, property):
            return attr.fget(self)
        if name == "to_dict":  # a dump of every key: everything is read
            self._seen.update(self._prefix + k for k in flat_params(dataclasses.asdict(obj)))
            return obj.to_dict
        if isinstance(attr, types.FunctionType):
            return types.MethodType(attr, self)
        value = getattr(obj, name)
        key = self._prefix + name
        if dataclasses.is_dataclass(value):
            return Recorder(value, self._seen, key + ".")
        self._seen.add(key)
        return value


# Keys a stage reads on paths these tiny local runs do not take
OTHER_PATHS = {
    "prepare": {"data.hub_config": "hub datasets only", "data.revision": "hub datasets only"},
}


def declared_params(stage: dict) -> set[str]:
    """The dotted keys a stage of dvc.yaml lists (a section stands for all its keys)."""
    every = list(flat_params(yaml.safe_load((REPO / "params.yaml").read_text())))
    out = set()
    for entry in stage.get("params", []):
        out |= {k for k in every if k == entry or k.startswith(entry + ".")}
    return out


@pytest.fixture(scope="module")
def params_read(tiny_dirs, data_dir, tmp_path_factory) -> dict[str, set[str]]:
    """Every stage run in this process for each method (and each truncation rule), with the
    params object replaced by a Recorder: the keys each stage read, over all runs."""
    read: dict[str, set[str]] = {}
    original = runner.params_from_args
    current = {"stage": None}

    def recording(args):
        return Recorder(original(args), read.setdefault(current["stage"], set()))

    runner.params_from_args = recording
    try:
        for method, data in (("finetune", {}), ("lora", {"truncation": "head_tail",
                                                         "head_tokens": 16}),
                             ("zero_shot", {"truncation": "right"})):
            run_dir = tmp_path_factory.mktemp(method)
            params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, method=method, data=data,
                                      train={"epochs": 1}, zero_shot={"calibrate": True})
            for stage in ("prepare", "baseline", "train", "evaluate", "export"):
                current["stage"] = stage
                tiny.run_stages(run_dir, params, stages=(stage,), in_process=True)
    finally:
        runner.params_from_args = original
    return read


@pytest.mark.parametrize("stage", ["prepare", "baseline", "train", "evaluate", "export"])
def test_each_stage_lists_exactly_the_params_it_reads(params_read, stage):
    declared = declared_params(stages_of(REPO / "dvc.yaml")[stage])
    read = params_read[stage]
    assert read - declared == set(), f"{stage} reads params dvc.yaml does not list"
    unread = declared - read - set(OTHER_PATHS.get(stage, {}))
    assert unread == set(), f"{stage} lists params it never read"


def test_the_recorder_sees_properties_and_nested_sections(tiny_dirs, data_dir):
    from textclf.core.params import parse_params

    seen: set[str] = set()
    params = Recorder(parse_params(tiny.tiny_params(tiny_dirs["gpt2"], data_dir,
                                                    method="lora")), seen)
    assert params.learning_rate == 5e-4  # lora.lr, through the property
    assert seen == {"method", "lora.lr"}
    assert params.data.max_tokens == 64 and "data.max_tokens" in seen


# ---------------------------------------------------------------------------------------------
# End to end: what `dvc status` says after an edit

@pytest.mark.slow
def test_an_edit_stales_exactly_the_stages_that_run_the_code_or_read_the_key(tmp_path, tiny_dirs,
                                                                            data_dir):
    project = tiny.dvc_project(tmp_path / "project", tiny.tiny_params(tiny_dirs["gpt2"], data_dir))
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "run")

    def stale() -> set[str]:
        return set(json.loads(sh(project, "dvc", "status", "--json")))

    def edit(relative: str) -> None:
        path = project / relative
        path.write_text(path.read_text() + "\n# an edit\n")

    assert stale() == set()
    cases = {  # file edited -> the stages it makes stale
        "src/textclf/export/model_card.py": {"export"},
        "src/textclf/evaluate/plots.py": {"evaluate"},
        "src/textclf/evaluate/metrics.py": {"evaluate", "baseline"},  # the same metrics
        "src/textclf/baseline/tfidf.py": {"baseline"},
        "src/textclf/train/zero_shot.py": {"train"},
        "src/textclf/modeling/inference.py": {"train", "evaluate"},
        "src/textclf/core/tokenization.py": {"prepare", "train", "evaluate", "export"},  # not the
        # baseline: it reads the texts prepare wrote, never a tokenizer
        "src/textclf/cli/seeds.py": set(),  # the command-line tools are no stage's code
        "src/textclf/cli/predict.py": set(),
        "src/textclf/predictor.py": set(),
    }
    for relative, expected in cases.items():
        edit(relative)
        assert stale() == expected, relative
        sh(project, "git", "checkout", relative)
    # a key only some stages read
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value, expected in (("eval.bootstrap", 20, {"evaluate", "export", "baseline"}),
                                 ("baseline.min_df", 1, {"baseline"}),
                                 ("lora.r", 4, {"train", "export"}),
                                 ("data.val_fraction", 0.3, {"prepare", "export"}),
                                 ("train.mixed_precision", "fp32",
                                  {"train", "evaluate", "export"})):
        section, leaf = key.split(".")
        changed = json.loads(json.dumps(params))
        changed[section][leaf] = value
        (project / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        assert stale() == expected, key
    sh(project, "git", "checkout", "params.yaml")
    assert stale() == set()
