"""The paper's analyses: does the inner loop change the representation, or reuse it?

Each analysis is a function from a :class:`~repsim.study.Study` and checkpoints to a tidy
DataFrame (one row per measured number, with its 95% CI where it is a mean over tasks). All
analyses of one study score the same fixed list of test tasks (``Study.tasks``), so their
numbers are comparable. ``repsim analyze`` runs them into a results folder
(:mod:`repsim.runner`); here they compute and write nothing.

1. ``layer_similarity``   CCA / CKA of each layer before vs after the inner loop (figure 2)
2. ``freezing``           accuracy with layers frozen in the inner loop at test time (table 1)
   (``prefix_freezes``: the paper's freezing sets; ``freeze_label``: how a set is named)
   ``freezing_decomposed``  its cost split into the features' part and head optimisation (repsim)
3. ``accuracy``           inner-loop and NIL accuracy of each checkpoint (tables 2 and 4)
   ``cross_similarity``   body-layer similarity across seeds and algorithms (table 3)
4. ``heads``              NIL, trained/zeroed/random heads (section 5)
5. ``regimes``            NIL accuracy of MAML, ANIL, multiclass, multitask, random (table 5)
6. ``through_training``   the above on one of a run's intermediate checkpoints
                          (``run_checkpoints`` lists them; the runner takes one per part)
7. ``weight_change``      ||theta_after - theta_before|| / ||theta_before|| per layer (BOIL's side)

Conventions: CCA is mean CCA with spatial positions as data points for conv layers
((n*h*w, c)); CKA is linear CKA on flattened activations ((n, c*h*w)); both on the query
points (15 per class) of the test tasks. CIs are 95% Student-t intervals over tasks; an
ablation's ``change`` (frozen - unfrozen, NIL - inner loop, head variant - trained head) has
the t-interval of its per-task differences, since every condition scores the same tasks.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from repsim.checkpoint import Checkpoint
from repsim.errors import RepsimError, not_finite
from repsim.evaluate import fresh_head, score_inner_loops, score_tasks
from repsim.meta import adapt, head_input, head_logits, own_inner_loop, shared_blocks
from repsim.model import HEAD_PREFIX, draw_weights, is_head, model_for
from repsim.names import HEAD
from repsim.probe import check_layers, in_layers, iter_probes, layer_outputs, probe_layers
from repsim.similarity import compare
from repsim.statistics import paired_change, same_seed
from repsim.study import CONVENTIONS, Model, Study
from repsim.threads import map_tasks


# 1. ---------------------------------------------------------------------------------------
def layer_similarity(study: Study, checkpoints, *, layers=None, steps: int | None = None,
                     points: str = "query", every_step: bool = False) -> pd.DataFrame:
    """CCA and CKA of every layer's activations before vs after the inner loop, per task.

    Rows: checkpoint, algorithm, seed, iteration, layer, measure, step, task, value.
    ``summarise`` turns them into means with CIs.
    """
    if steps is not None and steps < 1:
        raise RepsimError(f"before-vs-after similarity needs at least 1 inner step, got {steps}: "
                          "use --inner-steps 1 or more")
    rows = []
    for checkpoint in checkpoints:
        m = study.load(checkpoint)
        chosen = check_layers(m.model, layers or probe_layers(m.model))
        inner = own_inner_loop(m.ckpt.config, m.model, steps)
        probes = iter_probes(m.model, m.params, study.tasks, device=study.dev, layers=chosen,
                             points=points, every_step=every_step, inner=inner)
        for probe in tqdm(probes, total=len(study.tasks), desc=f"similarity {m.label}",
                          disable=not study.progress, leave=False):
            for s, after in enumerate(probe.steps[1:], start=1):
                table = compare(probe.before, after, measures=("cca", "cka"), conv=CONVENTIONS)
                step = s if every_step else inner.steps
                for layer, measure, value in zip(table["layer"], table["measure"], table["value"]):
                    rows.append({**_ids(m), "layer": layer, "measure": measure, "step": step,
                                 "task": probe.task_index, "value": float(value)})
    return pd.DataFrame(rows)


def _ids(m: Model) -> dict:
    c = m.ckpt.config
    return {"checkpoint": m.label, "model": m.unit, "algorithm": c.algorithm, "seed": c.seed,
            "iteration": m.ckpt.iteration}


# 2. ---------------------------------------------------------------------------------------
def prefix_freezes(model) -> list[list[str]]:
    """The paper's freezing sets: none, conv1, conv1-2, conv1-3, conv1-4 (the body's layers)."""
    body = [layer for layer in probe_layers(model) if layer != HEAD]
    return [body[:k] for k in range(len(body) + 1)]


def freeze_label(frozen) -> str:
    return "none" if not frozen else ",".join(frozen)


def _frozen_loops(inner, frozen_sets) -> dict:
    """Each frozen set's inner loop, by its label: ``inner`` adapting every parameter outside
    the set; the full loop (``none``) always among them, since every change is measured from it."""
    return {freeze_label(frozen): inner.but(names=[n for n in inner.names if not in_layers(n, frozen)])
            for frozen in ([[]] if [] not in frozen_sets else []) + list(frozen_sets)}


def freezing(study: Study, checkpoint, *, frozen_sets=None, steps: int | None = None) -> pd.DataFrame:
    """Test accuracy when the inner loop leaves ``frozen`` layers at their meta-learned values,
    and its paired change from the unfrozen inner loop on the same tasks."""
    m = study.load(checkpoint)
    frozen_sets = prefix_freezes(m.model) if frozen_sets is None else frozen_sets
    for frozen in frozen_sets:
        check_layers(m.model, frozen)
    if not frozen_sets:
        return pd.DataFrame()
    inner = own_inner_loop(m.ckpt.config, m.model, steps)
    loops = _frozen_loops(inner, frozen_sets)
    scores = score_inner_loops(m.model, m.params, study.tasks, loops, device=study.dev,
                               progress=study.progress, desc=f"freezing {m.label}")
    return pd.DataFrame([{**_ids(m), "frozen": freeze_label(f), **_with_change(scores[freeze_label(f)], scores["none"])}
                         for f in frozen_sets])


def _with_change(score, reference) -> dict:
    """A score's columns: accuracy with its CI, and its paired change from ``reference``."""
    change, change_ci = paired_change(100 * score.per_task, 100 * reference.per_task)
    return {"accuracy": score.mean, "ci95": score.ci95, "tasks": score.tasks,
            "change": change, "change_ci95": change_ci}


