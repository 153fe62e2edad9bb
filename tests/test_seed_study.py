"""scripts/seed_study.py: every step runs once per checkpoint and calibration code, a rerun resumes where
a stopped one stood, a failed step is tried again, and the pooled summary waits for every seed."""

from __future__ import annotations

import json
import sys

import pytest

import seed_study


def _seeds(root, names=("0", "1")):
    for n in names:
        d = root / f"seed{n}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / seed_study.WEIGHTS).write_bytes(f"weights of seed {n}".encode())
    return seed_study.find_seeds(root)


@pytest.fixture()
def fake_steps(monkeypatch):
    """Each step writes its file with a one-line python command; ``fail`` names steps that exit 1."""
    fail: set[str] = set()
    real = seed_study.step_command

    def command(step, checkpoint, out):
        _, output = real(step, checkpoint, out)
        code = "import sys; sys.exit(1)" if step in fail else f"open({str(output)!r}, 'w').write('{{}}')"
        return [sys.executable, "-c", code], output

    monkeypatch.setattr(seed_study, "step_command", command)
    return fail


def _run(seeds, tmp_path, **kw):
    kw = dict(force=False, plan=False, cache_version=11, report=lambda m: None) | kw
    return {n: seed_study.run_seed(n, ck, tmp_path / "out" / f"gpu_seed{n}", tmp_path / "logs", list(seed_study.STEPS),
                                   **kw) for n, ck in seeds.items()}


def test_a_rerun_skips_what_is_done_for_these_weights_and_this_calibration(tmp_path, fake_steps):
    seeds = _seeds(tmp_path / "seeds")
    first = _run(seeds, tmp_path)
    assert all(r["rc"] == 0 and not r.get("skipped") for s in first.values() for r in s.values())
    stamp = json.loads((tmp_path / "out" / "gpu_seed0" / seed_study.STAMP).read_text())
    assert set(stamp["steps"]) == set(seed_study.STEPS) and stamp["weights_sha256"] == seed_study.weights_sha256(seeds["0"])
    assert all(r.get("skipped") for s in _run(seeds, tmp_path).values() for r in s.values())
    # a newer calibration code: every result is of the old one, so every step runs again
    assert not any(r.get("skipped") for r in _run(seeds, tmp_path, cache_version=12)["0"].values())
    # another checkpoint in seed1's folder (a new device call): its old results do not count
    (seeds["1"] / seed_study.WEIGHTS).write_bytes(b"retrained")
    again = _run(seeds, tmp_path, cache_version=12)
    assert all(r.get("skipped") for r in again["0"].values()) and not any(r.get("skipped") for r in again["1"].values())
    # a result file removed by hand is measured again, the rest is not
    (tmp_path / "out" / "gpu_seed0" / "risk_gate.json").unlink()
    rerun = _run(seeds, tmp_path, cache_version=12)["0"]
    assert [s for s, r in rerun.items() if not r.get("skipped")] == ["risk_gate"]
    # --force runs everything; --plan nothing
    assert not any(r.get("skipped") for r in _run(seeds, tmp_path, cache_version=12, force=True)["0"].values())
    (tmp_path / "out" / "gpu_seed0" / "table.json").unlink()
    planned = _run(seeds, tmp_path, cache_version=13, plan=True)["0"]
    assert all("would_run" in r for r in planned.values())
    assert not (tmp_path / "out" / "gpu_seed0" / "table.json").exists()
    stamp = json.loads((tmp_path / "out" / "gpu_seed0" / seed_study.STAMP).read_text())
    assert {r["cache_version"] for r in stamp["steps"].values()} == {12}


def test_a_failed_step_is_tried_again_and_blocks_the_summary(tmp_path, fake_steps):
    seeds = _seeds(tmp_path / "seeds")
    fake_steps.add("eval_val2")
    first = _run(seeds, tmp_path)
    assert first["0"]["eval_val2"]["rc"] == 1 and first["0"]["table"]["rc"] == 0
    assert seed_study.summary_command(seeds, tmp_path / "out", tmp_path / "shipped") is None
    fake_steps.clear()
    second = _run(seeds, tmp_path)
    assert [s for s, r in second["0"].items() if not r.get("skipped")] == ["eval_val2"]
    command = seed_study.summary_command(seeds, tmp_path / "out", tmp_path / "shipped")
    assert command[1] == "scripts/seed_summary.py"
    assert command[command.index("--mean") + 1] == "0 (GPU),1 (GPU)"
    assert f"1 (GPU)={tmp_path / 'out' / 'gpu_seed1'}" in command


