"""The benchmark machinery on a tiny Gemma-3-shaped checkpoint, one repeat: every engine reports
the fields, and the engines compute the same model (identical greedy tokens, matching prefill
logits). No timing assertions: speed lives in ``aapp-bench``."""

from __future__ import annotations

import json

import pytest

from aapp_export.bench import BenchPlan, genai_available, optimum_python, parse_count, run_benchmark
from aapp_export.synthetic import BENCH_SHAPES as SHAPES
from aapp_export.synthetic import bench_config_kwargs, gemma3_params, make_bench_checkpoint
from aapp_export.cli.bench import main as bench_main

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=16)
ENGINES = (("ours", "ours-onnx", "transformers") + (("genai-last",) if genai_available() else ())
           + (("optimum",) if optimum_python() else ()))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return make_bench_checkpoint(tmp_path_factory.mktemp("bench") / "ckpt", **TINY)


@pytest.fixture(scope="module")
def report(tiny_checkpoint, tmp_path_factory):
    # the prompt of 40 tokens is longer than the sliding window (16)
    plan = BenchPlan(prompt_lengths=(12, 40), decode_prompt=12, new_tokens=8, repeats=1, warmup=0, threads=1)
    return run_benchmark(tiny_checkpoint, tmp_path_factory.mktemp("work"), plan, ENGINES, log=lambda m: None)


def test_report_has_medians_spread_rss_and_machine(report):
    for engine in ENGINES:
        r = report["engines"][engine]
        for key in ("prefill_ms@12", "prefill_ms@40", "decode_ms_per_token"):
            assert r[key]["min"] <= r[key]["median"] <= r[key]["max"] and r[key]["n"] == 1
        assert r["peak_rss_mb"] > 10 and len(r["greedy_tokens"]) == 8
        assert r["rounds"][0]["wall_s"] > 0 and len(r["rounds"][0]["load_average_1m"]) == 2
    m = report["machine"]
    assert m["cores"] >= 1 and len(m["load_average_start"]) == 3 and m["onnxruntime"] and m["provider"]
    assert set(report["ratios"]["ours/transformers"]) == {"prefill_ms@12", "prefill_ms@40", "decode_ms_per_token",
                                                          "peak_rss"}
    assert report["graphs"]["ours"]["nodes"] > 0 and "com.microsoft.GroupQueryAttention" in report["graphs"]["ours"]["op_types"]
    assert "Attention" in report["graphs"]["ours-onnx"]["op_types"]
    assert report["shape"]["layer_types"] == "LLLG"
    if not genai_available():
        assert "genai" in report["skipped"] or "genai" not in ENGINES


def test_engines_agree_on_greedy_tokens_and_logits(report):
    ag = report["agreement"]
    assert ag["reference"] == "transformers" and ag["distinct_tokens"] > 1  # not one token repeated
    for engine in ENGINES[::-1]:
        if engine == "transformers":
            continue
        entry = ag[f"{engine}_vs_transformers"]
        assert entry["tokens_identical"] and entry["first_divergence"] is None, (engine, entry)
        assert entry["prefill_logits_max_abs_diff@40"] < 1e-4 and entry["prefill_top1_same@40"]
    if genai_available():
        assert ag["ours_vs_genai-last"]["tokens_identical"]


def test_params_target_picks_gemma3_shapes():
    small = bench_config_kwargs(120e6)
    assert small["hidden_size"] == 640 and small["num_hidden_layers"] == 18
    assert small["layer_types"].count("full_attention") == 3 and small["layer_types"][5] == "full_attention"
    assert abs(gemma3_params(SHAPES["270m"], 18) - 121.3e6) < 0.1e6
    big = bench_config_kwargs(300e6)
    assert big["hidden_size"] == 1152 and abs(gemma3_params(SHAPES["1b"], big["num_hidden_layers"]) - 300e6) < 20e6
    assert parse_count("120M") == 120e6 and parse_count("0.3B") == 300e6 and parse_count("1.5e8") == 1.5e8


def test_cli_writes_json_and_png(tiny_checkpoint, tmp_path, capsys):
    code = bench_main([str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--engines", "ours", "--repeats", "1",
                       "--warmup", "0", "--prompt-lengths", "8,16", "--new-tokens", "4", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engines"]["ours"]["decode_ms_per_token"]["n"] == 1
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["plan"]["repeats"] == 1
    assert (tmp_path / "out" / "bench.png").stat().st_size > 1000


def test_cli_bad_engine_is_one_line_error(tmp_path, capsys):
    assert bench_main(["--out", str(tmp_path), "--engines", "ours,onnx-magic"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("aapp-bench: error: --engines") and "\n" not in err


def test_pruned_bench_reports_levels_ceiling_bounds_and_rss(tiny_checkpoint, tmp_path, capsys):
    """aapp-bench --sparsity: exports (children), then dense, aapp levels and the static ceiling side by side."""
    calib = []
    for name, lines in (("harmful", ["How do I make a bomb?", "Steal a car"]), ("harmless", ["Bake bread", "Count"]),
                        ("text", ["The fox jumps over the dog.", "Plants turn light into sugar."])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
        calib += [f"--calib-{name}", str(tmp_path / f"{name}.txt")]
    args = [str(tiny_checkpoint), "--sparsity", "0,0.5", "--static-sparsity", "0.5", "--prompt-lengths", "8,24",
            "--new-tokens", "4", "--threads", "1", "--out", str(tmp_path), "--json", *calib, "--scorer", "actdiff"]
    assert bench_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["method"], r["sparsity"]): r for r in report["rows"]}
    assert set(rows) == {("dense", 0.0), ("aapp", 0.5), ("wanda-sp static", 0.5)}
    assert rows[("dense", 0.0)]["prefill_ratio"] == 1.0 and rows[("dense", 0.0)]["bytes_read_bound"] == 1.0
    for key in (("aapp", 0.5), ("wanda-sp static", 0.5)):
        assert 0.3 < rows[key]["bytes_read_bound"] < 0.95 and rows[key]["decode_ms_per_token"]["median"] > 0
    aapp = rows[("aapp", 0.5)]
    assert aapp["probe_projection_ms"] >= 0 and 0 < aapp["probe_share_of_prefill"] < 1
    assert report["peak_rss_mb"] > report["rss_before_load_mb"] > 0 and report["rss_over_dense_weights"] > 0.5
    by_level = report["rss_over_dense_weights_by_level"]
    assert set(by_level) == {"0", "0.5"} and by_level["0"] <= by_level["0.5"] <= report["rss_over_dense_weights"]
    assert (tmp_path / "bench_pruned.png").is_file() and (tmp_path / "bench_pruned.json").is_file()
    assert bench_main([str(tiny_checkpoint), "--sparsity", "0,0.95", "--out", str(tmp_path)]) == 2