def freezing_decomposed(study: Study, checkpoint, *, frozen_sets=None, steps: int | None = None) -> pd.DataFrame:
    """The freezing test taken apart, per task: is a frozen set's cost its features' or the
    inner loop's failure to fit the head on them?

    For each frozen set (and none: the full inner loop), on the same tasks: (a) ``paper``, the
    query accuracy after the checkpoint's inner loop with those layers frozen (as
    :func:`freezing`), and its support accuracy; on the penultimate features that inner loop
    leaves (for the whole body frozen: the meta-learned features), (b) ``fitted``, a head
    fitted to convergence (:func:`repsim.heads.fit_head`, penalty about zero), ``fitted_meta``
    (penalty about the meta-learned head) and ``prototypes`` (cosine to class means); and the
    diagnostics ``lr_curvature``, the step size times the largest eigenvalue of the head's
    support-loss Hessian at the meta-learned head (above 2, a step can overshoot: descent is no
    longer guaranteed), and ``support_cosine``, the support features' mean pairwise cosine.
    :func:`repsim.statistics.decompose_freezing` turns the rows into the costs with paired CIs.
    """
    from repsim.heads import fit_head, head_curvature, mean_cosine, prototype_predictions

    m = study.load(checkpoint)
    frozen_sets = prefix_freezes(m.model) if frozen_sets is None else frozen_sets
    for frozen in frozen_sets:
        check_layers(m.model, frozen)
    inner = own_inner_loop(m.ckpt.config, m.model, steps)
    # the loss whose Hessian the step multiplies: Finn et al.'s sums over the support set / K
    scale = 1 / study.shots if inner.loss == "sum_div_shots" else 1 / (study.ways * study.shots)
    w0, b0 = (m.params[HEAD_PREFIX + k].double().cpu().numpy() for k in ("weight", "bias"))
    params = {n: p.requires_grad_(n in inner.names) for n, p in m.params.items()}
    loops = _frozen_loops(inner, frozen_sets)

    def decompose(model: torch.nn.Module, task, index: int) -> dict[str, dict]:
        starts, support, query = shared_blocks(model, params, task, loops)  # as evaluate.score_inner_loops
        measured = {}
        for label, loop in loops.items():
            if loop in measured:  # the same inner loop (ANIL's, whatever body layers are frozen)
                continue
            k = starts[label]
            fast = adapt(model, params, support[k], task.support_y, loop, start=k)
            with torch.no_grad():  # each set's features on its own batch, as the inner loop saw them
                fs, fq = (head_input(model, fast, h, start=k) for h in (support[k], query[k]))
                logits = head_logits(model, fast, torch.cat([fs, fq]))
            fs, fq, logits = (t.double().cpu().numpy() for t in (fs, fq, logits))
            if not (np.isfinite(fs).all() and np.isfinite(fq).all() and np.isfinite(logits).all()):
                raise not_finite(f"the features of test task {index} after the inner loop with {label} frozen")
            sy, qy = task.support_y.cpu().numpy(), task.query_y.cpu().numpy()
            w, b = fit_head(fs, sy, study.ways)
            wm, bm = fit_head(fs, sy, study.ways, centre=w0)
            measured[loop] = {"task": index,
                              "paper": (logits[len(sy):].argmax(1) == qy).mean(),
                              "support_accuracy": (logits[:len(sy)].argmax(1) == sy).mean(),
                              "fitted": ((fq @ w.T + b).argmax(1) == qy).mean(),
                              "fitted_meta": ((fq @ wm.T + bm).argmax(1) == qy).mean(),
                              "prototypes": (prototype_predictions(fs, sy, fq, study.ways) == qy).mean(),
                              "lr_curvature": loop.lr * head_curvature(fs, w0, b0, scale=scale),
                              "support_cosine": mean_cosine(fs)}
        return {label: measured[loop] for label, loop in loops.items()}

    per_task = map_tasks(decompose, m.model, study.tasks, device=study.dev, progress=study.progress,
                         desc=f"decomposing {m.label}")
    return pd.DataFrame([{**_ids(m), "frozen": label, **task[label]} for label in loops for task in per_task])


