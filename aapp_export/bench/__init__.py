"""``aapp-bench``: latency, memory and correctness measured side by side, each speedup a ratio taken in
the same run.

- ``engine_bench``: our runtime against transformers, onnxruntime-genai and optimum on one checkpoint
  (``run_benchmark``), each engine in its own worker process (``worker``), its model prepared and cached
  by ``builds``, behind the one protocol of ``engines``; ``report`` pools, compares and plots.
- ``pruned``: a model dir's pruned levels against its dense graph and the static ceiling.
- ``plan``: what a run measures and the report's keys; ``machine``: what it ran on.

The random checkpoints the benchmarks time are made by :mod:`aapp_export.synthetic`. This package
never imports torch itself (the transformers and optimum engines do, in their own processes).
"""

from __future__ import annotations

from .builds import genai_available
from .engine_bench import run_benchmark
from .engines import DEFAULT_ENGINES, ENGINES, GreedyRun, open_engine
from .machine import cpu_name, machine_info
from .plan import BenchPlan, parse_count
from .report import plot
from .worker import engine_command, optimum_python

__all__ = ["BenchPlan", "DEFAULT_ENGINES", "ENGINES", "GreedyRun", "cpu_name", "engine_command", "genai_available",
           "machine_info", "open_engine", "optimum_python", "parse_count", "plot", "run_benchmark"]
