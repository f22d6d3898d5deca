"""What each ``distill`` subcommand does (``cmd_<name>(args) -> exit code``); the parser and
the error handling are in ``distill.cli``. Heavy modules are imported inside the commands, so
``distill --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distill.errors import RecipeError


def cmd_train(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.training import train

    metrics = train(load_recipe(args.recipe, args.overrides))
    print(_metrics_line(metrics))
    print(f"metrics: {metrics['run_dir']}/metrics.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.training import evaluate

    if args.checkpoint is None:  # distill eval CKPT [overrides]: the recipe stored in it
        recipe, checkpoint = stored_recipe(args.recipe, args.overrides), args.recipe
    else:
        recipe, checkpoint = load_recipe(args.recipe, args.overrides), args.checkpoint
    metrics = evaluate(recipe, checkpoint, args.output)
    print(_metrics_line(metrics))
    print(per_class_table(metrics.get("per_class") or {}))
    print(f"metrics: {metrics['metrics_file']}")
    return 0


def stored_recipe(checkpoint: str, overrides: list[str]):
    """The recipe a `distill train` / `run` checkpoint was trained with, plus ``overrides``."""
    from distill.checkpoints import read_checkpoint
    from distill.config import recipe_from_values

    path = Path(checkpoint)
    if path.suffix in (".yaml", ".yml"):
        raise RecipeError(f"{path} is a recipe: give the checkpoint too (--checkpoint CKPT), "
                          "or the checkpoint alone")
    hparams = read_checkpoint(path).get("hyper_parameters")
    values = hparams.get("recipe") if isinstance(hparams, dict) else None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: holds no recipe (an imported or exported model?); evaluate "
                          "it with one: distill eval RECIPE --checkpoint CKPT")
    return recipe_from_values(dict(values), overrides, f"{path} (its stored recipe)")


def per_class_table(per_class: dict[str, float | None]) -> str:
    """AP per class, best first (classes without validation objects last, as '-')."""
    rows = sorted(per_class.items(), key=lambda item: -1.0 if item[1] is None else -item[1])
    width = max([len("class"), *(len(name) for name in per_class)])
    lines = [f"{'class':<{width}}  AP", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {'-' if ap is None else f'{ap:.4f}'}" for name, ap in rows]
    return "\n".join(lines)


def cmd_init(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.templates import write_recipe

    out = write_recipe(args.format, args.root, args.out, args.name)
    load_recipe(out)  # what was written loads
    print(f"written: {out}\nnext: distill data {out}   then   distill run {out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from distill.config import load_recipe, recipe_to_yaml

    print(recipe_to_yaml(load_recipe(args.recipe, args.overrides)), end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.pipeline import check

    report = check(load_recipe(args.recipe, args.overrides), batches=args.batches)
    return 1 if report.get("teacher_at_chance") else 0


def cmd_run(args: argparse.Namespace) -> int:
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


def cmd_info(args: argparse.Namespace) -> int:
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


def cmd_data(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.training import prepare_data

    data = prepare_data(load_recipe(args.recipe, args.overrides))
    print(json.dumps(data.summary(), indent=2))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
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


def cmd_import_effdet(args: argparse.Namespace) -> int:
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


def cmd_predict(args: argparse.Namespace) -> int:
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


def cmd_export(args: argparse.Namespace) -> int:
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