# 3. ---------------------------------------------------------------------------------------
def accuracy(study: Study, checkpoints, *, steps: int | None = None) -> pd.DataFrame:
    """Each checkpoint scored with its own inner loop and with NIL testing (tables 2 and 4)."""
    rows = []
    for checkpoint in checkpoints:
        m = study.load(checkpoint)
        inner = study.score(m, steps=steps, desc=f"{m.label} inner-loop")
        nil = study.score(m, steps=steps, nil=True, desc=f"{m.label} nil")
        # NIL's change is NIL - inner loop, paired over tasks
        rows.append({**_ids(m), "mode": "inner-loop", **_with_change(inner, inner)})
        rows.append({**_ids(m), "mode": "nil", **_with_change(nil, inner)})
    return pd.DataFrame(rows)


def cross_similarity(study: Study, checkpoints, *, layers=None) -> pd.DataFrame:
    """Similarity of the body layers of two different models on the same query points.

    For every pair of checkpoints, mean CCA and linear CKA per layer per task, before any
    adaptation. Rows carry a ``pair`` label such as ``ANIL-MAML`` (sorted algorithm names),
    both models' labels and seeds, and ``same_seed``: whether they started from the same weights.
    """
    models = [study.load(c) for c in checkpoints]
    if len(models) < 2:
        raise RepsimError("cross-model similarity needs at least two checkpoints")
    body = [layer for layer in probe_layers(models[0].model) if layer != HEAD]
    layers = check_layers(models[0].model, layers or body)
    rows = []
    for index, task in enumerate(tqdm(study.tasks, desc="cross-model similarity",
                                      disable=not study.progress, leave=False)):
        task = task.to(study.dev)
        acts = [layer_outputs(m.model, m.params, task.query_x, layers) for m in models]
        for (i, a), (j, b) in itertools.combinations(enumerate(models), 2):
            for layer in layers:  # CCA takes spatial positions as data points: maps of one size
                if acts[i][layer].shape[2:] != acts[j][layer].shape[2:]:
                    raise RepsimError(
                        f"{a.label} and {b.label} have {layer} maps of different sizes "
                        f"({'x'.join(map(str, acts[i][layer].shape[2:]))} vs "
                        f"{'x'.join(map(str, acts[j][layer].shape[2:]))}): cross-model similarity "
                        f"compares models of one architecture (or pass --layers with layers of one size)")
            table = compare(acts[i], acts[j], measures=("cca", "cka"), conv=CONVENTIONS)
            pair = cross_pair(a, b)
            for layer, measure, value in zip(table["layer"], table["measure"], table["value"]):
                rows.append({"model_a": a.label, "model_b": b.label, "pair": pair,
                             "seed_a": a.ckpt.config.seed, "seed_b": b.ckpt.config.seed,
                             "same_seed": seeds_match(a.ckpt, b.ckpt), "layer": layer,
                             "measure": measure, "task": index, "value": float(value)})
    return pd.DataFrame(rows)


