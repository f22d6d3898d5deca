"""Wall-clock latency of a network's forward pass."""

from __future__ import annotations

import time
from collections.abc import Mapping
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
    return measure_latencies({"model": (model, image_size)}, batch_size, warmup, runs, threads,
                             device)["model"]


def measure_latencies(
    models: Mapping[str, tuple[nn.Module, int | tuple[int, int]]],
    batch_size: int = 1,
    warmup: int = 3,
    runs: int = 10,
    threads: int | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """``measure_latency`` of several ``name: (model, image_size)`` side by side: each round
    times every model once, in turn, so a change in the machine's load hits all of them alike
    and their ratios hold where one model timed alone at a busy moment would not."""
    batch_size = _check_int("batch_size", batch_size, 1)
    warmup = _check_int("warmup", warmup, 0)
    runs = _check_int("runs", runs, 1)
    if threads is not None:
        threads = _check_int("threads", threads, 1)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot parse {device!r}: {exc}") from None
    inputs = {name: _input(model, image_size, batch_size, dev)
              for name, (model, image_size) in models.items()}
    modes = {name: model.training for name, (model, _) in models.items()}
    previous_threads = torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        with torch.inference_mode():
            for name, (model, _) in models.items():
                model.eval()
                for _ in range(warmup):
                    model(inputs[name])
            _sync(dev)
            for _ in range(runs):
                for name, (model, _) in models.items():
                    _sync(dev)
                    start = time.perf_counter()
                    model(inputs[name])
                    _sync(dev)
                    times[name].append((time.perf_counter() - start) * 1000.0)
    finally:
        for name, (model, _) in models.items():
            model.train(modes[name])
        if threads is not None:
            torch.set_num_threads(previous_threads)
    return {name: _summary(times[name], runs, batch_size, inputs[name].shape[-2:], used_threads,
                           dev) for name in models}


def _input(model: nn.Module, image_size: Any, batch_size: int, dev: torch.device
           ) -> torch.Tensor:
    """The fixed-seed random batch for ``model`` (checked to be on ``device``)."""
    h, w = _image_hw(image_size)
    param = next(iter(model.parameters()), None)
    if param is not None and param.device.type != dev.type:
        raise ValueError(f"device is '{dev}' but the model is on {param.device}")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, 3, h, w, generator=generator).to(dev, dtype)


def _summary(times: list[float], runs: int, batch_size: int, hw: Any, threads: int,
             dev: torch.device) -> dict[str, Any]:
    arr = np.asarray(times, dtype=np.float64)
    return {
        "median_ms": round(float(np.median(arr)), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "p90_ms": round(float(np.percentile(arr, 90)), 3),
        "runs": runs,
        "batch_size": batch_size,
        "image_size": [int(hw[0]), int(hw[1])],
        "threads": threads,
        "device": str(dev),
    }
