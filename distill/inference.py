"""Use a trained detector from its checkpoint alone: ``load_detector(path).predict(images)``.

A ``distill train`` checkpoint, a ``distill run`` stage checkpoint (its ``distiller.*`` align
weights are not used) or a ``student.ckpt`` holds the recipe (``hyper_parameters.recipe``) and
the class names, which is all it takes to rebuild the model; ``distill import-effdet``
checkpoints (model name and class count only) work too, with classes named ``class_<i>``. Files
are read with ``weights_only=True``: a checkpoint can never run code.

Images go through the validation preprocessing (``DetectionTransform(train=False)``: the longer
side resized to the model's input size, padded bottom/right, ImageNet normalisation), and boxes
come back divided by the letterbox scale and clipped to the image: original image pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.checkpoints import load_state_strict, read_detector_checkpoint
from distill.errors import RecipeError
from distill.images import pil_to_tensor, read_image

ImageInput = Any  # a path, a PIL image, a numpy HWC / HW array or a [3, H, W] / [B, 3, H, W] tensor


@dataclass
class Detections:
    """One image's detections: ``boxes`` ``[N, 4]`` xyxy in original image pixels, ``scores``
    ``[N]`` (decreasing), ``labels`` ``[N]`` (class indices) and their ``names``; ``image_size``
    is the original ``(height, width)``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict]:
        """COCO results entries: ``bbox`` ``[x, y, w, h]``; ``category_id`` is
        ``category_ids[label]`` (default ``label + 1``)."""
        ids = list(category_ids) if category_ids is not None else None
        out = []
        for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(),
                                     self.labels.tolist()):
            x1, y1, x2, y2 = box
            out.append({"image_id": int(image_id),
                        "category_id": int(ids[label] if ids is not None else label + 1),
                        "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                        "score": round(float(score), 5)})
        return out


def detector_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, list[str], int]:
    """``(detector in eval mode on the CPU, class names, input size)`` rebuilt from ``path``."""
    from distill.lightning.detection import build_detector

    path = Path(path)
    checkpoint = read_detector_checkpoint(path)
    model_cfg, class_names, state = checkpoint.model, checkpoint.class_names, checkpoint.state
    # the weights come from the file: no pretrained download, no backbone weights file
    model_cfg.update(pretrained=False, backbone_weights=None)
    name = model_cfg.get("name")
    try:
        detector = build_detector(model_cfg, num_classes=len(class_names))
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise RecipeError(f"{path}: cannot rebuild model '{name}' from the checkpoint's "
                          f"settings: {err}") from err
    load_state_strict(detector, state, str(path),
                      f"model '{name}' with {len(class_names)} classes")
    size = int(model_cfg.get("image_size") or detector.image_size)
    return detector.eval().requires_grad_(False), class_names, size


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else the CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise RecipeError(f"device '{device}': expected auto, cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device '{device}': CUDA is not available on this machine")
    return resolved


def as_image_tensor(image: ImageInput) -> torch.Tensor:
    """One image as uint8 RGB ``[3, H, W]``: from a path, a PIL image (EXIF orientation
    applied), a numpy ``HxW`` / ``HxWxC`` array (uint8, uint16 or float in [0, 1]) or a
    ``[C, H, W]`` tensor (uint8 or float in [0, 1]); 1 or 4 channels become RGB."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        array = image[:, :, None] if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise RecipeError(f"image array of shape {image.shape}: expected HxW or HxWxC "
                              "with C = 1, 3 or 4 (channels last)")
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise RecipeError(f"image tensor of shape {tuple(image.shape)}: expected [C, H, W] "
                              "with C = 1, 3 or 4 (channels first)")
    else:
        raise RecipeError(f"image of type {type(image).__name__}: expected a path, a PIL "
                          "image, a numpy array or a torch tensor")
    return _to_uint8_rgb(tensor)


def _to_uint8_rgb(tensor: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` of any supported dtype to uint8 ``[3, H, W]`` (alpha dropped)."""
    if tensor.dtype == torch.uint8:
        out = tensor
    elif tensor.dtype == torch.uint16 or (tensor.dtype in (torch.int32, torch.int64)
                                          and tensor.numel() and int(tensor.max()) > 255):
        out = (tensor.to(torch.int64) >> 8).clamp(0, 255).to(torch.uint8)
    elif tensor.is_floating_point():
        if float(tensor.min()) < 0 or float(tensor.max()) > 1:
            raise RecipeError(f"float image with values in [{float(tensor.min()):.3g}, "
                              f"{float(tensor.max()):.3g}]: expected values in [0, 1]")
        out = (tensor.float() * 255).round().to(torch.uint8)
    else:
        out = tensor.clamp(0, 255).to(torch.uint8)
    if out.shape[0] == 1:
        out = out.expand(3, -1, -1)
    return out[:3].contiguous()


def _image_list(images: ImageInput) -> tuple[list[ImageInput], bool]:
    """``(images as a list, whether one image was given)``."""
    if isinstance(images, (list, tuple)):
        return list(images), False
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images), False
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), False
    return [images], True


