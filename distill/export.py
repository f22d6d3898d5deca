"""``distill export``: a checkpoint's detector as ONNX or TorchScript, with or without NMS.

The graph's input is ``images``: float32 ``[B, 3, S, S]``, the batch as validation prepares it
(the longer side resized to ``S``, padded bottom/right, normalised with ImageNet mean/std;
``distill.inference.Predictor.preprocess`` does it). ``B`` is dynamic, ``S`` fixed (the model's
input size). Outputs:

- without NMS: ``cls_logits`` ``[B, A, K]`` and ``box_deltas`` ``[B, A, 4]`` (the raw head
  outputs), ``boxes`` ``[B, A, 4]`` (the deltas decoded on the anchors, xyxy input pixels,
  clipped to the input) and ``scores`` ``[B, A, K]`` (sigmoid of the logits);
- with NMS: ``boxes`` ``[N, 4]`` (xyxy input pixels), ``scores`` ``[N]``, ``labels`` ``[N]``
  (int64) and ``batch_index`` ``[N]`` (int64, the image of each detection), all images'
  detections in decreasing score. In the graph, per image: the ``pre_nms_topk`` best (anchor,
  class) scores, those above ``score_threshold``, class-wise NMS at ``iou_threshold``
  (torchvision ``nms`` on boxes shifted apart by image and class, as ``batched_nms`` does), the
  ``max_detections`` best: what ``Detector.predict`` does (it runs NMS in float64, the graph in
  float32). Divide the boxes by the letterbox scale for original pixels.

A JSON beside the file (``<output>.json``) records the class names, input size, normalisation,
output names and NMS settings.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import nms as box_nms

from distill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from distill.errors import RecipeError
from distill.io import write_text_atomic

FORMATS = ("onnx", "torchscript")
RAW_OUTPUTS = ("cls_logits", "box_deltas", "boxes", "scores")
NMS_OUTPUTS = ("boxes", "scores", "labels", "batch_index")


class ExportGraph(nn.Module):
    """The detector with box decoding (and, with ``nms``, post-processing) for export."""

    def __init__(self, detector: nn.Module, image_size: int, nms: bool = False,
                 score_threshold: float = 0.05, iou_threshold: float | None = None,
                 max_detections: int = 100, pre_nms_topk: int = 5000) -> None:
        super().__init__()
        self.detector = detector
        self.image_size, self.nms = int(image_size), bool(nms)
        # the detector's own NMS IoU (its family's, as predict uses) unless one is given
        iou = detector.nms_iou if iou_threshold is None else iou_threshold
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou)
        self.max_detections, self.pre_nms_topk = int(max_detections), int(pre_nms_topk)
        priors = detector.priors((self.image_size, self.image_size), torch.device("cpu"))
        self.register_buffer("priors", priors.clone(), persistent=False)

    def decode(self, deltas: torch.Tensor) -> torch.Tensor:
        """Boxes ``[B, A, 4]`` xyxy from the box outputs, clipped to the input, as ``predict``
        does."""
        boxes = self.detector.decode_boxes(deltas.float(), self.priors)
        x1, y1, x2, y2 = boxes.clamp(0, self.image_size).unbind(-1)
        return torch.stack([x1, y1, x2, y2], dim=-1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.detector(images)
        logits, deltas = out.cls_logits.float(), out.box_deltas.float()
        boxes, scores = self.decode(deltas), logits.sigmoid()
        if not self.nms:
            return logits, deltas, boxes, scores
        return self.postprocess(boxes, scores)

    def postprocess(self, boxes: torch.Tensor, scores: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
        """Detections of the batch, flat, with each one's image index (tensor ops only, so the
        batch size stays dynamic when traced)."""
        num_classes = scores.shape[2]
        flat = scores.reshape(scores.shape[0], -1)
        k = min(self.pre_nms_topk, int(flat.shape[1]))  # static: A and K are fixed
        top, index = flat.topk(k, dim=1)
        # the image of each row, from tensor ops alone (no Python int of the batch size)
        image_of_row = torch.ones_like(top[:, :1], dtype=torch.int64).cumsum(0) - 1
        image = image_of_row.expand_as(index).reshape(-1)
        anchor, label = index // num_classes, index % num_classes
        picked = boxes.gather(1, anchor.unsqueeze(-1).expand(-1, -1, 4)).reshape(-1, 4)
        top, label = top.reshape(-1), label.reshape(-1)
        keep = (top > self.score_threshold).nonzero().reshape(-1)
        picked, top, label, image = picked[keep], top[keep], label[keep], image[keep]
        # batched NMS by (image, class): boxes lie in [0, S], so shifting each group by its
        # index times S + 1 keeps groups apart (torchvision's batched_nms trick with a fixed
        # offset: no data-dependent branch, so an empty set of candidates traces too)
        group = (image * num_classes + label).to(picked.dtype) * (self.image_size + 1)
        kept = box_nms(picked + group.unsqueeze(1), top, self.iou_threshold)
        picked, top, label, image = picked[kept], top[kept], label[kept], image[kept]
        # rank within its image (kept is in decreasing score): a running count per image
        images = image_of_row.reshape(1, -1)
        rank = (image.unsqueeze(1) == images).to(torch.int64).cumsum(0)
        rank = rank.gather(1, image.unsqueeze(1)).reshape(-1)
        keep = (rank <= self.max_detections).nonzero().reshape(-1)
        return picked[keep], top[keep], label[keep], image[keep]


def export_metadata(graph: ExportGraph, class_names: list[str], fmt: str,
                    checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a user of the exported file needs besides the file."""
    meta: dict[str, Any] = {
        "format": fmt, "checkpoint": str(checkpoint), "class_names": list(class_names),
        "input": {"name": "images", "shape": ["batch", 3, graph.image_size, graph.image_size],
                  "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "letterbox": "longer side resized to the input size, padded bottom/right"},
        "nms": graph.nms, "outputs": list(NMS_OUTPUTS if graph.nms else RAW_OUTPUTS),
    }
    if graph.nms:
        meta.update(score_threshold=graph.score_threshold, iou_threshold=graph.iou_threshold,
                    max_detections=graph.max_detections, pre_nms_topk=graph.pre_nms_topk)
    return meta


def _export_onnx(graph: ExportGraph, example: torch.Tensor, path: Path, opset: int) -> None:
    outputs = list(NMS_OUTPUTS if graph.nms else RAW_OUTPUTS)
    axis = "detections" if graph.nms else "batch"
    kwargs: dict[str, Any] = {
        "input_names": ["images"], "output_names": outputs, "opset_version": opset,
        "dynamic_axes": {"images": {0: "batch"}, **{name: {0: axis} for name in outputs}},
    }
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript-based exporter: no onnxscript needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings
        torch.onnx.export(graph, (example,), str(path), **kwargs)


def _export_torchscript(graph: ExportGraph, example: torch.Tensor, path: Path,
                        meta: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"distill.json": json.dumps(meta)})


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str = "onnx",
                      output: str | os.PathLike | None = None, nms: bool = True,
                      score_threshold: float = 0.05, iou_threshold: float | None = None,
                      max_detections: int = 100, opset: int = 17) -> dict[str, Any]:
    """Export the detector of ``checkpoint`` to ``output`` (default: beside the checkpoint,
    ``.onnx`` / ``.torchscript.pt``); writes ``<output>.json`` and returns its content plus
    ``file``. The file appears only when complete."""
    from distill.inference import detector_from_checkpoint

    if fmt not in FORMATS:
        raise RecipeError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    iou_ok = iou_threshold is None or 0.0 < float(iou_threshold) <= 1.0
    if not 0.0 <= float(score_threshold) < 1.0 or not iou_ok:
        raise RecipeError(f"--score-threshold {score_threshold} / --iou-threshold "
                          f"{iou_threshold}: expected values in [0, 1)")
    if int(max_detections) < 1:
        raise RecipeError(f"--max-detections {max_detections}: expected a positive integer")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise RecipeError("--format onnx needs the onnx package (an optional extra): "
                          "pip install 'distill-det[export]' (onnx, onnxruntime)")
    detector, class_names, image_size = detector_from_checkpoint(checkpoint)
    detector.set_channels_last(False)
    detector = detector.eval().for_deployment()  # e.g. DAMO-YOLO's RepConvs fused
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    path = Path(output) if output else Path(checkpoint).with_suffix(suffix)
    graph = ExportGraph(detector, image_size, nms, score_threshold, iou_threshold,
                        max_detections).eval()
    meta = export_metadata(graph, class_names, fmt, checkpoint)
    example = torch.zeros(2, 3, image_size, image_size)  # batch 2: no size-1 specialisation
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RecipeError(f"--output {path}: cannot create its folder: {err}") from err
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(graph, example, tmp, opset)
                _add_onnx_metadata(tmp, meta)
            else:
                _export_torchscript(graph, example, tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(f"{path}.json", json.dumps(meta, indent=2) + "\n")
    return {**meta, "file": str(path)}


def _add_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Store the metadata in the ONNX file's ``metadata_props`` (onnxruntime reads it:
    ``session.get_modelmeta().custom_metadata_map``)."""
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "distill", json.dumps(meta)
    onnx.save(model, str(path))
