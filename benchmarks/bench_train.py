"""Meta-training benchmark; same as `repsim bench train` (see repsim/bench.py)."""
import argparse

from repsim.bench import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data-root", help="time real Omniglot tasks from this folder instead of noise")
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--shots", type=int, default=1)
    args = p.parse_args()
    main(args.device, args.quick, args.data_root, args.ways, args.shots)
