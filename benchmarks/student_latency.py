"""Benchmark: CPU latency of candidate students side by side, as they would be deployed.

    .venv/bin/python benchmarks/student_latency.py --size 128 \
        --models damo_yolo_pico efficientdet_dm3 efficientdet_dm2 [--threads 1 2] [--rounds 60]

Each model is built untrained (``num_classes`` 3; the class count barely moves the cost),
turned into its deployed form (``Detector.for_deployment``: DAMO-YOLO's RepConvs fused) in eval
mode, and its network forward (batch 1, no NMS) timed in interleaved rounds
(``benchmarks/timing.py``), so machine drift falls on every model alike. Reported per thread
count: median ms, and the ratio to the first model. Results: ``benchmarks/results/
student_latency_<size>.json``. Not a test: the figures go into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import interleaved, median_ms, write_results

from distill.info import count_macs
from distill.models import build_model

REPO = Path(__file__).resolve().parents[1]


def deployed(name: str, size: int, classes: int) -> torch.nn.Module:
    """The preset ``name`` at ``size`` px as exported: deployment form, eval mode."""
    torch.manual_seed(0)
    return build_model(name, num_classes=classes, image_size=size).eval().for_deployment()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()

    models = {name: deployed(name, args.size, args.classes) for name in args.models}
    image = torch.rand(1, 3, args.size, args.size)
    results: dict = {"size": args.size, "rounds": args.rounds, "models": {}}
    for name, model in models.items():
        results["models"][name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "macs": count_macs(model, (args.size, args.size), device="cpu")}
    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            calls = {name: (lambda m=model: m(image)) for name, model in models.items()}
            times = interleaved(calls, args.rounds, warmup=5)
        first = median_ms(times[args.models[0]])
        for name in args.models:
            ms = median_ms(times[name])
            results["models"][name][f"ms_{threads}t"] = ms
            results["models"][name][f"ratio_{threads}t"] = round(ms / first, 2)
            print(f"{threads} thread(s)  {name:<22} {ms:7.1f} ms  x{ms / first:.2f}", flush=True)
    out = REPO / "benchmarks" / "results" / f"student_latency_{args.size}.json"
    write_results(out, results)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
