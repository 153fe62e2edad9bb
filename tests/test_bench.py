"""The benchmark machinery on a tiny checkpoint: every engine reports the fields, and the engines
compute the same model (identical greedy tokens). No timing assertions: speed lives in aapp-bench."""

from __future__ import annotations

import json

import pytest

from aapp_export.benchmark import ENGINES, BenchPlan, genai_available, run_benchmark
from aapp_export.cli.bench import main as bench_main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from aapp_export.synthetic import make_checkpoint

    root = tmp_path_factory.mktemp("bench")
    # default RoPE on both layer kinds (like Gemma-3-270M/1B): onnxruntime-genai 0.18 disagrees with
    # transformers from the first token when the global layers use linear RoPE scaling (4B and larger)
    plain_rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                  "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
    ckpt = make_checkpoint(root / "ckpt", "gemma3", rope_parameters=plain_rope)
    plan = BenchPlan(prompt_lengths=(12, 40), decode_prompt=12, new_tokens=8, repeats=2, warmup=1)
    return run_benchmark(ckpt, root / "work", plan, ENGINES, log=lambda m: None)


def test_report_has_medians_spread_rss_and_machine(report):
    for engine in ("ours", "transformers"):
        r = report["engines"][engine]
        for key in ("prefill_ms@12", "prefill_ms@40", "decode_ms_per_token"):
            assert r[key]["min"] <= r[key]["median"] <= r[key]["max"] and r[key]["n"] == 2
        assert r["peak_rss_mb"] > 10 and len(r["greedy_tokens"]) == 8
    assert report["machine"]["cores"] >= 1 and "load_average" in report["machine"]
    assert set(report["ratios"]["ours/transformers"]) >= {"prefill_ms@12", "decode_ms_per_token", "peak_rss"}


def test_engines_agree_on_greedy_tokens(report):
    assert report["greedy_agreement"]["ours_vs_transformers"]["identical"]
    if genai_available():
        assert report["greedy_agreement"]["ours_vs_genai"]["identical"]
    else:
        assert "genai" in report["skipped"]


def test_cli_writes_json_and_png(tmp_path, capsys):
    from aapp_export.synthetic import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "ckpt", "llama")
    code = bench_main([str(ckpt), "--out", str(tmp_path / "out"), "--engines", "ours", "--repeats", "1",
                       "--prompt-lengths", "8,16", "--new-tokens", "4", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engines"]["ours"]["decode_ms_per_token"]["n"] == 1
    assert (tmp_path / "out" / "bench.png").stat().st_size > 1000
