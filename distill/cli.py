"""The ``distill`` command line.

``train``, ``eval``, ``run``, ``check``, ``info``, ``data``, ``search``, ``import-effdet``, and
for a trained detector: ``predict`` (drawn images + COCO results JSON) and ``export`` (ONNX or
TorchScript).
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings

from distill import __version__, commands
from distill.errors import RecipeError, TrainingDiverged

RECIPE_HELP = "recipe YAML file (`base:` inherits; relative input paths are read beside it)"
OVERRIDES_HELP = "key=value overrides, e.g. trainer.epochs=5 (anywhere on the line)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``distill`` command."""
    parser = argparse.ArgumentParser(
        prog="distill", description="Train, evaluate and distil object detectors from YAML recipes."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="print the fully resolved recipe (bases merged, "
                                           "overrides applied, defaults filled in) as YAML")
    config.add_argument("recipe", help="recipe YAML file")
    config.add_argument("overrides", nargs="*", help="key=value overrides")
    config.set_defaults(func=commands.cmd_config)

    init = sub.add_parser("init", help="write a recipe to distil on your own dataset "
                                       "(COCO, VOC or YOLO), from the installed package")
    init.add_argument("format", choices=["coco", "voc", "yolo"], help="the dataset's format")
    init.add_argument("root", help="the dataset: its folder (yolo: data.yaml or its folder)")
    init.add_argument("--out", default="recipe.yaml",
                      help="the recipe file to write (default recipe.yaml; never overwritten)")
    init.add_argument("--name", default=None, help="the run name (default: the file's stem)")
    init.set_defaults(func=commands.cmd_init)

    train = sub.add_parser("train", help="train the recipe's detector")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.epochs=5")
    train.set_defaults(func=commands.cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on the recipe's validation split "
                                     "(distill eval CKPT: the recipe stored in it)")
    ev.add_argument("recipe", help="recipe YAML file, or the checkpoint alone: its stored "
                                   "recipe gives the model, the classes and the data")
    ev.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=...")
    ev.add_argument("--checkpoint", help="a checkpoint written by `distill train` / `run` "
                                         "(with a recipe YAML)")
    ev.add_argument("--output", help="metrics JSON path (default: in the checkpoint's run folder)")
    ev.set_defaults(func=commands.cmd_eval)

    run = sub.add_parser(
        "run", help="teacher -> baseline student -> distilled student, then report.json/.md"
    )
    run.add_argument("recipe", help=RECIPE_HELP)
    run.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    run.set_defaults(func=commands.cmd_run)

    check = sub.add_parser(
        "check", help="pre-flight check of a distillation recipe: levels, align, teacher weights"
    )
    check.add_argument("recipe", help=RECIPE_HELP)
    check.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    check.add_argument("--batches", type=int, default=4, help="validation batches for the teacher")
    check.set_defaults(func=commands.cmd_check)

    info = sub.add_parser("info", help="parameters and multiply-adds of a model (or all)")
    info.add_argument("model", nargs="?", help="model name; omit or 'all' for every model")
    info.add_argument("--num-classes", type=int, default=90,
                      help="classes of the head (default 90, COCO's ids)")
    info.add_argument("--image-size", type=int, default=None,
                      help="input side in pixels (default: the model's own)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--distill", action="store_true",
                      help="list the registered distillation term kinds and losses")
    info.add_argument("--breakdown", action="store_true",
                      help="FLOPs and parameters per component (backbone, neck, head) and per "
                      "head level (P3..P7)")
    info.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="a model.options setting, repeatable (e.g. light_levels=[3])")
    info.set_defaults(func=commands.cmd_info)

    data = sub.add_parser("data", help="prepare and validate the recipe's dataset, print a summary")
    data.add_argument("recipe", help=RECIPE_HELP)
    data.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    data.set_defaults(func=commands.cmd_data)

    _add_search_import(sub)
    _add_predict_export(sub)
    return parser


