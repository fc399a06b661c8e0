"""Similarity-measure benchmark; same as `repsim bench similarity` (see repsim/bench_similarity.py)."""
import sys

from repsim.bench_similarity import main

if __name__ == "__main__":
    sys.exit(main())
