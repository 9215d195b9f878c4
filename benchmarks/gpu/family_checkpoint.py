"""Save a checkpoint of a CLIP family's real text-tower shape with seeded random weights
(tests/checkpoints.py: every layer, random norms and biases), for the GPU run's per-model
measurements on a machine without the hub. Speed and fp16 parity depend on the shape, not on
what the weights learned.

    python -m benchmarks.gpu.family_checkpoint --family l14 --out /tmp/ckpt-l14
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.checkpoints import FAMILIES, save_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=None, help="default: the family's own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    family = FAMILIES[args.family]
    save_checkpoint(family, args.out, layers=args.layers, seed=args.seed)
    print(f"{args.out}: {family.hub_id}'s text tower shape, {args.layers or family.layers} layers, seeded random")
    return 0


if __name__ == "__main__":
    sys.exit(main())