def test_the_real_commands_and_the_errors(tmp_path, capsys):
    cmd, out = seed_study.step_command("eval_val2", tmp_path / "seed0", tmp_path / "gpu_seed0")
    assert cmd[1:5] == ["scripts/eval_splits.py", "--model", str(tmp_path / "seed0"), "--splits"]
    assert out == tmp_path / "gpu_seed0" / "eval_val2.json" and str(out) in cmd
    for step in seed_study.STEPS:  # every script the steps name exists
        assert (seed_study.ROOT / seed_study.step_command(step, tmp_path, tmp_path)[0][1]).is_file()
    assert seed_study.main(["--seeds-dir", str(tmp_path / "none")]) == 2
    assert "seed_checkpoints.py --from" in capsys.readouterr().err
    _seeds(tmp_path / "seeds", ("0",))
    assert seed_study.main(["--seeds-dir", str(tmp_path / "seeds"), "--seeds", "0,5"]) == 2
    assert "['5']" in capsys.readouterr().err
    assert seed_study.main(["--seeds-dir", str(tmp_path / "seeds"), "--steps", "table,tables"]) == 2
    assert "['tables']" in capsys.readouterr().err


@pytest.fixture()
def fake_training(monkeypatch):
    """``train_command`` replaced by one that writes a checkpoint into the partial folder, or exits 1."""
    fail: set[str] = set()
    real = seed_study.train_command

    def command(seed, seeds_dir):
        _, partial = real(seed, seeds_dir)
        code = ("import sys; sys.exit(1)" if seed in fail else
                f"import pathlib; p = pathlib.Path({str(partial)!r}); p.mkdir(parents=True); "
                f"(p / 'config.json').write_text('{{}}'); (p / {seed_study.WEIGHTS!r}).write_text('seed {seed}'); "
                f"(p / 'training.json').write_text('{{\"train_seed\": {seed}}}')")
        return [sys.executable, "-c", code], partial

    monkeypatch.setattr(seed_study, "train_command", command)
    return fail


def _final(printed: str) -> dict:
    """The whole record ``main`` prints last (indented), after the one-line records."""
    return json.loads(printed[printed.index('{\n "seeds"'):])


def test_fp32_seeds_are_trained_here_once_then_studied(tmp_path, fake_steps, fake_training, capsys):
    seeds_dir, out = tmp_path / "fp32", tmp_path / "out"
    argv = ["--kind", "fp32", "--seeds-dir", str(seeds_dir), "--out", str(out), "--logs", str(tmp_path / "logs"),
            "--shipped", str(tmp_path / "shipped"), "--train", "0,1"]
    fake_training.add("1")
    assert seed_study.main(argv) == 1  # seed 1's training failed
    first = _final(capsys.readouterr().out)
    assert first["seeds"]["0"]["train"]["rc"] == 0 and first["seeds"]["1"]["train"]["rc"] == 1
    assert set(first["seeds"]["1"]) == {"train"} and first["summary"] == "not pooled: failed steps seed1/train"
    assert set(seed_study.find_seeds(seeds_dir)) == {"0"}  # a failed training leaves no checkpoint behind
    assert (out / "fp32_seed0" / "table.json").is_file() and not (out / "fp32_seed1").exists()
    kept = json.loads((out / "fp32_seed0" / "training.json").read_text())  # the record is kept, the weights not
    assert kept == {"train_seed": 0, "weights_sha256": seed_study.weights_sha256(seeds_dir / "seed0")}
    fake_training.clear()
    assert seed_study.main(argv + ["--plan"]) == 0
    plan = _final(capsys.readouterr().out)
    assert plan["seeds"]["0"]["train"]["skipped"] and all(r["skipped"] for s, r in plan["seeds"]["0"].items())
    assert "seed1.partial" in plan["seeds"]["1"]["train"]["would_run"] and not (seeds_dir / "seed1.partial").exists()
    assert set(plan["seeds"]["1"]) == {"train"}  # nothing to study before it is trained
    assert seed_study.main(argv) == 0
    second = _final(capsys.readouterr().out)
    assert second["seeds"]["0"]["train"]["skipped"] and second["seeds"]["1"]["train"]["rc"] == 0
    assert all(second["seeds"]["1"][s]["rc"] == 0 for s in seed_study.STEPS)
    assert second["summary"].startswith(("pooled into", "seed_summary.py failed"))  # pooling was tried: all have tables
    assert set(seed_study.find_seeds(seeds_dir)) == {"0", "1"}
    command = seed_study.summary_command(["0", "1"], out, tmp_path / "shipped", seed_study.KINDS["fp32"])
    assert command[command.index("--mean") + 1] == "0 (CPU fp32),1 (CPU fp32)"
    assert command[-1] == str(out / "fp32_summary") and f"1 (CPU fp32)={out / 'fp32_seed1'}" in command


