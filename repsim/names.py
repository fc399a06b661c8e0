"""The names the command line offers, in a module that imports nothing heavy: ``repsim --help``
and ``--version`` read them without importing torch or pandas (seconds, and a Ctrl-C in that
window was a traceback)."""

from __future__ import annotations

from repsim.errors import RepsimError

DATASETS = ("synthetic", "omniglot", "miniimagenet")
META_ALGORITHMS = ("maml", "fomaml", "anil", "boil")        # an inner loop at training time
ALGORITHMS = META_ALGORITHMS + ("multiclass", "multitask")  # and the regimes without one
LOSSES = ("mean", "sum_div_shots")                          # how a task's loss is reduced (meta.task_loss)

# The analyses, as the command line spells them; their result files use ``_`` (result_stem).
# runner.REGISTRY holds how each is computed.
ANALYSES = ("similarity", "freezing", "freezing-decomposed", "accuracy", "cross", "heads", "regimes",
            "through-training", "weight-change")


def analysis_name(name: str) -> str:
    """The one spelling of an analysis (``through-training``); ``through_training``, the name
    of its result files, is accepted too."""
    spelled = name.replace("_", "-")
    if spelled not in ANALYSES:
        raise RepsimError(f"unknown analysis {name!r}: choose one of {', '.join(ANALYSES)}")
    return spelled
