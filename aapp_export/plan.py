"""Memory and disk plan of an export, from the checkpoint's config alone (``aapp-export --plan``), and
the check that stops an export the machine cannot hold before anything is loaded or written.

Estimates (bytes; ``c`` the calibration dtype's size, B the calibration batch, T its tokens):

- **graph build**: the weights stream tensor by tensor into the data file, so the peak is the
  process (``BASE``) plus the largest tensor read and converted (twice its size in the export dtype,
  plus its checkpoint copy);
- **calibration**: ``BASE`` + every weight in the calibration dtype + the largest step of:
  statistics (a forward of B x ``MAX_POSITIONS`` tokens, no gradients: one layer's activations, fp32
  copies of the recorded inputs, the running sums), circuit activations (every layer's last-token
  residuals are small; the forward's transients as above at the chat prompts' length), and, for
  grad-act, the backward of B chat prompts (every layer's saved activations and the recorded inputs'
  gradients; the weights' gradients are never computed), and the causal check (a batch's forward and
  its KV cache over the greedy answers);
- **model dir**: every weight in the export dtype, the calibration statistics, the graphs' protos.

Calibration on ``cuda`` places the model with ``device_map="auto"``: its steps are compared with the
GPUs' free memory plus host memory (accelerate offloads past the GPUs), the graph build with host
memory alone. ``AAPP_MEMORY_BYTES`` (and ``AAPP_GPU_MEMORY_BYTES``) override what the machine reports
(tests; a container that misreports).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .choices import CHECK_TOKENS
from .families import ModelSpec

GIB = 1 << 30
BASE = int(0.9 * GIB)  # an allowance for python + torch + transformers + onnx themselves
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
CALIB_BATCH = 16
CALIB_TOKENS = 256  # MAX_POSITIONS of the history statistics
CHAT_TOKENS = 64  # a calibration prompt with its chat template, generously
MARGIN = 1.1  # what the plan asks of the machine on top of its estimate
BACKWARD_SCORERS = (None, "grad-act", "pruned-grad-act", "pruned-grad-opening")  # scorers whose calibration runs a backward pass
ANSWER_SCORERS = (None, "pruned-grad-opening")  # ... over the prompt and the dense answer's opening (CHECK_TOKENS at most)


def parameter_counts(spec: ModelSpec) -> dict[str, int]:
    """Parameters of the text model by part (the LM head only when it is not tied)."""
    h, d = spec.hidden_size, spec.head_dim
    layers = sum(h * d * (2 * l.num_heads + 2 * l.num_kv_heads) + 3 * h * l.intermediate_size + 4 * h
                 for l in spec.layers)
    embed = spec.vocab_size * h
    return {"embeddings": embed, "layers": layers, "lm_head": 0 if spec.tie_word_embeddings else embed,
            "total": embed + layers + (0 if spec.tie_word_embeddings else embed)}


def _largest_tensor(spec: ModelSpec) -> int:
    widest = max(max(l.intermediate_size, l.num_heads * spec.head_dim) for l in spec.layers)
    return max(spec.vocab_size, widest) * spec.hidden_size


def _forward_transient(spec: ModelSpec, batch: int, tokens: int, c: int) -> int:
    """One layer's activations in a no-gradient forward, with the recorder's fp32 copies."""
    wide = max(l.intermediate_size for l in spec.layers)
    heads = max(l.num_heads for l in spec.layers)
    per_token = (3 * wide + 6 * spec.hidden_size) * c + 3 * wide * 4 + heads * spec.head_dim * 4
    return batch * tokens * per_token + batch * heads * tokens * tokens * 4


def _backward(spec: ModelSpec, batch: int, tokens: int, c: int) -> int:
    """Activations a backward through every layer keeps, and the recorded inputs' gradients."""
    total = 0
    for l in spec.layers:
        q = l.num_heads * spec.head_dim
        per_token = (8 * spec.hidden_size + 2 * q + 4 * l.intermediate_size) * c + 2 * (q + l.intermediate_size) * 4
        total += batch * tokens * per_token + batch * l.num_heads * tokens * tokens * 4
    return total + batch * tokens * spec.hidden_size * 4 * (spec.num_layers + 1)


