"""`textclf seeds` groups runs that differ only in their seed, from `dvc exp show --json` rows."""

from textclf.commands.seeds import seed_groups


def run(seed: int, accuracy: float, **params) -> dict:
    return {"name": f"exp-{seed}", "params": {"seed": seed, "model": "gpt2", "method": "lora",
                                              **params},
            "metrics": {"accuracy": accuracy}}


def test_a_key_set_to_its_default_matches_the_key_left_out():
    # params.yaml may hold lora.r in one experiment (`-S +lora.r=8`, the default) and not in
    # another: the same configuration
    (group,) = seed_groups([run(1, 0.80, lora={"r": 8}), run(2, 0.90, lora={})])
    assert group["seeds"] == [1, 2] and group["method"] == "lora"
    assert group["accuracy"]["mean"] == 0.85


def test_runs_that_differ_in_more_than_the_seed_are_apart():
    assert seed_groups([run(1, 0.80, lora={"r": 16}), run(2, 0.90, lora={})]) == []
