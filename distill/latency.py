"""Wall-clock latency of a network's forward pass."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn


def _image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, bool):
        raise ValueError(f"image_size must be an int or (h, w), got {image_size!r}")
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        try:
            h, w = image_size
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be an int or (h, w), got {image_size!r}") from None
        hw = (h, w)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ValueError(f"image_size must hold positive ints, got {image_size!r}")
    return int(hw[0]), int(hw[1])


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    image_size: int | tuple[int, int],
    batch_size: int = 1,
    warmup: int = 3,
    runs: int = 10,
    threads: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Median/mean/p90 milliseconds of ``model(images)`` on a random ``[B, 3, H, W]`` batch.

    Only the network forward is timed (no pre-processing, no box decoding or NMS). The model
    runs in eval mode under ``torch.inference_mode()`` and must already be on ``device``; its
    training flag is restored afterwards. ``threads`` sets ``torch.set_num_threads`` for the
    measurement only (the previous value is restored). The input is drawn with a fixed seed
    without touching the global RNG. CUDA runs are synchronised around each timed forward.
    """
    h, w = _image_hw(image_size)
    batch_size = _check_int("batch_size", batch_size, 1)
    warmup = _check_int("warmup", warmup, 0)
    runs = _check_int("runs", runs, 1)
    if threads is not None:
        threads = _check_int("threads", threads, 1)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot parse {device!r}: {exc}") from None
    param = next(iter(model.parameters()), None)
    if param is not None and param.device.type != dev.type:
        raise ValueError(f"device is {device!r} but the model is on {param.device}")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, h, w, generator=generator).to(dev, dtype)

    was_training = model.training
    previous_threads = torch.get_num_threads()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(images)
            _sync(dev)
            for _ in range(runs):
                _sync(dev)
                start = time.perf_counter()
                model(images)
                _sync(dev)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
        if threads is not None:
            torch.set_num_threads(previous_threads)

    arr = np.asarray(times, dtype=np.float64)
    return {
        "median_ms": round(float(np.median(arr)), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "p90_ms": round(float(np.percentile(arr, 90)), 3),
        "runs": runs,
        "batch_size": batch_size,
        "image_size": [h, w],
        "threads": used_threads,
        "device": str(dev),
    }
