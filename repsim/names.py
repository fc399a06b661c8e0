"""The names the command line offers, and each analysis declared once, in a module that imports
nothing heavy: ``repsim --help`` and ``--version`` read them without importing torch or pandas
(seconds, and a Ctrl-C in that window was a traceback)."""

from __future__ import annotations

from dataclasses import dataclass

from repsim.errors import RepsimError

DATASETS = ("synthetic", "omniglot", "miniimagenet")
META_ALGORITHMS = ("maml", "fomaml", "anil", "boil")        # an inner loop at training time
ALGORITHMS = META_ALGORITHMS + ("multiclass", "multitask")  # and the regimes without one
LOSSES = ("mean", "sum_div_shots")                          # how a task's loss is reduced (meta.task_loss)
HEAD = "head"  # the head: its layer's name in every result table, its parameters' prefix in the model
ANALYSIS_QUERIES = 15  # query points per class of the representation analyses and probes, as in the paper


@dataclass(frozen=True)
class Declaration:
    """An analysis, as every part of repsim names it: ``runner.REGISTRY`` (how it is computed),
    the report (its section, its required columns, its table, figure and verdict, keyed by
    ``stem``) and the command line. A test checks that each part covers every declaration."""
    name: str                   # as the command line spells it
    title: str                  # the report's section heading
    about: str                  # what it measures, in a few words ("repsim analyze --help")
    columns: tuple[str, ...]    # what its summary table (NAME.csv) must hold
    figure: str | None = None   # the start of its figure's caption (None: no figure)
    similarity: bool = False    # its section states the similarity conventions
    # a table of one row per seed is pooled over seeds by these keys (NAME_over_seeds.csv, the
    # runner's): the mean and spread over seeds of ``value``, which the report shows
    over_seeds: tuple[str, ...] = ()
    value: str = "accuracy"
    # the further summaries of its rows that the runner writes as NAME_SUFFIX.csv and the
    # report reads (required of a result), besides NAME_over_seeds.csv
    extras: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        """The name of its result files and the report's key: ``through-training`` -> ``through_training``."""
        return self.name.replace("-", "_")

    @property
    def extra_tables(self) -> tuple[str, ...]:
        """The suffixes of every NAME_SUFFIX.csv its result holds beside NAME.csv."""
        return self.extras + ("over_seeds",) * bool(self.over_seeds)


DECLARATIONS = (  # in the command line's order
    Declaration("similarity", "Representation change in the inner loop (paper Figure 2)",
                "CCA/CKA of each layer before vs after the inner loop",
                ("algorithm", "layer", "measure", "mean", "ci95"),
                "Per-layer similarity of each layer's representation before vs after the inner loop", True,
                extras=("seeds",)),
    Declaration("freezing", "Freezing layers at test time (paper Table 1)", "layers frozen at test time",
                ("algorithm", "seed", "iteration", "frozen", "accuracy", "ci95", "change", "change_ci95"),
                "Test accuracy when the inner loop leaves the frozen layers at their meta-learned values",
                over_seeds=("algorithm", "iteration", "frozen")),
    Declaration("freezing-decomposed", "Freezing, decomposed: features or head optimisation? (repsim)",
                "freezing's cost split into the features' part and the inner loop's failure to fit the "
                "head, with a head fitted to convergence",
                ("algorithm", "seed", "iteration", "frozen", "quantity", "mean", "ci95"),
                "What freezing costs, split into the features' part and the inner loop's failure to fit the head",
                over_seeds=("algorithm", "iteration", "frozen", "quantity"), value="mean"),
    Declaration("accuracy", "Accuracy with the inner loop and with NIL (paper Tables 2 and 4)", "inner loop and NIL",
                ("algorithm", "seed", "iteration", "mode", "accuracy", "ci95", "change", "change_ci95"),
                over_seeds=("algorithm", "iteration", "mode")),
    Declaration("cross", "Similarity between models (paper Table 3)", "similarity across models",
                ("pair", "layer", "measure", "mean", "ci95", "same_seed"),
                "Similarity of body-layer representations of different models on the same query points, "
                "no adaptation", True, extras=("pairs", "model_pairs")),
    Declaration("heads", "What the head contributes (repsim ablation)", "head ablations",
                ("algorithm", "seed", "iteration", "variant", "accuracy", "ci95", "change", "change_ci95"),
                "Test accuracy with the head adapted, removed (NIL), unadapted, zeroed or random",
                over_seeds=("algorithm", "iteration", "variant")),
    Declaration("regimes", "Training regimes, NIL-tested (paper Table 5)",
                "NIL accuracy by training regime, and random features", ("regime", "seed", "accuracy", "ci95"),
                "NIL test accuracy by training regime", over_seeds=("regime",)),
    Declaration("through-training", "Through training (paper: feature reuse early in learning)",
                "accuracy, freezing and similarity at a run's intermediate checkpoints; give run folders",
                ("algorithm", "seed", "iteration", "metric", "layer", "mean", "ci95"),
                "Accuracy and per-layer before/after similarity at intermediate checkpoints", True,
                over_seeds=("algorithm", "metric", "layer", "iteration"), value="mean", extras=("body",)),
    Declaration("weight-change", "Relative weight change per layer (MAML / ANIL / BOIL)",
                "relative parameter change per layer",
                ("algorithm", "layer", "mean", "ci95"), "Relative change of each layer's weights over the inner loop",
                extras=("seeds",)),
)
ANALYSES = tuple(d.name for d in DECLARATIONS)
# the report's order: the paper's figure and tables first, repsim's own ablation last
REPORT_ORDER = ("similarity", "freezing", "freezing-decomposed", "accuracy", "cross", "regimes",
                "through-training", "weight-change", "heads")


def declaration(name: str) -> Declaration:
    return next(d for d in DECLARATIONS if d.name == analysis_name(name))


def analysis_name(name: str) -> str:
    """The one spelling of an analysis (``through-training``); ``through_training``, the name
    of its result files, is accepted too."""
    spelled = name.replace("_", "-")
    if spelled not in ANALYSES:
        raise RepsimError(f"unknown analysis {name!r}: choose one of {', '.join(ANALYSES)}")
    return spelled
