"""The export's memory plan: parameter counts against hand counts, the advice when a machine is too
small (simulated with AAPP_MEMORY_BYTES), and --plan changing nothing."""

from __future__ import annotations

from aapp_export.families import load_model_spec
from aapp_export.plan import GIB, parameter_counts, plan_export


def test_parameter_counts_equal_the_checkpoint(checkpoints):
    from safetensors.torch import load_file

    for fam, ckpt in checkpoints.items():
        spec = load_model_spec(ckpt)
        tensors = load_file(str(ckpt / "model.safetensors"))
        # the checkpoint's own count: every tensor except the final norm (the plan counts 4 norms a layer,
        # Gemma's 4 and Llama/Qwen's 2 plus q/k-norm-free biases alike: within a hidden vector per layer)
        total = sum(t.numel() for t in tensors.values())
        counts = parameter_counts(spec)
        assert abs(counts["total"] - total) <= (spec.num_layers * 4 + 1) * spec.hidden_size + \
            sum(t.numel() for n, t in tensors.items() if n.endswith("bias")), fam
        assert counts["embeddings"] == spec.vocab_size * spec.hidden_size
        assert (counts["lm_head"] == 0) == spec.tie_word_embeddings


def test_a_machine_too_small_is_told_what_fits_before_anything_is_written(checkpoints, tmp_path, monkeypatch, capsys):
    from aapp_export.cli.export import main

    spec = load_model_spec(checkpoints["llama"])
    fp32 = plan_export(spec, "fp32", "fp32", "fp32", None, tmp_path)
    bf16 = plan_export(spec, "fp32", "fp32", "bf16", None, tmp_path)
    assert bf16.calibration["history statistics"] < fp32.calibration["history statistics"]
    assert fp32.calibration["grad-act backward"] > fp32.calibration["circuit activations"]
    assert "grad-act backward" not in plan_export(spec, "fp32", "fp32", "fp32", "refusal-dir", tmp_path).calibration
    monkeypatch.setenv("AAPP_MEMORY_BYTES", str(int(0.5 * GIB)))
    out = tmp_path / "m" / "model.onnx"
    assert main([f"--model={checkpoints['llama']}", f"--out={out}"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not fit this machine" in err and "GiB is available" in err
    assert "--no-calibrate" in err and not out.parent.exists() and list(tmp_path.iterdir()) == []
    assert main([f"--model={checkpoints['llama']}", f"--out={out}", "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "calibration (bf16, cpu) history statistics" in printed and "does not fit" in printed  # auto chose bf16
    assert not out.parent.exists()
    monkeypatch.setenv("AAPP_MEMORY_BYTES", str(64 * GIB))
    assert main([f"--model={checkpoints['llama']}", f"--out={out}", "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "calibration (fp32, cpu)" in printed and printed.strip().endswith("fits")


def test_calibration_on_cuda_counts_the_gpus_and_host_the_graph_build_host_only(checkpoints, tmp_path, monkeypatch):
    """device_map="auto" spreads calibration over the GPUs and offloads past them to host memory; the
    graph build has host memory only."""
    import dataclasses

    spec = load_model_spec(checkpoints["llama"])
    monkeypatch.setenv("AAPP_GPU_MEMORY_BYTES", str(9 * GIB))
    on_gpu = plan_export(spec, "fp32", "fp32", "bf16", None, tmp_path, calibration_device="cuda")
    assert on_gpu.gpu_memory == 9 * GIB and "GiB GPU" in "\n".join(on_gpu.lines())
    assert plan_export(spec, "fp32", "fp32", "bf16", None, tmp_path).gpu_memory == 0  # cpu: GPUs not counted
    sized = dict(graph_build=1 * GIB, calibration={"grad-act backward": 10 * GIB}, memory_available=2 * GIB,
                 disk_free=0)
    fits = dataclasses.replace(on_gpu, **sized)
    assert fits.problems() == []  # 11 GiB with the margin: 9 on the GPUs + 2 on the host
    gpu_short = dataclasses.replace(fits, gpu_memory=8 * GIB)
    assert "grad-act backward" in gpu_short.problems()[0] and "(GPUs + host)" in gpu_short.problems()[0]
    host_short = dataclasses.replace(fits, memory_available=int(0.5 * GIB), gpu_memory=100 * GIB)
    assert host_short.problems()[0].startswith("graph build needs")  # the GPUs do not help the graph build
    on_cpu = dataclasses.replace(fits, calibration_device="cpu", gpu_memory=0)
    assert "--device cuda" in on_cpu.problems()[0] and "--calib-dtype" not in on_cpu.problems()[0]


def test_the_advice_names_the_flags_whose_plan_fits(checkpoints, tmp_path):
    """Each memory-saving flag has its own planned peak; only those that fit are offered (a flag
    that fits alone is not offered again combined), and when none does, the smallest need is said."""
    import dataclasses

    spec = load_model_spec(checkpoints["llama"])
    plan = plan_export(spec, "fp32", "fp32", "fp32", None, tmp_path)
    assert set(plan.alternatives) == {"--calib-dtype bf16", "--scorer refusal-dir",
                                      "--calib-dtype bf16 --scorer refusal-dir", "--no-calibrate (dense only)"}
    assert plan.alternatives["--calib-dtype bf16 --scorer refusal-dir"] <= plan.alternatives["--calib-dtype bf16"]
    sized = dataclasses.replace(plan, graph_build=1 * GIB, calibration={"grad-act backward": 8 * GIB},
                                memory_available=6 * GIB, disk_free=0,
                                alternatives={"--calib-dtype bf16": 5 * GIB, "--scorer refusal-dir": 7 * GIB,
                                              "--calib-dtype bf16 --scorer refusal-dir": 4 * GIB,
                                              "--no-calibrate (dense only)": 1 * GIB})
    advice = sized.problems()[0]
    assert "--calib-dtype bf16 (5.5 GiB)" in advice and "--no-calibrate (dense only) (1.1 GiB)" in advice
    assert "refusal-dir" not in advice  # alone it does not fit; combined, bf16 alone already does
    nothing = dataclasses.replace(sized, memory_available=int(0.5 * GIB))
    assert "(even --no-calibrate (dense only) needs 1.1 GiB)" in nothing.problems()[0]
