"""Recipe: when NIL falls behind the inner loop, is it the body's features or NIL's classifier?

    python analyses/nil_diagnostics.py --data-root ../shared/data/omniglot \
        [--ref checkpoints/omniglot_20w5s] [--tasks 600]

The paper's NIL testing (table 4) drops the head and classifies a query by a softmax over its
cosine similarities to the support points, as in Matching Networks; it finds NIL as good as
ANIL's inner loop. repsim's first, PyTorch-convention 20-way 5-shot ANIL references broke that
(NIL 2.3 points behind on every seed; the Finn-convention ones put NIL 2.4 points ahead).
With one support point per class every cosine classifier below is the same nearest-neighbour
rule, but with five they differ, so this recipe scores, on the same
penultimate features and the same fixed test tasks (task seed 0, the checkpoint's own query
count, as in the MANIFEST), the inner loop and four cosine classifiers that use no head and
no inner loop. If a cosine classifier matches the inner loop, the features hold what the head
needs and the gap is NIL's rule; if none does, the features are worse than the head makes them.

It writes nil_diagnostics.csv and .md into REF/results/, for the final checkpoint of every
run in REF (RUN/model.safetensors).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from repsim.checkpoint import load_checkpoint
from repsim.evaluate import mean_ci, nil_scores, score_tasks
from repsim.io import atomic_write_text
from repsim.meta import head_input, own_inner_loop
from repsim.report import markdown_table
from repsim.study import Study


def nearest_support(support, labels, query):
    """The label of the support point with the highest cosine: argmax_j cos(q, s_j)."""
    cos = F.normalize(query, dim=1) @ F.normalize(support, dim=1).T
    return F.one_hot(labels[cos.argmax(dim=1)], int(labels.max()) + 1).to(cos.dtype)


def cosine_prototype(support, labels, query):
    """score_c(q) = cos(q, p_c), with p_c = sum of class c's normalised support features
    (the sum's direction is the mean's, and the cosine sees only directions)."""
    prototypes = F.one_hot(labels).to(support.dtype).T @ F.normalize(support, dim=1)
    return F.normalize(query, dim=1) @ F.normalize(prototypes, dim=1).T


CLASSIFIERS = {
    # the paper's NIL: at T = 1 the softmax over cosines in [-1, 1] is nearly flat, so a
    # class's score is close to the mean of exp(cos) over its support points
    "NIL (paper: softmax of cosines, T = 1)": nil_scores,
    "NIL with T = 0.1": lambda s, y, q: nil_scores(s, y, q, temperature=0.1),
    "nearest support point (cosine)": nearest_support,
    "nearest class prototype (cosine)": cosine_prototype,
}


def score_classifiers(path: Path, tasks) -> list[dict]:
    """The checkpoint's own inner loop, then each head-free classifier on the same tasks."""
    ckpt = load_checkpoint(path)
    c = ckpt.config
    model = ckpt.build_model()
    params = {n: p.detach() for n, p in model.named_parameters()}
    own = score_tasks(model, params, tasks, inner=own_inner_loop(c, model),
                      device=torch.device("cpu"), progress=False)
    scores = {f"own inner loop ({c.inner_steps_test} steps of {c.inner_lr})": own.per_task}
    per_task = {name: [] for name in CLASSIFIERS}
    with torch.no_grad():
        for task in tasks:
            support = head_input(model, params, task.support_x)
            query = head_input(model, params, task.query_x)
            for name, classify in CLASSIFIERS.items():
                predicted = classify(support, task.support_y, query).argmax(dim=1)
                per_task[name].append((predicted == task.query_y).float().mean().item())
    scores.update(per_task)
    run = path.parent.name
    rows = []
    for name, per_task_accuracy in scores.items():
        score = mean_ci(per_task_accuracy)
        rows.append({"run": run, "algorithm": c.algorithm, "seed": c.seed, "iteration": ckpt.iteration,
                     "classifier": name, "accuracy": round(score.mean, 2), "ci95": round(score.ci95, 2),
                     "tasks": score.tasks})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, default=Path("checkpoints/omniglot_20w5s"))
    p.add_argument("--data-root")
    p.add_argument("--tasks", type=int, default=600)
    args = p.parse_args(argv)

    finals = sorted(args.ref.glob("*/model.safetensors"))
    if not finals:
        sys.exit(f"error: no run (RUN/model.safetensors) in {args.ref}: pass --ref a folder "
                 f"published by analyses/reference_checkpoints.py")
    first = load_checkpoint(finals[0])
    c = first.config
    tasks = Study.for_checkpoint(first, data_root=args.data_root,
                                 queries=c.test_queries, num_tasks=args.tasks, seed=0,
                                 progress=False).tasks
    rows = []
    for path in finals:
        rows += score_classifiers(path, tasks)
        print(pd.DataFrame(rows[-len(CLASSIFIERS) - 1:]).to_string(index=False), flush=True)

    table = pd.DataFrame(rows)
    means = (table.groupby(["algorithm", "classifier"], sort=False)["accuracy"]
             .agg(["mean", "std"]).round(2).reset_index())
    out = args.ref / "results"
    atomic_write_text(out / "nil_diagnostics.csv", table.to_csv(index=False))
    md = (f"# Is NIL's gap to the inner loop in the features or in NIL's classifier?\n\n"
          f"{c.dataset} {c.ways}-way {c.shots}-shot, final checkpoints; {args.tasks} test "
          f"tasks (task seed 0), {c.test_queries} queries per class, accuracy in % with 95% CI over "
          f"tasks (1.96 * std / sqrt(n)). Every classifier but the first uses the body's "
          f"features only (no head, no inner loop). Recipe: analyses/nil_diagnostics.py.\n\n"
          f"Mean ± std over seeds:\n\n"
          + markdown_table(["algorithm", "classifier", "mean", "std over seeds"], means.itertuples(index=False))
          + "\n\nEvery run:\n\n"
          + markdown_table(table.columns, table.itertuples(index=False)) + "\n")
    atomic_write_text(out / "nil_diagnostics.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
