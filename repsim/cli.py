"""The ``repsim`` command. Each subcommand is a thin wrapper over a library function.

User errors (RepsimError) print one line, ``repsim: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import textwrap
from pathlib import Path

from repsim.errors import RepsimError
from repsim.names import ANALYSIS_QUERIES


def _train(args) -> None:
    from repsim.config import load_config, parse_overrides
    from repsim.train import saved_config, train

    overrides = list(args.set or [])
    if args.data_root:
        if "data_root" in parse_overrides(overrides):
            raise RepsimError("--data-root and --set data_root=... both name the data folder: give one of them")
        overrides.append(f"data_root={args.data_root}")
    time_limit = None if args.time_limit is None else 60 * args.time_limit
    if args.seeds is not None:
        return _train_seeds(args, overrides, time_limit)
    if args.resume and args.config is None and (Path(args.out) / "config.yaml").is_file():
        # the run's own config as it was saved (a run older than a key keeps what it trained
        # with), --set on top (a longer schedule, say)
        config = load_config(None, overrides, defaults=saved_config(args.out))
    else:
        config = load_config(args.config, overrides)
    print(f"training {config.algorithm} on {config.dataset} {config.ways}-way {config.shots}-shot "
          f"with {config.describe_conventions()}", flush=True)
    final = train(config, args.out, device=args.device, resume=args.resume,
                  progress=not args.quiet, time_limit=time_limit)
    print(f"{'trained' if final.name == 'model.safetensors' else 'stopped at'} "
          f"{config.algorithm} on {config.dataset}: {final}")


def _train_seeds(args, overrides: list[str], time_limit: float | None) -> None:
    """--seeds: several seeds of one config as one batched run (repsim.batched)."""
    from repsim.batched import train_runs
    from repsim.config import load_config, parse_overrides
    from repsim.train import saved_config

    if "{seed}" not in args.out:
        raise RepsimError(f"--seeds trains one run folder per seed: put {{seed}} in --out "
                          f"(e.g. --out 'runs/maml-s{{seed}}'), not {args.out!r}")
    if "seed" in parse_overrides(overrides):
        raise RepsimError("--seeds and --set seed=... both give the seed: give --seeds alone")
    outs = [args.out.replace("{seed}", str(s)) for s in args.seeds]
    configs = []
    for seed, out in zip(args.seeds, outs):
        defaults = (saved_config(out) if args.resume and args.config is None
                    and (Path(out) / "config.yaml").is_file() else None)
        configs.append(load_config(None if defaults else args.config, overrides + [f"seed={seed}"],
                                   **({"defaults": defaults} if defaults else {})))
    c = configs[0]
    print(f"training {c.algorithm} on {c.dataset} {c.ways}-way {c.shots}-shot, seeds "
          f"{', '.join(map(str, args.seeds))} together, with {c.describe_conventions()}", flush=True)
    finals = train_runs(configs, outs, device=args.device, resume=args.resume, progress=not args.quiet,
                        time_limit=time_limit)
    for final in finals:
        print(f"{'trained' if final.name == 'model.safetensors' else 'stopped at'}: {final}")


def _evaluate(args) -> None:
    from repsim.io import atomic_write_json, atomic_write_text
    from repsim.study import evaluate_checkpoint

    for target, kind in ((args.json, "json"), (args.csv, "csv")):
        _check_result_file(target, kind)  # before the work, not after it

    r = evaluate_checkpoint(args.checkpoint, tasks=args.tasks, inner_steps=args.inner_steps,
                            seed=args.seed, split=args.split, data_root=args.data_root,
                            queries=args.queries, nil=args.nil, device=args.device,
                            overrides=args.given, progress=not args.quiet)
    print(f"trained and tested with {r['convention_summary']}"
          + (f"; tested with {r['test_overrides']}" if r["test_overrides"] else ""))
    if Path(r["checkpoint"]).name.startswith("iter-"):  # an intermediate one (a run folder not finished)
        print(f"intermediate checkpoint {r['checkpoint']} (iteration {r['iteration']})")
    print(f"{r['algorithm']} {r['dataset']} {r['ways']}-way {r['shots']}-shot, {r['mode']}"
          f"{'' if r['mode'] == 'nil' else ' (' + str(r['inner_steps']) + ' inner steps)'}: "
          f"{r['accuracy']:.2f} +- {r['ci95']:.2f}% (95% CI over {r['tasks']} {r['split']} "
          f"tasks, seed {r['seed']})")
    print(_queries_line(r["queries"], r["ways"]))
    if args.json:
        atomic_write_json(args.json, r)
    if args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(r))
        writer.writeheader()
        writer.writerow(r)
        atomic_write_text(args.csv, buf.getvalue())


def _check_result_file(target: str | None, kind: str) -> None:
    """``evaluate --json/--csv`` may write a new file or replace an earlier result of its own,
    never another file (a run's config.yaml, say)."""
    import json

    from repsim.io import check_file_target
    if target is None:
        return
    path = check_file_target(target, f"result.{kind}")
    if not path.exists():
        return
    try:
        text = path.read_text()
        ours = (isinstance(json.loads(text), dict) and {"checkpoint", "accuracy"} <= set(json.loads(text))
                if kind == "json" else text.startswith("checkpoint,") and ",accuracy," in text.splitlines()[0])
    except (OSError, UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise RepsimError(f"{path} exists and is not an earlier 'repsim evaluate' result: choose "
                          f"another --{kind} file (evaluate replaces only its own results)")


def _import(args) -> None:
    from repsim.importing import import_weights

    bad = [item for item in args.rename or [] if "=" not in item]
    if bad:
        raise RepsimError(f"--rename expects REGEX=REPLACEMENT, got {bad[0]!r} (e.g. --rename '^classifier\\.=head.')")
    renames = [tuple(item.split("=", 1)) for item in args.rename or []]
    logits = tuple(args.check_logits) if args.check_logits else None
    r = import_weights(args.weights, args.out, config=args.config, overrides=args.set or [],
                       layout=args.layout, renames=renames, drop=args.drop, name=args.name,
                       check_logits=logits)
    c = r.config
    print(f"layout: {r.layout}; {c.algorithm} on {c.dataset}, {c.ways}-way {c.shots}-shot")
    print(f"architecture: {c.describe_architecture()}")
    print(f"conventions: {c.describe_conventions()}")
    for note in r.notes:
        print(f"note: {note}")
    for warning in r.warnings:
        print(f"repsim: warning: {warning}", file=sys.stderr)
    if r.logits_error is not None:
        print(f"logits match {args.check_logits[1]} to {r.logits_error:.2g} (largest difference)")
    print(f"imported {args.weights} as {r.path}, named {r.name!r}")


def _bench(args) -> None:
    if args.what == "train":
        from repsim.bench.train import main as bench_train
        bench_train(device=args.device, quick=args.quick, data_root=args.data_root,
                    ways=args.ways, shots=args.shots, compiled=args.compiled)
    elif args.what == "freezing":
        from repsim.bench.freezing import main as bench_freezing
        from repsim.evaluate import resolve_device
        bench_freezing(args.checkpoint, quick=args.quick, data_root=args.data_root,
                       device=str(resolve_device(args.device)))
    elif args.what == "jobs":
        from repsim.bench.jobs import main as bench_jobs
        from repsim.evaluate import resolve_device
        bench_jobs(quick=args.quick, data_root=args.data_root, device=str(resolve_device(args.device)))
    elif args.what == "scoring":
        from repsim.bench.scoring import main as bench_scoring
        from repsim.evaluate import resolve_device
        bench_scoring([args.checkpoint] if args.checkpoint else None, quick=args.quick, data_root=args.data_root,
                      device=str(resolve_device(args.device)))
    elif args.what == "threads":
        from repsim.bench.threads import main as bench_threads
        bench_threads(repeats=2 if args.quick else 5)
    else:
        from repsim.bench.similarity import main as bench_similarity
        from repsim.evaluate import resolve_device
        bench_similarity(["--device", str(resolve_device(args.device))] + (["--quick"] if args.quick else []))


def _analyze(args) -> None:
    from repsim.runner import run_analysis
    from repsim.study import TestProtocol

    frozen = None
    if args.frozen:
        frozen = [[] if f in ("", "none") else f.split(",") for f in args.frozen]
    protocol = TestProtocol(tasks=args.tasks, seed=args.seed, ways=args.ways, shots=args.shots,
                            queries=args.queries, steps=args.inner_steps, overrides=args.given,
                            data_root=args.data_root, device=args.device)
    path = run_analysis(args.analysis, args.checkpoints, args.out, protocol, layers=_flat(args.layers),
                        frozen_sets=frozen, replace=args.replace, progress=not args.quiet, jobs=args.jobs)
    print(summary_text(path))
    study = _provenance(path).get("study", {})
    if study.get("queries") and study.get("ways"):
        print(_queries_line(study["queries"], study["ways"]))
    table3 = path.with_name(f"{path.stem}_pairs.csv")
    if table3.is_file():  # cross: the headline, paper table 3
        print(f"\nbody layers averaged, mean and std over model pairs ({table3.name}):")
        print(summary_text(table3))
    print(f"written {path} (and its provenance, {path.with_suffix('.json').name}); "
          f"'repsim report {path.parent}' makes tables and figures")


def _flat(groups):
    return None if groups is None else [name for group in groups for name in group]


# the columns a reader needs, in reading order; ids and bookkeeping stay in the CSV
_SUMMARY_COLUMNS = ("model", "regime", "pair", "same_seed", "seed", "iteration", "frozen", "quantity", "mode",
                    "variant",
                    "metric", "layer", "measure", "accuracy", "mean", "ci95", "std", "change", "change_ci95",
                    "seed_std", "n", "tasks", "seeds", "model_pairs")


def _queries_line(queries: int, ways: int) -> str:
    """How many query points a test used: BatchNorm normalises each task's query batch, so the
    same checkpoint and tasks score differently on other numbers of queries (evaluate uses the
    checkpoint's test_queries, analyze --queries, 15 by default)."""
    return (f"{queries} query point{'s' if queries != 1 else ''} per class: BatchNorm normalises each "
            f"task's query batch of {queries * ways} with its own statistics")


def _provenance(csv_path) -> dict:
    import json
    try:
        record = json.loads(Path(csv_path).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def summary_text(csv_path) -> str:
    """A results table as a reader wants it on a terminal: the columns that say what was
    measured, numbers to 3 decimals (accuracies in percent to 2). An imported model's
    iteration reads "imported" and, imported without one, its seed "unknown" (their numbers
    are its config's defaults, not a run's)."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    imported = {c.get("model"): c for c in _provenance(csv_path).get("checkpoints", [])
                if isinstance(c, dict) and c.get("imported")}
    if imported and "model" in table.columns:
        rows = table["model"].isin(list(imported))
        for column, text, when in (("iteration", "imported", lambda c: True),
                                   ("seed", "unknown", lambda c: not c.get("seed_known", False))):
            if column in table.columns:
                table[column] = table[column].astype(object)
                marked = rows & table["model"].map(lambda m: m in imported and when(imported[m]))
                table.loc[marked, column] = text
    shown = table[[c for c in _SUMMARY_COLUMNS if c in table.columns]]
    with pd.option_context("display.max_rows", 200, "display.max_columns", None, "display.width", 160):
        return shown.to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="-")


def _probe(args) -> None:
    from repsim.results import check_writable, exclusive
    check_writable(args.out)  # before any work: a file, an unwritable folder, /proc
    with exclusive(Path(args.out), "probe"):
        _check_probe_folder(Path(args.out))
        _write_probes(args)


def _check_probe_folder(folder: Path) -> None:
    """A probe folder is empty or one that repsim probe wrote (it is rewritten): other files
    there, a user's own meta.json or task files, would be deleted or mixed in."""
    import json
    mine = {"meta.json"}
    meta = folder / "meta.json"
    try:
        ours = meta.is_file() and "repsim_version" in json.loads(meta.read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    others = [p.name for p in folder.iterdir()
              if not p.name.startswith(".") and p.name not in mine
              and not (ours and p.name.startswith("task-") and p.name.endswith(".safetensors"))]
    if others or (meta.exists() and not ours):
        shown = ", ".join(sorted(others + ([] if ours or not meta.exists() else ["meta.json"]))[:3])
        raise RepsimError(f"{folder} holds files repsim probe did not write ({shown}): choose an empty "
                          f"--out folder (a folder of an earlier probe is rewritten)")


def _write_probes(args) -> None:
    from repsim.checkpoint import load_checkpoint
    from repsim.meta import own_inner_loop
    from repsim.probe import check_layers, iter_probes, probe_layers, save_probes
    from repsim.study import Study
    ckpt = load_checkpoint(args.checkpoint)
    study = Study.for_checkpoint(ckpt, num_tasks=args.tasks, seed=args.seed, queries=args.queries,
                                 data_root=args.data_root, device=args.device, progress=not args.quiet)
    m = study.load(ckpt)
    c = ckpt.config
    layers = check_layers(m.model, _flat(args.layers) or probe_layers(m.model))
    inner = own_inner_loop(c, m.model, args.inner_steps)
    probes = iter_probes(m.model, m.params, study.tasks, device=study.dev, layers=layers,
                         inner=inner, points=args.points, every_step=args.every_step)
    folder = save_probes(args.out, probes, {"checkpoint": str(ckpt.path), "layers": layers,
                                            "inner_steps": inner.steps, "points": args.points,
                                            "every_step": args.every_step, **study.provenance(),
                                            # the training conventions, not the study's CCA/CKA text
                                            **c.conventions_used(),
                                            "convention_summary": c.describe_conventions()})
    print(f"probes of {len(study.tasks)} tasks written to {folder}")


def _reproduce(args) -> None:
    from repsim.reproduce import reproduce
    reproduce(dataset=args.dataset, data_root=args.data_root, profile=args.profile, out=args.out,
              figures=args.figures, device=args.device, progress=not args.quiet, jobs=args.jobs)


def _report(args) -> None:
    from repsim.report import write_report
    print(f"report: {write_report(args.results, figures_dir=args.figures, title=args.title)}")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; every option's default shown where it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" not in text and "default" not in text and action.option_strings
                and action.default not in (None, False, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


EXAMPLES = {
    "train": "repsim train --config omniglot_5w1s_maml --data-root ~/data/omniglot --out runs/maml-s0\n"
             "repsim train --config omniglot_5w1s_maml --set seed=1 --set iterations=1500 --out runs/maml-s1\n"
             "repsim train --out runs/maml-s0 --resume   # after an interruption (the run's own config)\n"
             "repsim train --out runs/maml-s0 --resume --set iterations=20000   # train it longer\n"
             "repsim train --config omniglot_5w1s_maml --seeds 0,1,2 --out 'runs/maml-s{seed}'   # on a GPU",
    "evaluate": "repsim evaluate runs/maml-s0 --data-root ~/data/omniglot\n"
                "repsim evaluate runs/maml-s0 --nil --json nil.json\n"
                "repsim evaluate runs/maml-s0 --set inner_lr=0.4 --inner-steps 3",
    "import": "repsim import l2l_maml.pt --set shots=1 --name l2l-maml --out l2l-maml.safetensors\n"
              "repsim import finn.npz --layout finn-tf --config omniglot_20w1s_maml --out finn.safetensors\n"
              "repsim import mine.pt --rename '^classifier\\.=head.' --drop 'num_batches' --out mine.safetensors",
    "analyze": "repsim analyze freezing runs/maml-s0 runs/maml-s1 --out results\n"
               "repsim analyze similarity runs/maml-s0 runs/anil-s0 --layers conv3,conv4,head --out results\n"
               "repsim analyze freezing runs/maml-s0 --frozen none conv1,conv2,conv3,conv4 --out results\n"
               "repsim analyze through-training runs/maml-s0 --tasks 100 --out results",
    "probe": "repsim probe runs/maml-s0 --layers conv4,head --tasks 20 --out probes/maml-s0",
    "reproduce": "repsim reproduce                      # synthetic data, about 6.5 min on 2 CPU cores\n"
                 "repsim reproduce --dataset omniglot --data-root ~/data/omniglot",
    "report": ("repsim report results\nrepsim report results --figures paper/figures\n"
               "repsim report results --title 'My checkpoints: Omniglot 5-way 1-shot'"),
    "bench": "repsim bench similarity --quick\nrepsim bench train --data-root ~/data/omniglot --ways 5",
}


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, comma-separated (0,1,2), not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"give distinct non-negative seeds, comma-separated (0,1,2), not {text!r}")
    return seeds


def _layers(text: str) -> list[str]:
    """``--layers conv1,conv2`` and ``--layers conv1 conv2`` alike (one value per argument)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:  # "," named no layer, and used to mean every layer
        raise argparse.ArgumentTypeError(f"{text!r} names no layer: give layer names, e.g. conv1,conv4")
    return names


def _analysis(text: str) -> str:
    from repsim.names import analysis_name
    try:
        return analysis_name(text)
    except RepsimError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    import repsim

    p = argparse.ArgumentParser(prog="repsim", formatter_class=_Help, description=(
        "Train meta-learners (MAML, first-order MAML, ANIL, BOIL, multiclass, multitask) and "
        "measure rapid learning vs feature reuse (Raghu et al., ICLR 2020)."),
        epilog="Run 'repsim COMMAND --help' for a command's options and examples.")
    p.add_argument("--version", action="version", version=f"repsim {repsim.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train_parser, _evaluate_parser, _import_parser, _analyze_parser, _probe_parser,
                _reproduce_parser, _report_parser, _bench_parser):
        add(sub)
    return p


def _command(sub, name, help, description=None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=textwrap.fill(description or help.replace("%%", "%"), 88),
                          formatter_class=_Help,
                          epilog="examples:\n" + "\n".join("  " + line for line in EXAMPLES[name].splitlines()))


# flags shared by several commands: one spelling, one meaning, one default
def _data_root(parser) -> None:
    parser.add_argument("--data-root", metavar="DIR", help="folder of the real data set (omniglot: the "
                        "official images_background/images_evaluation zips or folders); default: the "
                        "checkpoint's, else $REPSIM_DATA_ROOT")


def _common(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _set_keys(parser, what) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=what + " (repeatable)")


def _test_tasks(parser, default=600, why="as in the paper") -> None:
    parser.add_argument("--tasks", type=int, default=default, help=f"number of test tasks, {why}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task list: the same seed gives "
                        "the same tasks for every checkpoint")


def _layers_option(parser, what) -> None:
    parser.add_argument("--layers", nargs="+", type=_layers, metavar="LAYER",
                        help=f"{what}, comma- or space-separated (default: every layer)")


def _train_parser(sub) -> None:
    t = _command(sub, "train", "train MAML / FOMAML / ANIL / BOIL / multiclass / multitask")
    t.add_argument("--config", help="YAML config file, or a shipped recipe's name from any folder "
                   "(e.g. omniglot_20w1s_maml; the recipes are analyses/configs/*.yaml)")
    _set_keys(t, "override a config key")
    t.add_argument("--out", required=True, metavar="DIR", help="run folder: checkpoints/, metrics.jsonl, config.yaml")
    _data_root(t)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its config.yaml unless "
                   "--config is given; --set may change only iterations, checkpoint_every, eval_every, reduced")
    t.add_argument("--seeds", type=_seeds, metavar="LIST",
                   help="train these seeds (e.g. 0,1,2) together, as one batched run: one step for all, "
                   "and on a GPU one CUDA graph; --out must hold {seed}")
    t.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop after this long with a checkpoint where it stops; --resume continues")
    _common(t)
    t.set_defaults(func=_train)


def _evaluate_parser(sub) -> None:
    e = _command(sub, "evaluate", "mean accuracy with its 95%% CI over a fixed list of test tasks")
    e.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    _test_tasks(e)
    e.add_argument("--inner-steps", type=int, help="inner-loop steps (default: the checkpoint's test-time steps)")
    e.add_argument("--queries", type=int, help="query points per class (default: the checkpoint's test_queries)")
    e.add_argument("--split", default="test", help="test, val or train")
    e.add_argument("--nil", action="store_true", help="NIL testing: no head, cosine similarity to support features")
    _set_keys(e, "change how the model is tested: inner_lr, inner_loss, adapt_batchnorm, inner_steps_test "
             "or test_queries")
    _data_root(e)
    e.add_argument("--json", metavar="FILE", help="also write the result to this JSON file")
    e.add_argument("--csv", metavar="FILE", help="also write the result to this CSV file")
    _common(e)
    e.set_defaults(func=_evaluate)


def _import_parser(sub) -> None:
    i = _command(sub, "import", "turn another library's conv4 weights into a repsim checkpoint",
                "Turn another library's conv4 weights into a repsim checkpoint. Layouts (detected from "
                "the names): learn2learn (OmniglotCNN, CNN4), torchmeta (examples/maml), pytorch-maml "
                "(MetaConvModel), higher (its MAML example's nn.Sequential), finn-tf (Finn et al.'s "
                "TensorFlow arrays as .npz), repsim.")
    i.add_argument("weights", help=".pt/.pth (loaded with weights_only), .npz or .safetensors")
    i.add_argument("--config", help="YAML config of how it was trained (algorithm, shots, inner_lr...), "
                   "or a shipped recipe's name")
    _set_keys(i, "override a config key")
    i.add_argument("--layout", default="auto", help="auto (from the names), learn2learn, torchmeta, "
                   "pytorch-maml, higher, finn-tf or repsim")
    i.add_argument("--rename", action="append", metavar="REGEX=REPLACEMENT",
                   help="rename keys first (re.sub, repeatable), e.g. '^classifier\\.=head.'")
    i.add_argument("--drop", metavar="REGEX", help="leave out the keys this matches")
    i.add_argument("--name", help="the name its results carry (default: the weights' file name)")
    i.add_argument("--check-logits", nargs=2, metavar=("INPUTS.pt", "LOGITS.pt"),
                   help="refuse the import unless its logits on INPUTS match LOGITS saved from the original code")
    i.add_argument("--out", required=True, metavar="FILE", help="checkpoint file to write (.safetensors)")
    i.set_defaults(func=_import)


def _analyze_parser(sub) -> None:
    from repsim.names import ANALYSES, DECLARATIONS

    a = _command(sub, "analyze", "run one feature-reuse analysis on checkpoints into a results folder",
                "Run one analysis on checkpoints into a results folder (NAME.csv, NAME_tasks.csv, "
                "NAME.json); 'repsim report' turns the folder into tables and figures. Analyses: "
                + "; ".join(f"{d.name} ({d.about})" for d in DECLARATIONS) + ". "
                "Running an analysis again into the same folder adds models (earlier ones are reused); "
                "other options are refused unless --replace.")
    a.add_argument("analysis", type=_analysis, metavar="ANALYSIS", help=", ".join(ANALYSES))
    a.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders (through-training: run folders)")
    a.add_argument("--out", required=True, metavar="DIR", help="results folder")
    _test_tasks(a)
    a.add_argument("--inner-steps", type=int, help="test-time inner steps (default: each checkpoint's)")
    a.add_argument("--queries", type=int, help="query points per class, as in the paper's "
                   f"representation analyses (default: {ANALYSIS_QUERIES})")
    a.add_argument("--ways", type=int, help="default: the first checkpoint's")
    a.add_argument("--shots", type=int, help="default: the first checkpoint's")
    _layers_option(a, "layers to compare")
    a.add_argument("--frozen", nargs="+", metavar="SET", help="freezing, freezing-decomposed: the layer sets "
                   "to freeze, each comma-separated, e.g. none conv1 conv1,conv2 (default: none and every "
                   "prefix of the body)")
    _set_keys(a, "change how every model is tested: inner_lr, inner_loss, adapt_batchnorm or "
             "inner_steps_test (query points: --queries)")
    a.add_argument("--replace", action="store_true", help="overwrite an earlier result of this analysis in "
                   "--out that was made with other options")
    a.add_argument("--jobs", type=int, default=1, metavar="N", help="measure N checkpoints at a time, each in "
                   "a worker process with its share of the threads (on 2 cores, two one-thread processes beat "
                   "one with two threads); the numbers are those of one process with a worker's threads "
                   "(default: 1)")
    _data_root(a)
    _common(a)
    a.set_defaults(func=_analyze)


def _probe_parser(sub) -> None:
    pr = _command(sub, "probe", "save every layer's activations before/after the inner loop",
                 "Save every layer's activations before and after the inner loop, for analyses of your "
                 "own: OUT/meta.json and OUT/task-NNNN.safetensors with tensors named stepK/{layer} "
                 "after K inner steps (step0: before the inner loop; stepN: after its N steps), read with "
                 "safetensors.torch.load_file.")
    pr.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    pr.add_argument("--out", required=True, metavar="DIR", help="folder for the probes")
    _test_tasks(pr, default=100, why="fewer: each task's activations are written to disk")
    pr.add_argument("--inner-steps", type=int, help="test-time inner steps (default: the checkpoint's)")
    pr.add_argument("--queries", type=int, default=ANALYSIS_QUERIES, help="query points per class")
    _layers_option(pr, "layers to record")
    pr.add_argument("--points", choices=["query", "support"], default="query", help="which points' activations")
    pr.add_argument("--every-step", action="store_true", help="record after every inner step")
    _data_root(pr)
    _common(pr)
    pr.set_defaults(func=_probe)


def _reproduce_parser(sub) -> None:
    from repsim.names import DATASETS

    r = _command(sub, "reproduce", "the main job: train, run every analysis, write the report",
                "Trains small MAML, ANIL, BOIL, multiclass and multitask models (reused when already "
                "trained), runs every analysis and writes the report.")
    r.add_argument("--dataset", default="synthetic", choices=DATASETS,
                   help="data set")
    r.add_argument("--data-root", metavar="DIR", help="folder of the real data set (omniglot: the official "
                   "images_background/images_evaluation zips or folders); default: $REPSIM_DATA_ROOT")
    r.add_argument("--profile", default="quick", choices=["quick", "paper"],
                   help="quick (about 6-7 min on a 2-core CPU) or paper (full schedules, for a GPU)")
    r.add_argument("--out", default="reproduction", metavar="DIR", help="folder for runs/ and results/")
    r.add_argument("--figures", metavar="DIR", help="folder for the figures (default: OUT/results/figures)")
    r.add_argument("--jobs", type=int, default=1, metavar="N", help="train N runs at a time, and measure N "
                   "checkpoints at a time in each analysis, each in a worker process with its share of the "
                   "threads: for many cores (on 2, the quick profile took 0.93x the time); the numbers are "
                   "those of one process with a worker's threads, which moves training's float rounding "
                   "(default: 1)")
    _common(r)
    r.set_defaults(func=_reproduce)


def _report_parser(sub) -> None:
    rep = _command(sub, "report", "write report.md, report.html and figures from a results folder")
    rep.add_argument("results", help="results folder written by 'repsim analyze' or 'repsim reproduce'")
    rep.add_argument("--figures", metavar="DIR", help="folder for the figures (default: RESULTS/figures)")
    rep.add_argument("--title", help="the report's heading (default: a reproduction of Raghu et al. "
                     "for the paper's recipes, else a title naming the models)")
    rep.set_defaults(func=_report)


def _bench_parser(sub) -> None:
    b = _command(sub, "bench", "speed benchmarks, printed as side-by-side ratios")
    b.add_argument("what", choices=["train", "similarity", "threads", "freezing", "jobs", "scoring"],
                   help="meta-training (train: times higher too; pip install -e \".[bench]\"), similarity "
                   "measures, how torch's CPU threads should wait (threads: each policy alone and beside a busy "
                   "process), the freezing test against its decomposition on one checkpoint (freezing), an "
                   "analysis of the 5-way references in one process against one worker per core (jobs: "
                   "analyze --jobs), or test tasks scored one at a time against several at a time on a "
                   "thread each (scoring)")
    b.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    b.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke test")
    b.add_argument("--data-root", metavar="DIR", help="train: time real Omniglot tasks from this folder "
                   "instead of noise; freezing, jobs, scoring: the Omniglot folder")
    b.add_argument("--checkpoint", metavar="FILE", help="freezing, scoring: the checkpoint to time (default: "
                   "checkpoints/omniglot_5w1s_reduced/maml-s0/model.safetensors; scoring: and the 20-way 1-shot one)")
    b.add_argument("--ways", type=int, default=20, help="train: Omniglot setting to time")
    b.add_argument("--shots", type=int, default=1, help="train: Omniglot setting to time")
    b.add_argument("--compiled", action="store_true", help="train: time execution: compiled too (each "
                   "task's meta-gradient compiled by torch.compile; compiling takes minutes)")
    b.set_defaults(func=_bench)


def _resume_hint(args) -> str:
    """What to do after Ctrl-C: resume a run that has a checkpoint, else start it again."""
    if args.command == "analyze":  # per-checkpoint parts are kept in OUT/.partial
        return "; the same command continues it (checkpoints already measured are kept)"
    if args.command != "train":
        return ""
    out = args.out.replace("{seed}", str(args.seeds[0])) if args.seeds else args.out
    if any(Path(out).glob("checkpoints/iter-*.safetensors")):
        return "; continue the run with the same command and --resume"
    return "; no checkpoint was written yet, so start the run again (without --resume)"


def main(argv: list[str] | None = None) -> int:
    # torch's threads: the free cores spinning briefly, or one sleeping thread on a busy machine
    # (repsim.threads: measured; spinning threads beside a busy process run 2-5x slower); set
    # before torch is imported
    from repsim.threads import apply
    apply()
    args = build_parser().parse_args(argv)
    try:
        # --set read once, here: a key given twice is a slip, not a plan (evaluate and analyze
        # test by these; train and import compose them with a config file)
        from repsim.config import parse_overrides
        args.given = parse_overrides(getattr(args, "set", None) or [], once=True)
        args.func(args)
    except RepsimError as e:
        print(f"repsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"repsim: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `repsim ... | head` stopped reading: nothing of ours went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