@dataclass
class ExportPlan:
    """What an export needs (bytes) and what the machine has."""

    params: dict[str, int]
    checkpoint_dtype: str
    export_dtype: str
    calibration_dtype: str | None  # None: no calibration
    scorer: str | None
    graph_build: int
    calibration: dict[str, int] = field(default_factory=dict)
    model_dir: int = 0
    memory_available: int = 0
    disk_free: int = 0
    calibration_device: str = "cpu"
    gpu_memory: int = 0  # free bytes over the visible GPUs (calibration on cuda)
    alternatives: dict[str, int] = field(default_factory=dict)  # flags -> the peak they would give
    export_dtype_reason: str = ""  # why this export dtype (precision.choose_export_dtype)

    @property
    def peak(self) -> int:
        return max([self.graph_build, *self.calibration.values()])

    def problems(self) -> list[str]:
        """What does not fit, each with the flags that would."""
        out = []
        on_gpu = self.calibration_device == "cuda"
        calibration = max(self.calibration.values()) if self.calibration else 0
        room = self.memory_available + (self.gpu_memory if on_gpu else 0)
        # the graph build runs in host memory; calibration on cuda also has the GPUs
        if on_gpu and self.memory_available and self.graph_build * MARGIN > self.memory_available:
            need, available, step = int(self.graph_build * MARGIN), self.memory_available, "graph build"
        elif self.memory_available and not on_gpu and self.peak * MARGIN > self.memory_available:
            step = max(self.calibration, key=self.calibration.get) if calibration >= self.graph_build else "graph build"
            need, available = int(self.peak * MARGIN), self.memory_available
        elif self.memory_available and on_gpu and calibration * MARGIN > room:
            step = max(self.calibration, key=self.calibration.get)
            need, available = int(calibration * MARGIN), room
        else:
            step = None
        if step is not None:
            # the flags whose plan fits (the cheapest of the calibration ones first), then the GPU
            fixes, chosen = [], []
            for flags, peak in self.alternatives.items():
                fits = peak * MARGIN <= (available if step == "graph build" or not on_gpu else room)
                if fits and not any(set(c.split()) <= set(flags.split()) for c in chosen):  # not a superset
                    chosen.append(flags)
                    fixes.append(f"{flags} ({peak * MARGIN / GIB:.1f} GiB)")
            if not chosen and self.alternatives:  # nothing fits here: say what the smallest would need
                flags, peak = min(self.alternatives.items(), key=lambda kv: kv[1])
                fixes.append(f"(even {flags} needs {peak * MARGIN / GIB:.1f} GiB)")
            if not on_gpu and self.calibration:
                fixes.append("--device cuda (on a machine with GPUs)")
            fixes.append("a machine with more memory")
            where = " (GPUs + host)" if on_gpu and step != "graph build" else ""
            out.append(f"{step} needs about {need / GIB:.1f} GiB but {available / GIB:.1f} GiB is "
                       f"available{where}; try {', '.join(fixes)}")
        if self.disk_free and self.model_dir * MARGIN > self.disk_free:
            out.append(f"the model dir needs about {self.model_dir / GIB:.1f} GiB but {self.disk_free / GIB:.1f} GiB "
                       "is free there; free disk space, choose another --out, or a half-precision --dtype (bf16 for "
                       "CUDA; fp16 where the family stays in range)")
        return out

    def lines(self) -> list[str]:
        p = self.params
        rows = [f"parameters: {p['total'] / 1e9:.2f} B (embeddings {p['embeddings'] / 1e9:.2f} B, layers "
                f"{p['layers'] / 1e9:.2f} B, untied LM head {p['lm_head'] / 1e9:.2f} B); checkpoint "
                f"{self.checkpoint_dtype}, export {self.export_dtype}"
                + (f" ({self.export_dtype_reason})" if self.export_dtype_reason else ""),
                f"graph build peak: {self.graph_build / GIB:.1f} GiB (weights stream tensor by tensor)"]
        for step, value in self.calibration.items():
            rows.append(f"calibration ({self.calibration_dtype}, {self.calibration_device}) {step}: {value / GIB:.1f} GiB")
        rows.append(f"model dir: {self.model_dir / GIB:.1f} GiB; free disk there: {self.disk_free / GIB:.1f} GiB")
        rows.append(f"peak: {self.peak / GIB:.1f} GiB (+{MARGIN - 1:.0%} margin); memory available: "
                    f"{self.memory_available / GIB:.1f} GiB" + (f" host, {self.gpu_memory / GIB:.1f} GiB GPU"
                                                                 if self.calibration_device == "cuda" else ""))
        problems = self.problems()
        rows += [f"does not fit: {p}" for p in problems] or ["fits"]
        return rows

    def to_json(self) -> dict:
        return {"params": self.params, "checkpoint_dtype": self.checkpoint_dtype, "export_dtype": self.export_dtype,
                "export_dtype_reason": self.export_dtype_reason,
                "calibration_dtype": self.calibration_dtype, "scorer": self.scorer,
                "graph_build_bytes": self.graph_build, "calibration_bytes": self.calibration,
                "model_dir_bytes": self.model_dir, "peak_bytes": self.peak,
                "memory_available_bytes": self.memory_available, "disk_free_bytes": self.disk_free,
                "calibration_device": self.calibration_device, "gpu_memory_bytes": self.gpu_memory,
                "problems": self.problems()}


def memory_available() -> int:
    """Memory this process may still use: ``AAPP_MEMORY_BYTES``, else the kernel's MemAvailable (and a
    cgroup limit when lower), else 0 (unknown: nothing is refused)."""
    override = os.environ.get("AAPP_MEMORY_BYTES")
    if override:
        return int(float(override))
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        return 0
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def gpu_memory_available() -> int:
    """Free GPU memory (``AAPP_GPU_MEMORY_BYTES``, else torch's view of every visible GPU; 0 without one)."""
    override = os.environ.get("AAPP_GPU_MEMORY_BYTES")
    if override:
        return int(float(override))
    from .placement import gpu_memory

    return gpu_memory()