def _add_search_import(sub: argparse._SubParsersAction) -> None:
    """The ``search`` and ``import-effdet`` sub-commands."""
    search = sub.add_parser(
        "search", help="zero-shot (MAE-NAS) search of a backbone structure under a budget, or "
        "SM-NAS's structural / modular search of trained candidate detectors"
    )
    search.add_argument("recipe", help=RECIPE_HELP)
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
    search.set_defaults(func=commands.cmd_search)

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
    imp.set_defaults(func=commands.cmd_import_effdet)


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
    pred.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    pred.add_argument("--coco", default=None,
                      help="a COCO annotation file of these images: take its image and "
                      "category ids (default: images 1..N, categories label + 1)")
    pred.add_argument("--no-draw", action="store_true", help="write the JSON files only")
    pred.add_argument("--no-progress", action="store_true", help="no progress bar")
    pred.set_defaults(func=commands.cmd_predict)

    exp = sub.add_parser("export", help="export a checkpoint's detector to ONNX or TorchScript")
    exp.add_argument("checkpoint", help="a `distill train` / `distill run` checkpoint")
    exp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                     help="the graph format (default onnx)")
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
    exp.set_defaults(func=commands.cmd_export)


# flags other tools take for what is a recipe key here
FLAG_KEYS = {"epochs": "trainer.epochs", "devices": "trainer.devices", "gpus": "trainer.devices",
             "batch-size": "data.batch_size", "batch_size": "data.batch_size", "lr": "optim.lr",
             "seed": "seed", "precision": "trainer.precision", "image-size": "model.image_size",
             "imgsz": "model.image_size", "output-dir": "output_dir", "name": "name",
             "resume": "resume", "workers": "data.num_workers", "num-workers": "data.num_workers"}


def extra_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    unknown: list[str]) -> None:
    """``key=value`` words after an option (``distill eval R --checkpoint X key=value``) join
    the overrides; a flag the command does not take stops with the recipe key to use."""
    for i, word in enumerate(unknown):
        if word.startswith("-"):
            flag = word.lstrip("-").split("=")[0]
            value = word.split("=", 1)[1] if "=" in word else (
                unknown[i + 1] if i + 1 < len(unknown) and "=" not in unknown[i + 1] else "...")
            key = FLAG_KEYS.get(flag) if hasattr(args, "overrides") else None
            hint = (f"set the recipe key instead: {key}={value}" if key else
                    "recipe settings are key=value words (`distill config RECIPE` lists them)"
                    if hasattr(args, "overrides") else f"see distill {args.command} --help")
            parser.error(f"{args.command}: {word} is not an option of this command; {hint}")
    for word in unknown:
        if "=" not in word or not hasattr(args, "overrides"):
            parser.error(f"{args.command}: unrecognized argument {word!r}")
        args.overrides.append(word)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``distill`` console script."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    extra_overrides(parser, args, unknown)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    try:
        return args.func(args)
    except (RecipeError, ValueError, FileNotFoundError) as err:
        print(f"distill {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the user gave: disk full, read-only, a folder, missing
        where = err.filename or "a file"
        print(f"distill {args.command}: error: {where}: {err.strerror or err}; check that the "
              "path exists, is what the command expects (a file or a folder), can be written "
              "and that its disk has room", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"distill {args.command}: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # a DataLoader worker that SIGTERM reached before its init ran
        if "killed by signal: Terminated" not in str(err):
            raise
        return stopped_by_sigterm(args.command)
    except SystemExit as err:  # Lightning ends a run on SIGTERM with a bare SystemExit (code 0)
        if type(err).__name__ != "SIGTERMException":
            raise
        return stopped_by_sigterm(args.command)


def stopped_by_sigterm(command: str) -> int:
    """Say how to continue a run that SIGTERM stopped; the exit code a shell gives it (143)."""
    print(f"distill {command}: stopped by SIGTERM before the run finished (no metrics or "
          "report written). Run the same command with resume=true to continue from the run "
          "folder's checkpoints/last.ckpt.", file=sys.stderr)
    return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
