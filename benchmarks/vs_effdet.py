"""Benchmark: this project against effdet (the peer) on the same EfficientDet, in one run.

    .venv/bin/python benchmarks/vs_effdet.py [--presets d0 d1 small] [--batch 4] [--rounds 5]

For every preset both libraries build the same architecture (effdet's config: no conv bias
before BatchNorm, its drop-path rate), 90 classes, and this project's model gets effdet's
weights, so both compute the same function (the detections are compared). Timed, interleaved
(``timing.interleaved``), medians:

- training step: forward, loss with label assignment, backward, AdamW step (``--batch``);
- inference at batch 1 and 8: raw network outputs, and with post-processing (top-k, decoding,
  NMS) into final detections, under ``torch.inference_mode``.

Both run in both memory formats: this project as its recipes run it (channels_last,
``trainer.channels_last: true``) and in NCHW; effdet in NCHW (how its bench runs by default) and
in channels_last (one line for its users: the model and the images ``.to(memory_format=
torch.channels_last)``). The headline ratios are like for like (ours NHWC / effdet NHWC, ours
NCHW / effdet NCHW); ``*_vs_effdet_nchw`` keeps ours NHWC against effdet's default. Results go
to ``benchmarks/results/vs_effdet.json``; the numbers and the command are in
docs/BENCHMARKS.md. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import math
import warnings
from pathlib import Path
from typing import Any

import effdet
import torch
from effdet.bench import DetBenchPredict, DetBenchTrain
from timing import interleaved, median_ms, write_results

from distill.models import build_model
from distill.models.effdet_import import box_channel_order, our_key

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 90
BOXES_PER_IMAGE = 8
CANDIDATES = 500  # (anchor, class) scores above 0.05 per image
LOGIT_STD = 2.0  # spread of the class logits
# preset: (effdet config to start from, its overrides, our model name, image size)
PRESETS: dict[str, tuple[str, dict[str, Any], str, int]] = {
    "d0": ("efficientdet_d0", {}, "efficientdet_d0", 512),
    "d1": ("efficientdet_d1", {}, "efficientdet_d1", 640),
    # this project's phi = -3 preset (the Quick start student), rebuilt in effdet
    "small": (
        "efficientdet_d0",
        dict(backbone_name="tinynet_e", fpn_channels=24, fpn_cell_repeats=1,
             box_class_repeats=2, backbone_args=dict(drop_path_rate=0.2)),
        "efficientdet_dm3",
        128,
    ),
}


def build_pair(preset: str) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """(effdet ``EfficientDet``, our ``Detector`` holding the same weights, image size)."""
    base, overrides, ours_name, size = PRESETS[preset]
    cfg = effdet.get_efficientdet_config(base)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.num_classes, cfg.image_size = NUM_CLASSES, (size, size)
    torch.manual_seed(0)
    ref = effdet.EfficientDet(cfg, pretrained_backbone=False)
    ours = build_model(
        ours_name, num_classes=NUM_CLASSES, image_size=size, conv_bias=False,
        drop_path_rate=cfg.backbone_args["drop_path_rate"],
    )
    state = {}
    for key, value in ref.state_dict().items():
        if key.startswith("box_net.predict.conv_pw."):
            value = value[box_channel_order(value.shape[0])]
        state[our_key(key)] = value
    ours.load_state_dict(state)
    calibrate_scores(ref, ours, size)
    return ref, ours, size


@torch.no_grad()
def calibrate_scores(ref: torch.nn.Module, ours: torch.nn.Module, size: int) -> None:
    """Give both models the same class predictor with spread-out scores, ``CANDIDATES`` per
    image above 0.05 (as a trained detector has): effdet's initial one scores every anchor
    0.0100 +- 1e-5, which makes the order of detections a matter of float rounding."""
    ref_conv, ours_conv = ref.class_net.predict.conv_pw, ours.class_head.predict.conv_pw
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(1, 3, size, size, generator=gen)
    weight = torch.randn(ref_conv.weight.shape, generator=gen)
    ours_conv.weight.copy_(weight)
    weight *= LOGIT_STD / float(ours.eval()(images).cls_logits.std())
    ref_conv.weight.copy_(weight)
    ours_conv.weight.copy_(weight)
    logits = ours(images).cls_logits.reshape(-1)
    shift = math.log(0.05 / 0.95) - float(logits.topk(CANDIDATES).values[-1])
    ref_conv.bias.add_(shift)
    ours_conv.bias.add_(shift)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with its weights in channels_last (what an effdet user writes)."""
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def synthetic_targets(batch: int, size: int, seed: int = 0) -> tuple[list[dict], dict]:
    """The same random boxes as our targets (xyxy, 0-based) and effdet's (yxyx, 1-based)."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, BOXES_PER_IMAGE, 2, generator=gen) * size * 0.7
    wh = size * (0.05 + 0.25 * torch.rand(batch, BOXES_PER_IMAGE, 2, generator=gen))
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=-1)
    labels = torch.randint(0, NUM_CLASSES, (batch, BOXES_PER_IMAGE), generator=gen)
    ours = [{"boxes": boxes[i], "labels": labels[i]} for i in range(batch)]
    theirs = {"bbox": boxes[..., [1, 0, 3, 2]], "cls": labels.float() + 1}
    return ours, theirs


def train_steps(
    ref: torch.nn.Module, ours: torch.nn.Module, size: int, batch: int, compile_: bool = False
) -> dict:
    """One training step of each contender (same weights, images and boxes)."""
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    images_nhwc = images.contiguous(memory_format=torch.channels_last)
    targets, ref_targets = synthetic_targets(batch, size)
    benches = {"effdet": (DetBenchTrain(copy.deepcopy(ref)).train(), images),
               "effdet_nhwc": (DetBenchTrain(channels_last(ref)).train(), images_nhwc)}
    contenders = {
        "ours": copy.deepcopy(ours).set_channels_last(True).train(),
        "ours_nchw": copy.deepcopy(ours).train(),
    }
    if compile_:  # trainer.compile: true
        contenders["ours_compiled"] = copy.deepcopy(ours).set_channels_last(True).train()
        contenders["ours_compiled"].compile()
    optims = {name: torch.optim.AdamW(m.parameters(), 1e-4) for name, m in contenders.items()}
    ref_optims = {name: torch.optim.AdamW(b.parameters(), 1e-4) for name, (b, _) in benches.items()}

    def ours_step(name: str):
        def step() -> None:
            model, optim = contenders[name], optims[name]
            optim.zero_grad(set_to_none=True)
            model.loss(model(images), targets)["loss"].backward()
            optim.step()
        return step

    def effdet_step(name: str):
        def step() -> None:
            (bench, inputs), optim = benches[name], ref_optims[name]
            optim.zero_grad(set_to_none=True)
            bench(inputs, ref_targets)["loss"].backward()
            optim.step()
        return step

    return {**{name: effdet_step(name) for name in benches},
            **{name: ours_step(name) for name in contenders}}


def inference_fns(
    ref: torch.nn.Module, ours: torch.nn.Module, images: torch.Tensor, compile_: bool = False
) -> dict:
    """Raw and post-processed inference of each contender on ``images``."""
    bench = DetBenchPredict(copy.deepcopy(ref)).eval()
    bench_nhwc = DetBenchPredict(channels_last(ref)).eval()
    images_nhwc = images.contiguous(memory_format=torch.channels_last)
    batch, size = images.shape[0], images.shape[-1]
    # boxes clipped to the image, as ours are
    info = {"img_scale": torch.ones(batch), "img_size": torch.tensor([[size, size]] * batch)}
    nhwc = copy.deepcopy(ours).set_channels_last(True).eval()
    nchw = copy.deepcopy(ours).eval()
    fns = {
        "effdet_raw": lambda: bench.model(images),
        "effdet_nhwc_raw": lambda: bench_nhwc.model(images_nhwc),
        "ours_raw": lambda: nhwc(images),
        "ours_nchw_raw": lambda: nchw(images),
        # effdet keeps the 100 best boxes whatever their score: ours with threshold 0 gives
        # the same detections; ours_post05 is `distill eval`'s default (score > 0.05)
        "effdet_post": lambda: bench(images, info),
        "effdet_nhwc_post": lambda: bench_nhwc(images_nhwc, info),
        "ours_post": lambda: nhwc.predict(nhwc(images), score_threshold=0.0),
        "ours_post05": lambda: nhwc.predict(nhwc(images)),
    }
    if compile_:
        compiled = copy.deepcopy(ours).set_channels_last(True).eval()
        compiled.compile()
        fns["ours_compiled_raw"] = lambda: compiled(images)
        fns["ours_compiled_post"] = lambda: compiled.predict(compiled(images), score_threshold=0)
    return fns


def _by_score_then_x1(scores: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(boxes[:, 0], stable=True)
    return order[torch.argsort(scores[order], descending=True, stable=True)]


def detections_agree(fns: dict) -> dict[str, float]:
    """Compare the final detections of both libraries (effdet pads to 100 with zeros)."""
    ref = fns["effdet_post"]()
    ours = fns["ours_post"]()
    worst, count_diff = 0.0, 0
    for det, ref_det in zip(ours, ref):
        ref_det = ref_det[ref_det[:, 4] > 0]
        count_diff = max(count_diff, abs(len(det["boxes"]) - len(ref_det)))
        n = min(len(det["boxes"]), len(ref_det))
        if n:  # equal scores come in no defined order: order ties by x1 on both sides
            ours_boxes = det["boxes"][_by_score_then_x1(det["scores"], det["boxes"])]
            ref_boxes = ref_det[_by_score_then_x1(ref_det[:, 4], ref_det[:, :4]), :4]
            worst = max(worst, float((ours_boxes[:n] - ref_boxes[:n]).abs().max()))
    return {"max_count_difference": count_diff, "max_box_difference_px": round(worst, 4),
            "detections_image0": len(ours[0]["boxes"])}


def run_preset(preset: str, batch: int, rounds: int, compile_: bool = False) -> dict[str, Any]:
    """Every measurement of one preset."""
    ref, ours, size = build_pair(preset)
    result: dict[str, Any] = {"image_size": size, "train_batch": batch}
    warmup = 3 if compile_ else 1  # compilation, and a recompile for the second call's state
    times = interleaved(train_steps(ref, ours, size, batch, compile_), rounds, warmup)
    result["train_ms"] = {name: median_ms(t) for name, t in times.items()}
    for infer_batch in (1, 8):
        images = torch.randn(infer_batch, 3, size, size, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            fns = inference_fns(ref, ours, images, compile_)
            agree = detections_agree(fns)
            times = interleaved(fns, rounds if infer_batch > 1 else 3 * rounds, warmup)
        result[f"infer_b{infer_batch}_ms"] = {name: median_ms(t) for name, t in times.items()}
        result[f"infer_b{infer_batch}_agreement"] = agree
    result["ratios"] = ratios(result)
    return result


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """ours / effdet for every timed quantity, like for like (NHWC / NHWC, NCHW / NCHW; lower
    is better), and ours NHWC / effdet NCHW (``*_vs_effdet_nchw``)."""
    out = {}
    train = result["train_ms"]
    out["train"] = round(train["ours"] / train["effdet_nhwc"], 3)
    out["train_nchw"] = round(train["ours_nchw"] / train["effdet"], 3)
    out["train_vs_effdet_nchw"] = round(train["ours"] / train["effdet"], 3)
    if "ours_compiled" in train:
        out["train_compiled"] = round(train["ours_compiled"] / train["effdet"], 3)
    for b in (1, 8):
        ms = result[f"infer_b{b}_ms"]
        out[f"infer_b{b}_raw"] = round(ms["ours_raw"] / ms["effdet_nhwc_raw"], 3)
        out[f"infer_b{b}_raw_nchw"] = round(ms["ours_nchw_raw"] / ms["effdet_raw"], 3)
        out[f"infer_b{b}_raw_vs_effdet_nchw"] = round(ms["ours_raw"] / ms["effdet_raw"], 3)
        out[f"infer_b{b}_post"] = round(ms["ours_post"] / ms["effdet_nhwc_post"], 3)
        out[f"infer_b{b}_post_vs_effdet_nchw"] = round(ms["ours_post"] / ms["effdet_post"], 3)
        out[f"infer_b{b}_post05"] = round(ms["ours_post05"] / ms["effdet_nhwc_post"], 3)
        if "ours_compiled_raw" in ms:
            out[f"infer_b{b}_raw_compiled"] = round(ms["ours_compiled_raw"] / ms["effdet_raw"], 3)
            out[f"infer_b{b}_post_compiled"] = round(
                ms["ours_compiled_post"] / ms["effdet_post"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=4, help="training batch size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument("--compile", action="store_true",
                        help="also time this project with torch.compile (trainer.compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/vs_effdet.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore", category=FutureWarning)  # effdet's torch.jit.script
    results = {}
    for preset in args.presets:
        results[preset] = run_preset(preset, args.batch, args.rounds, args.compile)
        print(preset, results[preset], flush=True)
    write_results(Path(args.out), {"command": " ".join(["benchmarks/vs_effdet.py"] + [
        f"--presets {' '.join(args.presets)}", f"--batch {args.batch}",
        f"--rounds {args.rounds}"] + (["--compile"] if args.compile else [])),
        "presets": results})
    print("\nours / effdet, like for like (NHWC / NHWC; NCHW / NCHW in brackets)")
    print("| preset | train | b1 raw | b1 post | b8 raw | b8 post |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset, res in results.items():
        r = res["ratios"]
        print(f"| {preset} | {r['train']} ({r['train_nchw']}) | {r['infer_b1_raw']} "
              f"({r['infer_b1_raw_nchw']}) | {r['infer_b1_post']} | {r['infer_b8_raw']} "
              f"({r['infer_b8_raw_nchw']}) | {r['infer_b8_post']} |")


if __name__ == "__main__":
    main()