def _calibration_steps(spec: ModelSpec, params: dict[str, int], c: int, scorer: str | None,
                       batch: int = CALIB_BATCH) -> dict[str, int]:
    """Peak bytes of each calibration step with weights of ``c`` bytes (transformers also loads the
    checkpoint's other towers: a multimodal Gemma 3's vision encoder)."""
    weights = BASE + (params["total"] + spec.extra.get("other_params", 0)) * c
    sums = _stat_sums(spec)
    steps = {"history statistics": weights + sums + _forward_transient(spec, batch, CALIB_TOKENS, c),
             "circuit activations": weights + sums + _forward_transient(spec, batch, CHAT_TOKENS, c)}
    if scorer in BACKWARD_SCORERS:
        tokens = CHAT_TOKENS + (CHECK_TOKENS if scorer in ANSWER_SCORERS else 0)
        steps["grad-act backward"] = weights + sums + _backward(spec, batch, tokens, c)
    # greedy answers of a batch under ablation: the prompt's forward, then a KV cache that grows by
    # CHECK_TOKENS (transformers keeps it in the weights' dtype)
    kv = sum(2 * l.num_kv_heads * spec.head_dim for l in spec.layers) * c
    steps["causal check"] = weights + sums + _forward_transient(spec, batch, CHAT_TOKENS, c) + \
        batch * (CHAT_TOKENS + CHECK_TOKENS) * kv
    return steps


def _stat_sums(spec: ModelSpec) -> int:
    """The history statistics' fp32 running sums (per position and overall, attention and MLP)."""
    return sum(2 * (CALIB_TOKENS + 3) * (l.num_heads * spec.head_dim + l.intermediate_size) * 4 for l in spec.layers)


def plan_export(spec: ModelSpec, checkpoint_dtype: str, export_dtype: str, calibration_dtype: str | None,
                scorer: str | None, out_dir: Path, levels: int = 0, calibration_device: str = "cpu",
                batch: int = CALIB_BATCH) -> ExportPlan:
    """The plan of exporting ``spec`` (``calibration_dtype`` None: no calibration), with the peak each
    memory-saving flag would give (``alternatives``). ``batch``: the calibration's batch (fewer prompts
    than ``CALIB_BATCH`` make smaller batches)."""
    params = parameter_counts(spec)
    e = DTYPE_BYTES.get(export_dtype, 4)
    largest = _largest_tensor(spec)
    graph_build = BASE + largest * (2 * e + DTYPE_BYTES.get(checkpoint_dtype, 4))
    calibration: dict[str, int] = {}
    alternatives: dict[str, int] = {}
    stats_bytes = 0
    if calibration_dtype is not None:
        calibration = _calibration_steps(spec, params, DTYPE_BYTES[calibration_dtype], scorer, batch)
        options = {"--calib-dtype bf16": ("bf16", scorer), "--scorer refusal-dir": (calibration_dtype, "refusal-dir"),
                   "--calib-dtype bf16 --scorer refusal-dir": ("bf16", "refusal-dir")}
        for flags, (dtype, other) in options.items():
            if (dtype, other) != (calibration_dtype, scorer) and not (other == "refusal-dir" and scorer not in
                                                                       BACKWARD_SCORERS):
                alternatives[flags] = max(graph_build, *_calibration_steps(spec, params, DTYPE_BYTES[dtype],
                                                                           other, batch).values())
        alternatives["--no-calibrate (dense only)"] = graph_build
        stats_bytes = _stat_sums(spec) // 2
    model_dir = params["total"] * e + stats_bytes + (1 + 2 * levels) * (4 << 20)
    target = out_dir if out_dir.exists() else next((p for p in out_dir.parents if p.exists()), Path("."))
    return ExportPlan(params, checkpoint_dtype, export_dtype, calibration_dtype, scorer, graph_build, calibration,
                      model_dir, memory_available(), shutil.disk_usage(target).free, calibration_device,
                      gpu_memory_available() if calibration_device == "cuda" else 0, alternatives)

def choose_calibration_dtype(requested: str, device: str, plan_for) -> tuple[str, ExportPlan]:
    """The weights' dtype for loading a model in torch (calibration, ``aapp-eval``) and its plan:
    ``requested`` unless "auto"; auto is bf16 on cuda (the GPU's precision; Gemma 3 overflows fp16), and
    on cpu fp32 when its plan fits, else bf16 (half the weights; statistics still sum in fp32).
    ``plan_for(dtype)`` makes the plan of a dtype."""
    if requested != "auto":
        return requested, plan_for(requested)
    if device == "cuda":
        return "bf16", plan_for("bf16")
    fp32 = plan_for("fp32")
    if not fp32.problems():
        return "fp32", fp32
    return "bf16", plan_for("bf16")


__all__ = ["ExportPlan", "plan_export", "parameter_counts", "memory_available", "choose_calibration_dtype"]
