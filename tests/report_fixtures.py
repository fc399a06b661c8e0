"""A results folder with every analysis and known numbers (build_results), shared by the
report's tests (test_report.py, test_report_figures.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd

from repsim import statistics
from repsim.names import declaration
from repsim.results import EXTRA_TABLES, FORMAT, table_digest

CONV = "CCA: mean canonical correlation, spatial; CKA: linear, flattened"
LAYERS = ("conv1", "conv2", "conv3", "conv4", "head")


def provenance(name, dataset, ways, shots, checkpoints, tasks=20):
    return {"analysis": name, "format": FORMAT, "checkpoints": checkpoints, "command": None,
            "created": "2026-01-01T00:00:00+00:00", "repsim_version": "0.1.0",
            "study": {"dataset": dataset, "split": "test", "split_scheme": "maml", "ways": ways, "shots": shots,
                      "queries": 15, "tasks": tasks, "task_seed": 7,
                      "confidence_interval": "95%, 1.96 * std / sqrt(n) over tasks", "conventions": CONV}}


def checkpoint_row(alg, seed, it=60000, dataset="omniglot", ways=20, shots=1, reduced=False):
    return {"checkpoint": f"/ckpt/{alg}-{seed}.safetensors", "label": f"{alg}-s{seed}-it{it}", "model": alg,
            "algorithm": alg, "seed": seed, "iteration": it, "reduced_schedule": reduced, "dataset": dataset,
            "ways": ways, "shots": shots}


def _with_model(rows) -> pd.DataFrame:
    """Rows as the runner writes them: each names its model (here, as for repsim's own
    checkpoints, its algorithm) beside its algorithm."""
    table = pd.DataFrame(rows)
    if "algorithm" in table and "model" not in table:
        table.insert(table.columns.get_loc("algorithm"), "model", table["algorithm"])
    return table


def write_result(folder: Path, name, rows, prov, tasks_rows=None, extras=None):
    """A result as the runner writes it: the extra tables its declaration names (the pooling
    over seeds, through-training's body summary, one seed's means) and its tables' digests (in
    NAME.json) included."""
    table = _with_model(rows)
    table.to_csv(folder / f"{name}.csv", index=False)
    if tasks_rows is not None:
        _with_model(tasks_rows).to_csv(folder / f"{name}_tasks.csv", index=False)
    declared, extras = declaration(name), dict(extras or {})
    if declared.over_seeds:
        extras.setdefault("over_seeds", statistics.over_seeds(table, declared.over_seeds, declared.value))
    if "body" in declared.extras:
        extras.setdefault("body", statistics.through_training_body(table))
    if "seeds" in declared.extras and "seeds" not in extras:  # the rows are of one seed: its means are the table's
        keys = [c for c in ("model", "algorithm", "iteration", "layer", "measure") if c in table]
        extras["seeds"] = table.assign(seed=0)[keys + ["seed", "mean", "n"]]
    for suffix, extra in extras.items():
        extra.to_csv(folder / f"{name}_{suffix}.csv", index=False)
    (folder / f"{name}.json").write_text(json.dumps(prov, indent=2))
    record_tables(folder, name)


def record_tables(folder: Path, name: str) -> None:
    """Record the digests of ``name``'s tables as they are now in its NAME.json (as the runner
    does when it writes them), so a test's edit of a table is read, not refused as damage."""
    meta = folder / f"{name}.json"
    prov = json.loads(meta.read_text())
    prov["tables"] = {p.name: table_digest(p.read_bytes()) for p in sorted(folder.glob(f"{name}*.csv"))
                      if p.stem == name or p.stem[len(name) + 1:] in (*EXTRA_TABLES, "tasks")}
    meta.write_text(json.dumps(prov, indent=2))