class Predictor:
    """A detector rebuilt from a checkpoint, ready to predict on images (see ``load_detector``).

    Attributes: ``model`` (the ``Detector``), ``class_names``, ``image_size`` (the square input
    side), ``device``, ``checkpoint`` (the file).
    """

    def __init__(self, model: nn.Module, class_names: list[str], image_size: int,
                 device: torch.device, checkpoint: Path | None = None) -> None:
        from distill.data.transforms import DetectionTransform

        self.model, self.class_names = model.to(device), list(class_names)
        self.image_size, self.device, self.checkpoint = int(image_size), device, checkpoint
        self.transform = DetectionTransform(self.image_size, train=False)

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
        """uint8 ``[3, H, W]`` images -> ``(normalised letterboxed batch [B, 3, S, S], scales)``,
        exactly as validation prepares them."""
        from distill.data.records import Sample

        batch, scales = [], []
        for image in images:
            h, w = int(image.shape[-2]), int(image.shape[-1])
            empty = Sample(Path(), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0, w, h)
            tensor, target = self.transform(image, empty)
            batch.append(tensor)
            scales.append(target["scale"])
        return torch.stack(batch), scales

    @torch.inference_mode()
    def predict_tensors(self, images: list[torch.Tensor], score_threshold: float = 0.05,
                        max_detections: int = 100) -> list[Detections]:
        """Detections of a list of uint8 ``[3, H, W]`` images, run as one batch."""
        batch, scales = self.preprocess(images)
        output = self.model(batch.to(self.device))
        results = []
        for image, scale, det in zip(images, scales, self.model.predict(
                output, score_threshold=score_threshold, max_detections=max_detections)):
            h, w = int(image.shape[-2]), int(image.shape[-1])
            boxes = (det["boxes"].float() / scale).cpu()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            labels = det["labels"].cpu()
            results.append(Detections(boxes, det["scores"].float().cpu(), labels,
                                      [self.class_names[i] for i in labels.tolist()], (h, w)))
        return results

    def predict(self, images: ImageInput, score_threshold: float = 0.05,
                max_detections: int = 100, batch_size: int = 8
                ) -> Detections | list[Detections]:
        """Detections of one image (returns one ``Detections``) or of a list / batch of images
        (returns a list): paths, PIL images, numpy arrays or tensors (``as_image_tensor``)."""
        if not 0.0 <= float(score_threshold) < 1.0:
            raise RecipeError(f"score_threshold {score_threshold}: expected a value in [0, 1)")
        if int(batch_size) < 1 or int(max_detections) < 1:
            raise RecipeError(f"batch_size {batch_size}, max_detections {max_detections}: "
                              "expected positive integers")
        items, single = _image_list(images)
        results: list[Detections] = []
        for start in range(0, len(items), int(batch_size)):
            chunk = [as_image_tensor(x) for x in items[start:start + int(batch_size)]]
            results += self.predict_tensors(chunk, score_threshold, max_detections)
        return results[0] if single else results


def load_detector(checkpoint: str | os.PathLike, device: str | torch.device | None = "auto",
                  channels_last: bool | None = None) -> Predictor:
    """Rebuild the detector of ``checkpoint`` (weights only, no recipe needed) on ``device``
    (``"auto"``: CUDA when available). ``channels_last`` defaults to True on the CPU."""
    resolved = resolve_device(device)
    model, class_names, image_size = detector_from_checkpoint(checkpoint)
    model.set_channels_last(resolved.type == "cpu" if channels_last is None else channels_last)
    return Predictor(model, class_names, image_size, resolved, Path(checkpoint))