def test_the_training_command_is_the_recipe_in_fp32(tmp_path, capsys):
    cmd, partial = seed_study.train_command("2", tmp_path)
    assert cmd[1:3] == ["scripts/train_demo_model.py", "--no-bf16"] and partial == tmp_path / "seed2.partial"
    assert cmd[cmd.index("--train-seed") + 1] == "2" and cmd[cmd.index("--stage1-cache") + 1] == str(tmp_path / "stage1_cache")
    assert seed_study.main(["--seeds-dir", str(tmp_path), "--train", "0"]) == 2
    assert "pass --kind fp32" in capsys.readouterr().err
    assert seed_study.main(["--kind", "fp32", "--seeds-dir", str(tmp_path), "--train", "0,x"]) == 2
    assert "not a comma list of seed numbers" in capsys.readouterr().err
    (tmp_path / "seed0.partial").mkdir()  # a stopped training's folder is no checkpoint
    assert seed_study.find_seeds(tmp_path, required=False) == {}


def test_a_seed_studied_earlier_is_pooled_without_its_checkpoint(tmp_path, fake_steps, fake_training, capsys,
                                                                  monkeypatch):
    """The checkpoints are not committed: a later session holds seed 0's results but not its weights."""
    seeds_dir, out = tmp_path / "fp32", tmp_path / "out"
    argv = ["--kind", "fp32", "--seeds-dir", str(seeds_dir), "--out", str(out), "--logs", str(tmp_path / "logs"),
            "--shipped", str(tmp_path / "shipped")]
    assert seed_study.main(argv + ["--train", "0"]) == 0
    capsys.readouterr()
    (out / "fp32_seed7").mkdir()  # a folder without results keeps the summary waiting, as a seed without a table
    (out / "fp32_seedx").mkdir()  # not a seed folder: ignored
    assert seed_study.studied_seeds(out, seed_study.KINDS["fp32"]) == ["0", "7"]
    (out / "fp32_seed7").rmdir()
    for f in (seeds_dir / "seed0").iterdir():
        f.unlink()
    (seeds_dir / "seed0").rmdir()
    pooled = []
    real = seed_study.summary_command
    monkeypatch.setattr(seed_study, "summary_command", lambda seeds, *a: pooled.append(list(seeds)) or real(seeds, *a))
    assert seed_study.main(argv + ["--train", "1", "--seeds", "1"]) == 0
    record = _final(capsys.readouterr().out)
    assert set(record["seeds"]) == {"1"} and record["summary"].startswith(("pooled into", "seed_summary.py failed"))
    assert pooled == [["0", "1"]]  # seed 0 from its results, seed 1 from its new checkpoint


@pytest.mark.parametrize("script", sorted(seed_study.POOLED_STUDIES))
def test_the_pooled_comparisons_run_over_the_seeds_with_a_report(tmp_path, script):
    out, shipped, fp32 = tmp_path / "out", tmp_path / "shipped", seed_study.KINDS["fp32"]
    flag, name = seed_study.POOLED_STUDIES[script]
    assert seed_study.pooled_study_command(script, ["0", "1"], out, shipped, fp32) is None  # no report yet
    (out / "fp32_seed1").mkdir(parents=True)
    (out / "fp32_seed1" / name).write_text("{}")
    command = seed_study.pooled_study_command(script, ["0", "1"], out, shipped, fp32)
    assert command[1] == f"scripts/{script}" and command[-1] == str(out / "fp32_summary")
    assert command[command.index(flag) + 1:-2] == [str(out / "fp32_seed1" / name)]
    shipped.mkdir()
    (shipped / name).write_text("{}")
    command = seed_study.pooled_study_command(script, ["0", "1"], out, shipped, fp32)
    assert command[command.index(flag) + 1] == str(shipped / name)
    assert (seed_study.ROOT / command[1]).is_file()
