"""Speed benchmarks, ``repsim bench WHAT``: each prints times measured side by side in one run
and their ratios; nothing here is asserted by a test.

    train       meta-training, repsim (task loop and vmap) against higher (repsim.bench.train)
    similarity  CCA / CKA / SVCCA against plain float64 numpy routes (repsim.bench.similarity)
    threads     how torch's CPU threads should wait, alone and beside a busy process (repsim.bench.threads)
    freezing    the freezing test against its decomposition on one checkpoint (repsim.bench.freezing)
    jobs        an analysis of several checkpoints in one process against worker processes (repsim.bench.jobs)

Each prints how torch's threads were set: on a shared machine, spinning OpenMP threads slow a
benchmark many times (repsim.threads chooses the CLI's setting).
"""