def cross_pair(a: Model, b: Model) -> str:
    """The pair of table 3 two models belong to: their algorithms (``ANIL-MAML``) where each
    stands for its algorithm's seeds, else their units (``ANIL vs maml-pytorchhead-s0``), so a
    control or an imported model is never averaged in with the seeds (:attr:`Model.unit`)."""
    pooled = [m.unit == m.ckpt.config.algorithm for m in (a, b)]
    names = sorted(m.unit.upper() if p else m.unit for m, p in zip((a, b), pooled))
    return ("-" if all(pooled) else " vs ").join(names)


def seeds_match(a: Checkpoint, b: Checkpoint) -> bool:
    """``same_seed`` for two checkpoints; one whose seed is not known (imported without one)
    started from weights of its own."""
    return a.seed_known and b.seed_known and same_seed(a.config.seed, b.config.seed)


# 4. ---------------------------------------------------------------------------------------
def heads(study: Study, checkpoint, *, steps: int | None = None) -> pd.DataFrame:
    """How much does the head matter? The trained network scored with its head
    adapted as trained, removed (NIL), kept but not adapted, zeroed, and randomised."""
    m = study.load(checkpoint)
    head = [n for n in m.params if is_head(n)]
    gen = torch.Generator().manual_seed(study.seed)
    weight = m.params[HEAD_PREFIX + "weight"]
    # a head drawn as the checkpoint's own was at initialisation (its head_init convention)
    w, b = draw_weights(tuple(weight.shape), m.ckpt.config.head_init, gen,
                        bias=HEAD_PREFIX + "bias" in m.params)
    random = {**m.params, HEAD_PREFIX + "weight": w.to(weight)}
    if b is not None:
        random[HEAD_PREFIX + "bias"] = b.to(weight)
    zeroed = fresh_head(m.model, m.params, study.ways)
    variants = [
        ("trained inner loop", dict()),
        ("NIL (no head)", dict(nil=True)),
        ("trained head, no adaptation", dict(steps=0)),
        ("zeroed head, head adapted", dict(params=zeroed, names=head)),
        ("random head, no adaptation", dict(params=random, steps=0)),
        ("random head, head adapted", dict(params=random, names=head)),
    ]
    scores = {label: study.score(m, desc=label, **{"steps": steps, **kwargs}) for label, kwargs in variants}
    return pd.DataFrame([{**_ids(m), "variant": label, **_with_change(s, scores["trained inner loop"])}
                         for label, s in scores.items()])


