"""Meta-training benchmark; same as `repsim bench train` (see repsim/bench.py)."""
import argparse

from repsim.bench import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    main(args.device, args.quick)