def cross_tasks() -> list[dict]:
    """Per-task similarities of MAML and ANIL seeds 0 and 1, on 2 tasks: body layer i of a pair
    scores base - 0.1 i + 0.02 task (CKA 0.15 higher), so its mean over layers and tasks is
    base - 0.14. base: MAML-MAML 0.80, ANIL-ANIL 0.82, ANIL-MAML of different seeds 0.70 and
    0.72 (the pair with MAML seed 1), ANIL-MAML of one seed (shared initial weights) 0.75.
    The head scores 0.3 and must not count."""
    models = ["maml-s0-it60000", "maml-s1-it60000", "anil-s0-it60000", "anil-s1-it60000"]
    rows = []
    for a, b in itertools.combinations(models, 2):
        pair = "-".join(sorted((a.split("-")[0].upper(), b.split("-")[0].upper())))
        same_seed = a.split("-")[1] == b.split("-")[1]
        base = {"MAML-MAML": 0.80, "ANIL-ANIL": 0.82}.get(pair, 0.75 if same_seed else 0.70)
        base += 0.02 if pair == "ANIL-MAML" and not same_seed and "maml-s1-it60000" in (a, b) else 0.0
        for i, layer in enumerate(LAYERS):
            for measure, shift in (("cca", 0.0), ("cka", 0.15)):
                for task in (0, 1):
                    value = 0.3 if layer == "head" else base + shift - 0.1 * i + 0.02 * task
                    rows.append({"model_a": a, "model_b": b, "pair": pair, "seed_a": int(a.split("-s")[1][0]),
                                 "seed_b": int(b.split("-s")[1][0]), "same_seed": same_seed, "layer": layer,
                                 "measure": measure, "task": task, "value": value})
    return rows


CROSS_TASKS = cross_tasks()


def cross_means(tasks) -> list[dict]:
    """cross.csv as repsim wrote it before it kept seeds apart: per pair of algorithms, layer
    and measure, all model pairs together."""
    t = pd.DataFrame(tasks)
    t = t[t.layer != "head"]
    g = t.groupby(["pair", "layer", "measure"], sort=False)["value"]
    return [{"pair": p, "layer": layer, "measure": m, "mean": v.mean(), "ci95": 0.01, "n": len(v)}
            for (p, layer, m), v in g]


def decomposed_tasks():
    """Per-task rows of the freezing decomposition: with the body frozen the protocol gets 30%,
    a fitted head 85% of the full loop's 90% (features 5 points, head optimisation 55)."""
    rows = []
    for s in (0, 1):
        for f in ("none", "conv1,conv2,conv3,conv4"):
            body = f != "none"
            for t in range(20):
                wobble = 0.05 * ((t % 3) - 1)
                rows.append({"checkpoint": f"maml-s{s}-it60000", "model": "maml", "algorithm": "maml", "seed": s,
                             "iteration": 60000, "frozen": f, "task": t,
                             "paper": (0.3 if body else 0.9) + wobble, "support_accuracy": 0.4 if body else 1.0,
                             "fitted": (0.85 if body else 0.9) + wobble, "fitted_meta": 0.84 if body else 0.9,
                             "prototypes": 0.8 if body else 0.88, "lr_curvature": 4.8 if body else 0.4,
                             "support_cosine": 0.97 if body else 0.7})
    return rows


