"""The ``distill`` command line.

``train``, ``eval``, ``run``, ``check``, ``info``, ``data``, ``search``, ``import-effdet``, and
for a trained detector: ``predict`` (drawn images + COCO results JSON) and ``export`` (ONNX or
TorchScript).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from pathlib import Path

from distill.errors import RecipeError, TrainingDiverged


def _cmd_train(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.training import train

    metrics = train(load_recipe(args.recipe, args.overrides))
    print(_metrics_line(metrics))
    print(f"metrics: {metrics['run_dir']}/metrics.json")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.training import evaluate

    metrics = evaluate(load_recipe(args.recipe, args.overrides), args.checkpoint, args.output)
    print(_metrics_line(metrics))
    print(f"metrics: {metrics['metrics_file']}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.pipeline import check

    report = check(load_recipe(args.recipe, args.overrides), batches=args.batches)
    return 1 if report.get("teacher_at_chance") else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.pipeline import run

    run(load_recipe(args.recipe, args.overrides))
    return 0


def _print_registries() -> int:
    from distill.distillation import BOX_KD_LOSSES, CLS_KD_LOSSES, FEATURE_LOSSES, TERMS
    from distill.distillation.terms import resolve_terms  # noqa: F401  (registers the kinds)

    for what, registry in (("term kinds (distill.terms[].kind)", TERMS),
                           ("feature losses (feature terms' loss)", FEATURE_LOSSES),
                           ("class-score losses (prediction / crosskd cls)", CLS_KD_LOSSES),
                           ("box losses (prediction / crosskd box)", BOX_KD_LOSSES)):
        print(f"{what}: {', '.join(registry.names())}")
    return 0


def _model_options(items: list[str]) -> dict:
    """``KEY=VALUE`` builder options (values read as YAML: ``light_levels=[3]``)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--option '{item}' is not of the form key=value")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _cmd_info(args: argparse.Namespace) -> int:
    from distill.info import format_breakdown, model_breakdown, model_info
    from distill.models import list_models

    if args.distill:
        return _print_registries()
    names = list_models() if args.model in (None, "all") else [args.model]
    if args.model not in (None, "all") and args.model not in names:
        raise RecipeError(f"unknown model '{args.model}'; valid: {', '.join(list_models())}")
    info = model_breakdown if args.breakdown else model_info
    options = _model_options(args.option)
    rows = [info(n, num_classes=args.num_classes, image_size=args.image_size, **options)
            for n in names]
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 and args.model else rows, indent=2))
        return 0
    if args.breakdown:
        print("\n\n".join(format_breakdown(row) for row in rows))
        return 0
    print(f"{'model':<24} {'image':>7} {'params':>10} {'MACs':>10}  description")
    for row in rows:
        size = f"{row['image_size'][0]}"
        print(
            f"{row['name']:<24} {size:>7} {row['params'] / 1e6:>9.2f}M {row['macs'] / 1e9:>9.2f}B"
            f"  {row.get('description', '')}"
        )
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.training import prepare_data

    data = prepare_data(load_recipe(args.recipe, args.overrides))
    print(json.dumps(data.summary(), indent=2))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.search.zero_shot import (
        current_device,
        default_latency_path,
        run_search,
        search_settings,
        space_from_config,
    )

    recipe = load_recipe(args.recipe, args.overrides)
    cfg, out_dir = search_settings(recipe)
    if args.level != "zero_shot":
        return _trained_search(args, recipe, out_dir)
    if args.member is not None:
        raise RecipeError("--member K goes with --level modular")
    if args.profile:
        from distill.search.latency import profile_latency_table

        device = current_device()
        path = Path(recipe.search.latency_table or default_latency_path(
            recipe.output_dir, cfg.image_size, device))
        print(f"measuring the latency table on {device} at {cfg.image_size} px ...")
        table = profile_latency_table(space_from_config(cfg.space), cfg.image_size,
                                      device=device, progress=not args.no_progress)
        table.save(path)
        print(f"latency table ({table.device}, {len(table.entries)} operators x "
              f"{len(table.channels)}x{len(table.channels)} channel counts): {path}")
        return 0
    budget = recipe.search.budget
    if all(getattr(budget, k) is None for k in ("params", "macs", "layers", "latency_ms")):
        print("distill search: warning: no search.budget set; the score favours ever larger "
              "structures", file=sys.stderr)
    try:
        result = run_search(cfg, out_dir, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    m = result.measures
    latency = f"  latency {m['latency_ms']:.2f} ms" if "latency_ms" in m else ""
    print(f"best of {result.candidates} candidates ({result.seconds:.0f} s): score "
          f"{result.score:.4g}  params {m['params'] / 1e6:.2f}M  MACs {m['macs'] / 1e9:.3f}B "
          f"at {cfg.image_size} px  layers {m['layers']}{latency}")
    print(f"structure: {result.files['structure']}")
    return 0


def _trained_search(args: argparse.Namespace, recipe, out_dir: Path) -> int:
    """`distill search --level structural | modular`: SM-NAS, candidates trained briefly."""
    from distill.search.levels import run_level
    from distill.search.results import summary_lines

    if args.profile:
        raise RecipeError("--profile measures the zero-shot level's latency table; the "
                          f"{args.level} level times every candidate end to end")
    try:
        result = run_level(recipe, args.level, out_dir, member=args.member, resume=args.resume,
                           progress=not args.no_progress, recipe_path=args.recipe)
    except KeyboardInterrupt:
        return 130
    print("\n".join(summary_lines(result)))
    return 0


def _cmd_import_effdet(args: argparse.Namespace) -> int:
    from distill.models.effdet_import import COCO80_EFFDET_INDICES, import_effdet

    indices = None
    if args.class_indices == "coco80":
        indices = list(COCO80_EFFDET_INDICES)
    elif args.class_indices:
        try:
            indices = [int(i) for i in args.class_indices.split(",") if i.strip()]
        except ValueError as err:
            raise ValueError(f"--class-indices: expected comma-separated integers: {err}") from err
    hparams = import_effdet(args.weights, args.variant, args.out, args.num_classes, indices)
    print(
        f"{args.variant} -> {hparams['model']['name']} ({hparams['num_classes']} classes): "
        f"{args.out}"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from distill.predict import run_predict

    summary = run_predict(
        args.checkpoint, args.source, args.output, score_threshold=args.score_threshold,
        draw_threshold=args.draw_threshold, device=args.device, batch_size=args.batch_size,
        max_detections=args.max_detections, draw=not args.no_draw,
        progress=not args.no_progress, coco=args.coco)
    files = summary["files"]
    print(f"{summary['detections']} detections in {summary['images']} images: "
          f"{files['detections']} (image ids: {files['images']})")
    if "drawn" in files:
        print(f"drawn images: {files['drawn']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from distill.export import export_checkpoint

    meta = export_checkpoint(
        args.checkpoint, args.format, args.output, nms=args.nms,
        score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
        max_detections=args.max_detections, opset=args.opset)
    size = meta["input"]["shape"][-1]
    print(f"{meta['format']} ({'with NMS' if meta['nms'] else 'raw outputs, no NMS'}), input "
          f"[batch, 3, {size}, {size}], outputs {', '.join(meta['outputs'])}: {meta['file']}")
    print(f"settings and class names: {meta['file']}.json")
    return 0


def _metrics_line(metrics: dict) -> str:
    return f"mAP {metrics['map']:.4f}  mAP50 {metrics['map_50']:.4f}  mAP75 {metrics['map_75']:.4f}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``distill`` command."""
    parser = argparse.ArgumentParser(
        prog="distill", description="Train, evaluate and distil object detectors from YAML recipes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train the recipe's detector")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.epochs=5")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on the recipe's validation split")
    ev.add_argument("recipe")
    ev.add_argument("overrides", nargs="*")
    ev.add_argument("--checkpoint", required=True, help="a checkpoint written by `distill train`")
    ev.add_argument("--output", help="metrics JSON path (default: in the checkpoint's run folder)")
    ev.set_defaults(func=_cmd_eval)

    run = sub.add_parser(
        "run", help="teacher -> baseline student -> distilled student, then report.json/.md"
    )
    run.add_argument("recipe")
    run.add_argument("overrides", nargs="*")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check", help="pre-flight check of a distillation recipe: levels, align, teacher weights"
    )
    check.add_argument("recipe")
    check.add_argument("overrides", nargs="*")
    check.add_argument("--batches", type=int, default=4, help="validation batches for the teacher")
    check.set_defaults(func=_cmd_check)

    info = sub.add_parser("info", help="parameters and multiply-adds of a model (or all)")
    info.add_argument("model", nargs="?", help="model name; omit or 'all' for every model")
    info.add_argument("--num-classes", type=int, default=90)
    info.add_argument("--image-size", type=int, default=None)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--distill", action="store_true",
                      help="list the registered distillation term kinds and losses")
    info.add_argument("--breakdown", action="store_true",
                      help="FLOPs and parameters per component (backbone, neck, head) and per "
                      "head level (P3..P7)")
    info.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="a model.options setting, repeatable (e.g. light_levels=[3])")
    info.set_defaults(func=_cmd_info)

    data = sub.add_parser("data", help="prepare and validate the recipe's dataset, print a summary")
    data.add_argument("recipe")
    data.add_argument("overrides", nargs="*")
    data.set_defaults(func=_cmd_data)

    _add_search_import(sub)
    _add_predict_export(sub)
    return parser


