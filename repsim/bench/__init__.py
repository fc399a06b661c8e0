"""Speed benchmarks, ``repsim bench train`` and ``repsim bench similarity``: each prints
times measured side by side in one run and their ratios; nothing here is asserted by a test.

    train       meta-training, repsim (task loop and vmap) against higher (repsim.bench.train)
    similarity  CCA / CKA / SVCCA against plain float64 numpy routes (repsim.bench.similarity)

Both print how torch's threads were set: on a shared machine, spinning OpenMP threads
(OMP_WAIT_POLICY=ACTIVE) slow a benchmark many times; the CLI defaults to PASSIVE.
"""