# 5. ---------------------------------------------------------------------------------------
def regimes(study: Study, checkpoints, *, random_seeds=(0,)) -> pd.DataFrame:
    """NIL accuracy of networks trained by different regimes, and of random features."""
    rows = []
    models = [study.load(c) for c in checkpoints]
    for m in models:
        s = study.score(m, nil=True, desc=f"NIL {m.label}")
        rows.append({"regime": m.unit, "seed": m.ckpt.config.seed,
                     "checkpoint": m.label, "accuracy": s.mean, "ci95": s.ci95, "tasks": s.tasks})
    if models:
        config = models[0].ckpt.config
        for seed in random_seeds:
            torch.manual_seed(seed)
            model = model_for(config).to(study.dev)
            params = {n: p.detach() for n, p in model.named_parameters()}
            s = score_tasks(model, params, study.tasks, inner=None, device=study.dev, nil=True,
                            progress=study.progress, desc="NIL random")
            rows.append({"regime": "random features", "seed": seed, "checkpoint": f"random-s{seed}",
                         "accuracy": s.mean, "ci95": s.ci95, "tasks": s.tasks})
    return pd.DataFrame(rows)


# 6. ---------------------------------------------------------------------------------------
def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """A training run's intermediate checkpoints, oldest first."""
    found = sorted(Path(run_dir).glob("checkpoints/iter-*.safetensors"))
    if not found:
        raise RepsimError(f"no intermediate checkpoints in {run_dir}/checkpoints: "
                          "pass a run folder written by 'repsim train'")
    return found


def through_training(study: Study, checkpoint, *, steps: int | None = None) -> pd.DataFrame:
    """One point of the through-training analysis, per task: the checkpoint's accuracies (inner loop, NIL,
    the whole body frozen in the paper's protocol and with a fitted head:
    :func:`freezing_decomposed`) and its layers' before/after similarities.
    Rows: checkpoint, model, algorithm, seed, iteration, metric, layer, task, value (accuracies in
    percent); :func:`repsim.statistics.through_training_summary` makes the table."""
    m = study.load(checkpoint)
    rows = []

    def add(metric, layer, values):
        rows.extend({**_ids(m), "metric": metric, "layer": layer, "task": task, "value": float(v)}
                    for task, v in enumerate(values))

    add("accuracy (inner-loop)", "", 100 * study.score(m, steps=steps, desc=f"{m.label} inner-loop").per_task)
    add("accuracy (nil)", "", 100 * study.score(m, steps=steps, nil=True, desc=f"{m.label} nil").per_task)
    # the whole body frozen: the paper's protocol, and a head fitted on the frozen features
    body = freeze_label(prefix_freezes(m.model)[-1])
    frozen = freezing_decomposed(study, m.ckpt, frozen_sets=[body.split(",")], steps=steps)
    frozen = frozen[frozen["frozen"] == body].sort_values("task")
    add("accuracy (body frozen)", "", 100 * frozen["paper"].to_numpy())
    add("accuracy (body frozen, fitted head)", "", 100 * frozen["fitted"].to_numpy())
    similarity = layer_similarity(study, [m.ckpt], steps=steps)
    rows.extend({**_ids(m), "metric": r.measure, "layer": r.layer, "task": r.task, "value": r.value}
                for r in similarity.itertuples())
    return pd.DataFrame(rows)


# 7. ---------------------------------------------------------------------------------------
def weight_change(study: Study, checkpoints, *, steps: int | None = None) -> pd.DataFrame:
    """Per layer, ||theta_after - theta_before|| / ||theta_before|| of the inner loop, per task."""
    rows = []
    for checkpoint in checkpoints:
        m = study.load(checkpoint)
        layers = probe_layers(m.model)
        probes = iter_probes(m.model, m.params, study.tasks, device=study.dev, layers=layers[:1],
                             points="query", inner=own_inner_loop(m.ckpt.config, m.model, steps))
        for probe in tqdm(probes, total=len(study.tasks), desc=f"weight change {m.label}",
                          disable=not study.progress, leave=False):
            before, after = probe.params[0], probe.params[-1]
            for layer in layers:
                names = [n for n in before if in_layers(n, [layer])]
                num = math.sqrt(sum(float((after[n] - before[n]).double().pow(2).sum()) for n in names))
                den = math.sqrt(sum(float(before[n].double().pow(2).sum()) for n in names))
                rows.append({**_ids(m), "layer": layer, "task": probe.task_index,
                             "value": num / den if den > 0 else float("nan"), "measure": "relative weight change"})
    return pd.DataFrame(rows)