def _add_search_import(sub: argparse._SubParsersAction) -> None:
    """The ``search`` and ``import-effdet`` sub-commands."""
    search = sub.add_parser(
        "search", help="zero-shot (MAE-NAS) search of a backbone structure under a budget, or "
        "SM-NAS's structural / modular search of trained candidate detectors"
    )
    search.add_argument("recipe")
    search.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.seed=1")
    search.add_argument(
        "--profile",
        action="store_true",
        help="measure the per-operator latency table on this machine (cuda if available, "
        "else cpu) for search.budget.latency_ms, and save it (see search.latency_table)",
    )
    search.add_argument(
        "--resume", action="store_true", help="continue from the output folder's population.json"
    )
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.add_argument(
        "--level", choices=["zero_shot", "structural", "modular"], default="zero_shot",
        help="zero_shot (default): MAE-NAS backbone search, no training; structural: SM-NAS "
        "backbone / neck / levels / head / input size, each candidate trained "
        "search.train_steps steps and timed; modular: channel plan and widths around --member",
    )
    search.add_argument("--member", type=int, default=None,
                        help="--level modular: the member K of the structural front.json")
    search.set_defaults(func=_cmd_search)

    imp = sub.add_parser(
        "import-effdet", help="convert effdet EfficientDet weights into a teacher checkpoint"
    )
    imp.add_argument(
        "--variant",
        required=True,
        help="effdet config name: tf_efficientdet_d0..d7 or efficientdet_d0..d5",
    )
    imp.add_argument("--weights", required=True, help="effdet weights file (.pth state dict)")
    imp.add_argument("--out", required=True, help="checkpoint to write (e.g. teacher.ckpt)")
    imp.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the model (default: the file's; others re-initialise the class head)",
    )
    imp.add_argument(
        "--class-indices",
        default=None,
        help="comma-separated effdet class channels to keep, in label order "
        "(effdet COCO models: category id - 1), or 'coco80' for the 80 COCO 2017 categories "
        "in category-id order, the label order `data.format: coco` gives",
    )
    imp.set_defaults(func=_cmd_import_effdet)


