"""The ``repsim`` command. Each subcommand is a thin wrapper over a library function.

User errors (RepsimError) print one line, ``repsim: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from repsim.errors import RepsimError


def _train(args) -> None:
    from repsim.config import load_config
    from repsim.train import train

    overrides = list(args.set or [])
    if args.data_root:
        overrides.append(f"data_root={args.data_root}")
    config = load_config(args.config, overrides)
    print(f"training {config.algorithm} on {config.dataset} {config.ways}-way {config.shots}-shot "
          f"with {config.describe_conventions()}", flush=True)
    final = train(config, args.out, device=args.device, resume=args.resume,
                  progress=not args.quiet)
    print(f"trained {config.algorithm} on {config.dataset}: {final}")


def _evaluate(args) -> None:
    from repsim.evaluate import evaluate_checkpoint
    from repsim.io import atomic_write_json, atomic_write_text

    for target, kind in ((args.json, "json"), (args.csv, "csv")):
        _check_result_file(target, kind)  # before the work, not after it

    r = evaluate_checkpoint(args.checkpoint, tasks=args.tasks, inner_steps=args.inner_steps,
                            seed=args.seed, split=args.split, data_root=args.data_root,
                            queries=args.queries, nil=args.nil, device=args.device,
                            progress=not args.quiet)
    print(f"trained and tested with {r['convention_summary']}")
    print(f"{r['algorithm']} {r['dataset']} {r['ways']}-way {r['shots']}-shot, {r['mode']}"
          f"{'' if r['mode'] == 'nil' else ' (' + str(r['inner_steps']) + ' inner steps)'}: "
          f"{r['accuracy']:.2f} +- {r['ci95']:.2f}% (95% CI over {r['tasks']} {r['split']} "
          f"tasks, seed {r['seed']})")
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
    from pathlib import Path

    from repsim.io import check_file_target
    if target is None:
        return
    path = check_file_target(target)
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
    if r.logits_error is not None:
        print(f"logits match {args.check_logits[1]} to {r.logits_error:.2g} (largest difference)")
    print(f"imported {args.weights} as {r.path}, named {r.name!r}")


def _bench(args) -> None:
    if args.what == "train":
        from repsim.bench import main as bench_train
        bench_train(device=args.device, quick=args.quick, data_root=args.data_root,
                    ways=args.ways, shots=args.shots)
    else:
        from repsim.bench import similarity_main
        similarity_main(device=args.device, quick=args.quick)


def _analyze(args) -> None:
    from repsim.analyses import run_analysis

    frozen = None
    if args.frozen:
        frozen = [[] if f in ("", "none") else f.split(",") for f in args.frozen]
    path = run_analysis(args.analysis, args.checkpoints, args.out, tasks=args.tasks, seed=args.seed,
                        ways=args.ways, shots=args.shots, queries=args.queries,
                        steps=args.inner_steps, layers=args.layers, frozen_sets=frozen,
                        data_root=args.data_root, device=args.device, progress=not args.quiet)
    print(open(path).read().rstrip())
    print(f"written {path}")


def _probe(args) -> None:
    from repsim.analyses import Study
    from repsim.checkpoint import load_checkpoint
    from repsim.evaluate import own_inner_loop
    from repsim.probe import check_layers, iter_probes, probe_layers, save_probes

    from repsim.results import check_writable
    check_writable(args.out)  # before any work: a file, an unwritable folder, /proc
    ckpt = load_checkpoint(args.checkpoint)
    study = Study.for_checkpoint(ckpt, num_tasks=args.tasks, seed=args.seed, queries=args.queries,
                                 data_root=args.data_root, device=args.device, progress=not args.quiet)
    m = study.load(ckpt)
    c = ckpt.config
    layers = check_layers(m.model, args.layers or probe_layers(m.model))
    inner = own_inner_loop(c, m.model, args.inner_steps)
    probes = iter_probes(m.model, m.params, study.tasks, device=study.dev, layers=layers,
                         inner=inner, points=args.points, every_step=args.every_step)
    folder = save_probes(args.out, probes, {"checkpoint": str(ckpt.path), "layers": layers,
                                            "inner_steps": inner.steps, "points": args.points,
                                            "every_step": args.every_step,
                                            **c.conventions_used(), **study.provenance()})
    print(f"probes of {len(study.tasks)} tasks written to {folder}")


def _reproduce(args) -> None:
    from repsim.reproduce import reproduce
    reproduce(dataset=args.dataset, data_root=args.data_root, profile=args.profile, out=args.out,
              figures=args.figures, device=args.device, progress=not args.quiet)


def _report(args) -> None:
    from repsim.report import write_report
    print(f"report: {write_report(args.results, figures_dir=args.figures)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="repsim", description="Train meta-learners (MAML, first-order "
                                "MAML, ANIL, BOIL, multiclass, multitask) and measure rapid learning "
                                "vs feature reuse (Raghu et al., ICLR 2020).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train MAML / FOMAML / ANIL / BOIL / multiclass / multitask")
    t.add_argument("--config", help="YAML config file (recipes in analyses/configs/)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, config.yaml")
    t.add_argument("--data-root", help="folder of the real data set (same as --set data_root=DIR; "
                   "default $REPSIM_DATA_ROOT)")
    t.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="mean accuracy with 95%% CI over a fixed list of test tasks")
    e.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    e.add_argument("--tasks", type=int, default=600, help="number of test tasks (default 600)")
    e.add_argument("--inner-steps", type=int, help="inner-loop steps (default: the config's test-time steps)")
    e.add_argument("--seed", type=int, default=0, help="seed of the task list (default 0)")
    e.add_argument("--split", default="test", help="test (default), val or train")
    e.add_argument("--queries", type=int, help="query points per class (default: the config's)")
    e.add_argument("--nil", action="store_true", help="NIL testing: no head, cosine similarity to support features")
    e.add_argument("--data-root", help="folder of the real data set (default: the checkpoint's, or $REPSIM_DATA_ROOT)")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", help="also write the result to this JSON file")
    e.add_argument("--csv", help="also write the result to this CSV file")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)

    i = sub.add_parser("import", help="turn another library's conv4 weights into a repsim checkpoint",
                       description="Layouts (detected from the names): learn2learn (OmniglotCNN, CNN4), "
                       "torchmeta (examples/maml), pytorch-maml (MetaConvModel), higher (its MAML "
                       "example's nn.Sequential), finn-tf (Finn et al.'s "
                       "TensorFlow arrays as .npz), repsim. Example: repsim import l2l_maml.pt --set "
                       "shots=1 --name l2l-maml --out l2l.safetensors")
    i.add_argument("weights", help=".pt/.pth (loaded with weights_only), .npz or .safetensors")
    i.add_argument("--config", help="YAML config of how it was trained (algorithm, shots, inner_lr...)")
    i.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    i.add_argument("--layout", default="auto", help="auto (default: from the names), learn2learn, torchmeta, "
                   "pytorch-maml, higher, finn-tf or repsim")
    i.add_argument("--rename", action="append", metavar="REGEX=REPLACEMENT",
                   help="rename keys first (re.sub, repeatable), e.g. '^classifier\\.=head.'")
    i.add_argument("--drop", metavar="REGEX", help="leave out the keys this matches")
    i.add_argument("--name", help="the name its results carry (default: the weights' file name)")
    i.add_argument("--check-logits", nargs=2, metavar=("INPUTS.pt", "LOGITS.pt"),
                   help="refuse the import unless its logits on INPUTS match LOGITS saved from the original code")
    i.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    i.set_defaults(func=_import)

    a = sub.add_parser("analyze", help="run one feature-reuse analysis on checkpoints into a results folder",
                       description="Analyses: similarity (CCA/CKA before vs after the inner loop), "
                       "freezing (layers frozen at test time), accuracy (inner loop and NIL), "
                       "cross (similarity across models), heads (head ablations), regimes "
                       "(NIL accuracy by training regime, plus random features), through-training "
                       "(give run folders), weight-change (relative parameter change per layer).")
    from repsim.analyses import ANALYSES
    a.add_argument("analysis", choices=ANALYSES)
    a.add_argument("checkpoints", nargs="+", help="checkpoint files (through-training: run folders)")
    a.add_argument("--out", required=True, help="results folder (NAME.csv and NAME.json are written there)")
    a.add_argument("--tasks", type=int, default=100, help="test tasks (default 100; the paper uses 600)")
    a.add_argument("--seed", type=int, default=0, help="seed of the task list (same tasks for every checkpoint)")
    a.add_argument("--ways", type=int, help="default: the first checkpoint's")
    a.add_argument("--shots", type=int, help="default: the first checkpoint's")
    a.add_argument("--queries", type=int, default=15, help="query points per class (default 15, as in the paper)")
    a.add_argument("--inner-steps", type=int, help="test-time inner steps (default: the checkpoint's)")
    a.add_argument("--layers", nargs="+", help="layers to probe (default: all)")
    a.add_argument("--frozen", nargs="+", metavar="LAYERS",
                   help="freezing: comma-separated layer sets, e.g. none conv1 conv1,conv2 (default: every prefix)")
    a.add_argument("--data-root", help="folder of the real data set")
    a.add_argument("--device", default="auto")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=_analyze)

    pr = sub.add_parser("probe", help="save every layer's activations before/after the inner loop",
                        description="Writes OUT/meta.json and OUT/task-NNNN.safetensors with tensors "
                        "named step{s}/{layer} (step 0: before the inner loop, last: after).")
    pr.add_argument("checkpoint")
    pr.add_argument("--out", required=True, help="folder for the probes")
    pr.add_argument("--tasks", type=int, default=100)
    pr.add_argument("--seed", type=int, default=0, help="seed of the task list")
    pr.add_argument("--queries", type=int, default=15)
    pr.add_argument("--points", choices=["query", "support"], default="query")
    pr.add_argument("--every-step", action="store_true", help="record after every inner step")
    pr.add_argument("--inner-steps", type=int)
    pr.add_argument("--layers", nargs="+")
    pr.add_argument("--data-root")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=_probe)

    r = sub.add_parser("reproduce", help="the main job: train, run every analysis, write the report",
                       description="Trains small MAML, ANIL, BOIL, multiclass and multitask models (reused "
                       "when already trained), runs every analysis and writes the report.")
    r.add_argument("--dataset", default="synthetic", choices=["synthetic", "omniglot", "miniimagenet"])
    r.add_argument("--data-root", help="folder of the real data set (omniglot: the two official zips)")
    r.add_argument("--profile", default="quick", choices=["quick", "paper"],
                   help="quick (default, about 6-7 min on a 2-core CPU) or paper (full schedules, for a GPU)")
    r.add_argument("--out", default="reproduction", help="folder for runs/ and results/ (default ./reproduction)")
    r.add_argument("--figures", help="folder for the figures (default OUT/results/figures)")
    r.add_argument("--device", default="auto")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_reproduce)

    rep = sub.add_parser("report", help="write report.md, report.html and figures from a results folder")
    rep.add_argument("results", help="results folder written by 'repsim analyze' or 'repsim reproduce'")
    rep.add_argument("--figures", help="folder for the figures (default RESULTS/figures)")
    rep.set_defaults(func=_report)

    b = sub.add_parser("bench", help="speed benchmarks, printed as side-by-side ratios")
    b.add_argument("what", choices=["train", "similarity"], help="meta-training or similarity measures")
    b.add_argument("--device", default="auto")
    b.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke test")
    b.add_argument("--data-root", help="train: time real Omniglot tasks from this folder instead of noise")
    b.add_argument("--ways", type=int, default=20, help="train: Omniglot setting to time (default 20)")
    b.add_argument("--shots", type=int, default=1, help="train: Omniglot setting to time (default 1)")
    b.set_defaults(func=_bench)
    return p


def _resume_hint(args) -> str:
    """What to do after Ctrl-C: resume a run that has a checkpoint, else start it again."""
    from pathlib import Path
    if args.command != "train":
        return ""
    if any(Path(args.out).glob("checkpoints/iter-*.safetensors")):
        return "; continue the run with the same command and --resume"
    return "; no checkpoint was written yet, so start the run again (without --resume)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RepsimError as e:
        print(f"repsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"repsim: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
