"""`textclf seeds` groups runs that differ only in their seed, from `dvc exp show --json` rows."""

from textclf.cli.seeds import seed_groups


def run(seed: int, accuracy: float, **params) -> dict:
    return {"name": f"exp-{seed}", "params": {"seed": seed, "model": "gpt2", "method": "lora",
                                              **params},
            "metrics": {"accuracy": accuracy}}


def test_runs_with_the_same_params_but_the_seed_form_a_group():
    (group,) = seed_groups([run(1, 0.80, lora={"r": 8}), run(2, 0.90, lora={"r": 8})])
    assert group["seeds"] == [1, 2] and group["method"] == "lora"
    assert group["accuracy"]["mean"] == 0.85


def test_a_run_without_a_seed_is_left_out_not_a_crash():
    # a params file that leaves `seed` out (as the old split params.yaml could)
    no_seed = run(3, 0.70, lora={"r": 8})
    del no_seed["params"]["seed"]
    (group,) = seed_groups([run(1, 0.80, lora={"r": 8}), run(2, 0.90, lora={"r": 8}), no_seed])
    assert group["seeds"] == [1, 2]


def test_runs_that_differ_in_more_than_the_seed_are_apart():
    assert seed_groups([run(1, 0.80, lora={"r": 16}), run(2, 0.90, lora={})]) == []
