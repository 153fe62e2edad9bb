"""Latency benchmark, the same as the ``aapp-bench`` command (see ``aapp-bench --help``):

    python scripts/bench_latency.py [MODEL_DIR_OR_CHECKPOINT] [--json] [--out bench_out] [--repeats 5] [--rounds 3]
"""

import sys

from aapp_export.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
