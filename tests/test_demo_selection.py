"""Choosing the demo checkpoint: by the second and third held-out sets pooled, recipe first (mean over its seeds), then seed."""

from __future__ import annotations




def _result(val: tuple[float, float, float], val2: tuple[float, float, float], n: tuple[int, int] = (48, 96)) -> dict:
    out = {}
    for suffix, rates, count in (("val", val, n[0]), ("val2", val2, n[1])):
        for kind, rate in zip(("harmful", "harmless", "borderline"), rates):
            out[f"{kind}_{suffix}"] = {"refusal_rate": rate, "n": count}
    return out


def _row(folder: str, recipe: str, seed: int, harmful: float, harmless: float, borderline: float) -> dict:
    from demo_model.select import score

    result = _result((harmful, harmless, borderline), (harmful, harmless, borderline))
    return {"folder": folder, "recipe": recipe, "train_seed": seed, "score": score(result), "steps": 5220,
            "harmful_test": 0.9, "harmless_test": 0.0, "borderline_test": 0.1,
            **{k: v["refusal_rate"] for k, v in result.items()}}


def test_score_pools_the_two_sets_prompt_by_prompt():
    from demo_model.select import score

    # 48 prompts at 0.5 and 96 at 0.8 pool to 0.7 (not the 0.65 of averaging the two rates)
    result = _result((0.5, 0.0, 0.25), (0.8, 0.1, 0.0))
    assert score(result) == round(0.7 - (0.1 * 96 / 144) - (0.25 * 48 / 144), 4) == 0.55
    assert score(result, ("val",)) == 0.25  # the earlier rule: the second set alone
    assert score(result, ("val2",)) == 0.7


def test_one_lucky_seed_does_not_pick_the_recipe():
    from demo_model.select import choose

    rows = [_row("a0", "base", 0, 0.9, 0.0, 0.1), _row("a1", "base", 1, 0.5, 0.2, 0.3),  # 0.8 and 0.0: mean 0.4
            _row("b0", "look-alikes", 0, 0.8, 0.1, 0.2), _row("b1", "look-alikes", 1, 0.8, 0.0, 0.1)]  # 0.5, 0.7
    chosen, means = choose(rows)
    assert chosen["folder"] == "b1"  # the best single candidate (a0, 0.8) belongs to the worse recipe
    assert means["base"]["score"] == 0.4 and means["look-alikes"]["score"] == 0.6 and means["base"]["seeds"] == 2
    assert means["look-alikes"]["harmless_val"] == 0.05


def test_a_recipe_tried_on_fewer_seeds_does_not_compete():
    from demo_model.select import choose

    rows = [_row("a0", "base", 0, 0.8, 0.0, 0.1), _row("a1", "base", 1, 0.8, 0.0, 0.2),  # 0.7, 0.6
            _row("c0", "longer", 0, 0.9, 0.0, 0.0)]  # 0.9 on its only seed
    chosen, means = choose(rows)
    assert chosen["folder"] == "a0" and means["longer"]["seeds"] == 1 and means["longer"]["score"] == 0.9
    chosen, _ = choose(rows + [_row("c1", "longer", 1, 0.6, 0.0, 0.2)])  # its second seed: mean 0.65
    assert chosen["folder"] == "a0"
    chosen, _ = choose(rows + [_row("c1", "longer", 1, 0.8, 0.0, 0.1)])  # mean 0.8: now it wins
    assert chosen["folder"] == "c0"


def test_a_recipe_over_the_training_budget_cannot_be_chosen():
    import pytest

    from demo_model.select import choose

    long = [dict(_row(f"c{s}", "longer", s, 0.9, 0.0, 0.0), steps=5460) for s in (0, 1)]
    rows = [_row("a0", "base", 0, 0.8, 0.0, 0.1), _row("a1", "base", 1, 0.8, 0.0, 0.2)] + long
    assert choose(rows)[0]["folder"] == "c0"  # no budget: the longer recipe wins
    chosen, means = choose(rows, max_steps=5220)
    assert chosen["folder"] == "a0" and not means["longer"]["within_budget"] and means["base"]["within_budget"]
    with pytest.raises(ValueError, match="5000 steps"):
        choose(long, max_steps=5000)


def test_recipe_names_come_from_the_training_record():
    from demo_model.select import recipe

    s1 = {"lr": 2e-3, "steps": 2800}
    assert recipe({"stage1": s1, "stage2": {"steps": 480, "lookalikes": 0}}) == "base, 2800 + 480 steps"
    assert recipe({"stage1": s1, "stage2": {"steps": 720, "lookalikes": 759, "align_harmful": 748,
                                            "replay_per_harmful": 2.0, "lr": 1e-3}}) == \
        "759 look-alikes + wider harmful, 2800 + 720 steps"
    assert recipe({"stage1": s1, "stage2": {"steps": 480, "lookalikes": 380, "replay_per_harmful": 1.5}}) == \
        "380 look-alikes, 2800 + 480 steps, replay 1.5"
    assert recipe({"stage1": s1, "stage2": {"steps": 720, "lookalikes": 759, "mirrors": 501, "replay_per_harmful": 2.25,
                                            "lr": 5e-4}}) == "759 look-alikes + 501 mirrors, 2800 + 720 steps, replay 2.25, lr 0.0005"