def build_results(folder: Path, dataset="omniglot", ways=20, shots=1, names=None) -> Path:
    """A results folder with every analysis; accuracy: MAML 95.0 (3 seeds: 94, 95, 96) and ANIL 96.0
    (one seed), so that the paper's Omniglot 20w1s 93.7 / 96.2 give differences +1.3 / -0.2."""
    folder.mkdir(parents=True, exist_ok=True)
    kw = dict(dataset=dataset, ways=ways, shots=shots)
    maml = [checkpoint_row("maml", s, **kw) for s in (0, 1, 2)]
    anil = [checkpoint_row("anil", 0, reduced=True, **kw)]
    boil = [checkpoint_row("boil", 0, **kw)]
    everything = {
        "similarity": ([{"algorithm": a, "layer": layer, "measure": m, "mean": v, "ci95": 0.01, "n": 20, "seeds": 1}
                        for a, base in (("maml", 0.95), ("anil", 0.99), ("boil", 0.6))
                        for i, layer in enumerate(LAYERS) for m, v in
                        (("cca", 0.4 if layer == "head" else base - 0.01 * i),
                         ("cka", 0.3 if layer == "head" else min(1.0, base + 0.03)))],
                       maml[:1] + anil + boil),
        "freezing": ([{"checkpoint": f"maml-s{s}-it60000", "algorithm": "maml", "seed": s, "iteration": 60000,
                       "frozen": f, "accuracy": 90.0 + s - k * 0.5, "ci95": 0.8, "change": -k * 0.5,
                       "change_ci95": 0.3, "tasks": 20}
                      for s in (0, 1) for k, f in enumerate(["none", "conv1", "conv1,conv2", "conv1,conv2,conv3",
                                                            "conv1,conv2,conv3,conv4"])], maml[:2]),
        "freezing_decomposed": (statistics.decompose_freezing(pd.DataFrame(decomposed_tasks())), maml[:2]),
        "accuracy": ([{"checkpoint": f"maml-s{s}-it60000", "algorithm": "maml", "seed": s, "iteration": 60000,
                       "mode": mode, "accuracy": (94.0 + s) if mode == "inner-loop" else 90.0 + s,
                       "ci95": 0.5, "change": 0.0 if mode == "inner-loop" else -4.0, "change_ci95": 0.3,
                       "tasks": 20} for s in (0, 1, 2) for mode in ("inner-loop", "nil")]
                     + [{"checkpoint": "anil-s0-it60000", "algorithm": "anil", "seed": 0, "iteration": 60000,
                         "mode": mode, "accuracy": 96.0 if mode == "inner-loop" else 97.0, "ci95": 0.4,
                         "change": 0.0 if mode == "inner-loop" else 1.0, "change_ci95": 0.2, "tasks": 20}
                        for mode in ("inner-loop", "nil")], maml + anil),
        "cross": (statistics.cross_layers(pd.DataFrame(CROSS_TASKS)), maml[:2] + anil),
        "heads": ([{"checkpoint": "maml-s0-it60000", "algorithm": "maml", "seed": 0, "iteration": 60000,
                    "variant": v, "accuracy": a, "ci95": 1.0, "change": a - 94.0, "change_ci95": 0.6, "tasks": 20}
                   for v, a in (("trained inner loop", 94.0), ("NIL (no head)", 90.0),
                                ("trained head, no adaptation", 5.0))], maml[:1]),
        "regimes": ([{"regime": r, "seed": s, "checkpoint": f"{r}-s{s}", "accuracy": a + s, "ci95": 1.0, "tasks": 20}
                     for r, a in (("maml", 90.0), ("anil", 91.0), ("multiclass", 80.0), ("random features", 40.0))
                     for s in (0, 1)], maml[:2]),
        "through_training": ([{"checkpoint": f"maml-s0-it{it}", "algorithm": "maml", "seed": 0, "iteration": it,
                               "metric": metric, "layer": layer, "mean": v, "ci95": ci, "n": 20}
                              for it in (10000, 20000, 30000)
                              for metric, layer, v, ci in
                              [("accuracy (inner-loop)", "", 80 + it / 2000, 1.0),
                               ("accuracy (nil)", "", 78 + it / 2000, 1.0)]
                              + [(m, layer, 0.4 if layer == "head" else 0.95, 0.01)
                                 for m in ("cca", "cka") for layer in LAYERS]],
                             [checkpoint_row("maml", 0, it, **kw) for it in (10000, 20000, 30000)]),
        "weight_change": ([{"algorithm": a, "layer": layer, "measure": "relative weight change",
                            "mean": ((0.4 if layer == "head" else 0.02) if a != "boil"
                                     else (0.0 if layer == "head" else 0.1)),
                            "ci95": 0.001, "n": 20, "seeds": 1} for a in ("maml", "anil", "boil") for layer in LAYERS],
                          maml[:1] + anil + boil),
    }
    for name, (rows, ckpts) in everything.items():
        if names is None or name in names:
            cross = name == "cross"
            write_result(folder, name, rows, provenance(name, dataset, ways, shots, ckpts),
                         CROSS_TASKS if cross else None,
                         statistics.cross_extras(pd.DataFrame(CROSS_TASKS)) if cross else None)
    return folder
