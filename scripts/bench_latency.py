"""Latency benchmark (same as the ``aapp-bench`` command): python scripts/bench_latency.py [--json] ..."""

import sys

from aapp_export.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
