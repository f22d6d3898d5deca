"""Benchmark: onnxruntime against PyTorch on the CPU for the exported student presets.

    .venv/bin/python benchmarks/export_latency.py [--presets efficientdet_dm3 maenas_dm3]
        [--checkpoints runs/quickstart/distilled/checkpoints/student.ckpt] [--rounds 30]

Each preset (default: every student preset below D0, 6 classes like the embedded data, at its
own input size, random weights) or checkpoint goes through ``distill export`` twice (ONNX with
and without NMS) and is timed at batch 1, warm, interleaved (``timing.interleaved``), medians:

- ``pytorch_raw``: ``Detector.forward`` (channels_last, as ``load_detector`` runs it on the CPU);
- ``pytorch_detections``: forward + ``Detector.predict`` (top-k, decoding, class-wise NMS);
- ``onnxruntime_raw``: the ``--no-nms`` graph (raw outputs, decoded boxes, scores);
- ``onnxruntime_detections``: the graph with post-processing and NMS.

Both use the same number of threads (``--threads``, default torch's). A random-weight model
has few scores above 0.05, so its post-processing is light; a trained checkpoint on a real
image (``--checkpoints``, ``--image``) shows the full cost. Results go to
``benchmarks/results/export_latency.json``. Not a test: no speed is asserted anywhere.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from timing import interleaved, median_ms, write_results

from distill.export import export_checkpoint
from distill.images import read_image
from distill.inference import load_detector

REPO = Path(__file__).resolve().parents[1]
STUDENTS = ["efficientdet_dm1", "efficientdet_dm2", "efficientdet_dm3",
            "maenas_dm1", "maenas_dm2", "maenas_dm3"]
CLASSES = ["circle", "square", "triangle", "cross", "ring", "star"]


def preset_checkpoint(name: str, folder: Path) -> Path:
    """A checkpoint of the preset with random weights, as `distill run` exports a student."""
    from distill.lightning.detection import build_detector

    torch.manual_seed(0)
    model = build_detector({"name": name}, num_classes=len(CLASSES))
    path = folder / f"{name}.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"recipe": {"model": {"name": name}},
                                     "class_names": CLASSES}}, path)
    return path


def measure(checkpoint: Path, folder: Path, image: Path | None, threads: int,
            rounds: int) -> dict[str, Any]:
    """Median milliseconds of the four contenders for one checkpoint."""
    import onnxruntime as ort

    predictor = load_detector(checkpoint, device="cpu")
    if image is not None:
        inputs, _ = predictor.preprocess([read_image(image)])
    else:
        inputs = torch.randn(1, 3, predictor.image_size, predictor.image_size,
                             generator=torch.Generator().manual_seed(0))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = {}
    for nms in (False, True):
        path = folder / f"{checkpoint.stem}-{'nms' if nms else 'raw'}.onnx"
        export_checkpoint(checkpoint, "onnx", path, nms=nms)
        sessions[nms] = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])
    feed = {"images": inputs.numpy()}
    model = predictor.model

    def pytorch_raw() -> None:
        with torch.inference_mode():
            model(inputs)

    def pytorch_detections() -> None:
        with torch.inference_mode():
            model.predict(model(inputs))

    times = interleaved({
        "pytorch_raw": pytorch_raw,
        "pytorch_detections": pytorch_detections,
        "onnxruntime_raw": lambda: sessions[False].run(None, feed),
        "onnxruntime_detections": lambda: sessions[True].run(None, feed),
    }, rounds=rounds, warmup=3)
    ms = {name: median_ms(samples) for name, samples in times.items()}
    detections = len(sessions[True].run(None, feed)[1])
    return {"image_size": predictor.image_size, "classes": len(predictor.class_names),
            "detections": detections, "median_ms": ms,
            "onnxruntime_speedup": {
                "raw": round(ms["pytorch_raw"] / max(ms["onnxruntime_raw"], 1e-9), 2),
                "detections": round(ms["pytorch_detections"]
                                    / max(ms["onnxruntime_detections"], 1e-9), 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="*", default=STUDENTS)
    parser.add_argument("--checkpoints", nargs="*", default=[], type=Path)
    parser.add_argument("--image", type=Path, default=None,
                        help="an image to run on (default: random normalised input)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "export_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        targets = [(name, preset_checkpoint(name, folder)) for name in args.presets]
        targets += [(str(path), path) for path in args.checkpoints]
        for name, checkpoint in targets:
            results[name] = measure(checkpoint, folder, args.image, args.threads, args.rounds)
            row = results[name]["median_ms"]
            print(f"{name:<22} " + "  ".join(f"{k} {v:.1f} ms" for k, v in row.items()),
                  flush=True)
    write_results(args.out, {"command": "benchmarks/export_latency.py", "batch": 1,
                             "rounds": args.rounds, "note": args.note, "results": results})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
