"""Write a Gemma 3 shaped checkpoint (1B, 4B or 12B; bf16, the hub's layout and shards) for measuring
an export at real scale without downloading weights.

    python scripts/make_shape_checkpoint.py gemma3-1b /tmp/shapes/gemma3-1b --seed 0   # random weights
    python scripts/make_shape_checkpoint.py gemma3-12b /tmp/shapes/gemma3-12b          # sparse zeros (plan)
"""

from __future__ import annotations

import argparse
from pathlib import Path


from aapp_export.synthetic import GEMMA3_SHAPES, gemma3_shape, make_shape_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shape", choices=sorted(GEMMA3_SHAPES))
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=None, help="random weights (default: zeros, stored sparsely)")
    args = p.parse_args()
    print(make_shape_checkpoint(args.out, gemma3_shape(args.shape), seed=args.seed))


if __name__ == "__main__":
    main()