def _add_predict_export(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` and ``export`` sub-commands."""
    pred = sub.add_parser(
        "predict", help="run a checkpoint on images: drawn copies and COCO results JSON")
    pred.add_argument("checkpoint", help="a `distill train` / `distill run` checkpoint")
    pred.add_argument("source", help="an image, a folder of images or a glob ('imgs/**/*.jpg')")
    pred.add_argument("--output", default="predictions",
                      help="output folder (default: %(default)s)")
    pred.add_argument("--score-threshold", type=float, default=0.05,
                      help="detections kept in the JSON (default: %(default)s, as distill eval)")
    pred.add_argument("--draw-threshold", type=float, default=0.3,
                      help="detections drawn on the images (default: %(default)s)")
    pred.add_argument("--max-detections", type=int, default=100, help="per image")
    pred.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    pred.add_argument("--batch-size", type=int, default=8)
    pred.add_argument("--coco", default=None,
                      help="a COCO annotation file of these images: take its image and "
                      "category ids (default: images 1..N, categories label + 1)")
    pred.add_argument("--no-draw", action="store_true", help="write the JSON files only")
    pred.add_argument("--no-progress", action="store_true", help="no progress bar")
    pred.set_defaults(func=_cmd_predict)

    exp = sub.add_parser("export", help="export a checkpoint's detector to ONNX or TorchScript")
    exp.add_argument("checkpoint", help="a `distill train` / `distill run` checkpoint")
    exp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    exp.add_argument("--nms", action=argparse.BooleanOptionalAction, default=True,
                     help="post-processing (top-k, threshold, class-wise NMS) in the graph; "
                     "--no-nms: raw logits, box deltas, decoded boxes and scores")
    exp.add_argument("--output", default=None,
                     help="file to write (default: beside the checkpoint, .onnx or "
                     ".torchscript.pt)")
    exp.add_argument("--score-threshold", type=float, default=0.05, help="with --nms")
    exp.add_argument("--iou-threshold", type=float, default=None,
                     help="with --nms (default: the model's own, as predict: 0.5, DAMO-YOLO 0.7)")
    exp.add_argument("--max-detections", type=int, default=100, help="per image, with --nms")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset")
    exp.set_defaults(func=_cmd_export)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``distill`` console script."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    try:
        return args.func(args)
    except (RecipeError, ValueError, FileNotFoundError) as err:
        print(f"distill {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"distill {args.command}: error: {err}", file=sys.stderr)
        return 1
    except SystemExit as err:  # Lightning ends a run on SIGTERM with a bare SystemExit (code 0)
        if type(err).__name__ != "SIGTERMException":
            raise
        print(f"distill {args.command}: stopped by SIGTERM before the run finished (no metrics "
              "or report written). Run the same command with resume=true to continue from "
              "the run folder's checkpoints/last.ckpt.", file=sys.stderr)
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
