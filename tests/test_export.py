"""`distill export`: ONNX (checked with onnxruntime) and TorchScript give PyTorch's raw outputs
(within 1e-4) and its detections, with and without NMS in the graph, at any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detector_fixtures import CLASSES, save_module, tiny_module

from distill.cli import main
from distill.inference import load_detector


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    return save_module(tiny_module(tmp, seed=1), tmp / "student.ckpt")


@pytest.fixture(scope="module")
def batch(ckpt) -> tuple[torch.Tensor, list]:
    """Three preprocessed images of other sizes and PyTorch's raw outputs and detections."""
    detector = load_detector(ckpt, device="cpu", channels_last=False)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
              for h, w in ((128, 128), (90, 128), (128, 60))]
    inputs, _ = detector.preprocess(images)
    with torch.inference_mode():
        output = detector.model(inputs)
        detections = detector.model.predict(output, score_threshold=0.05, max_detections=100)
    return inputs, [output.cls_logits, output.box_deltas, detections]


def export(ckpt: Path, tmp_path: Path, fmt: str, nms: bool, *extra: str) -> Path:
    path = tmp_path / f"model-{nms}.{fmt}"
    assert main(["export", str(ckpt), "--format", fmt, "--nms" if nms else "--no-nms",
                 "--output", str(path), *extra]) == 0
    return path


def runner(path: Path, fmt: str):
    """``images -> list of numpy outputs`` of the exported file."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x.numpy()})
    module = torch.jit.load(str(path))

    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.jit.optimized_execution(False):  # no profiling runs: the test stays fast
            return [t.numpy() for t in module(x)]

    return run


def needs_runtime(fmt: str) -> None:
    """ONNX tests need the optional export extra (onnx, onnxruntime)."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


def check_detections(outputs: list[np.ndarray], expected: list[dict], batch_size: int) -> None:
    boxes, scores, labels, index = (torch.from_numpy(np.asarray(o)) for o in outputs)
    assert labels.dtype == index.dtype == torch.int64
    assert (scores[:-1] >= scores[1:]).all()  # all images' detections, best first
    for image in range(batch_size):
        mine, want = index == image, expected[image]
        assert len(want["scores"]) > 0
        assert torch.equal(labels[mine], want["labels"])
        torch.testing.assert_close(scores[mine], want["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(boxes[mine], want["boxes"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_raw_outputs_equal_pytorch_at_any_batch_size(ckpt, batch, tmp_path, fmt):
    needs_runtime(fmt)
    path = export(ckpt, tmp_path, fmt, nms=False)
    meta = json.loads(Path(f"{path}.json").read_text())
    assert meta["class_names"] == CLASSES and meta["outputs"][:2] == ["cls_logits", "box_deltas"]
    assert meta["input"]["shape"] == ["batch", 3, 128, 128]
    run = runner(path, fmt)
    inputs, (logits, deltas, _) = batch
    for size in (1, 3):  # traced at batch 2
        logits_x, deltas_x, boxes_x, scores_x = (torch.from_numpy(o) for o in run(inputs[:size]))
        torch.testing.assert_close(logits_x, logits[:size], atol=1e-4, rtol=0)
        torch.testing.assert_close(deltas_x, deltas[:size], atol=1e-4, rtol=0)
        torch.testing.assert_close(scores_x, logits[:size].sigmoid(), atol=1e-4, rtol=0)
        assert boxes_x.shape == (size, logits.shape[1], 4)
        assert boxes_x.min() >= 0 and boxes_x.max() <= 128


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_nms_in_the_graph_gives_pytorchs_detections(ckpt, batch, tmp_path, fmt):
    needs_runtime(fmt)
    path = export(ckpt, tmp_path, fmt, nms=True)
    run = runner(path, fmt)
    inputs, (_, _, detections) = batch
    check_detections(run(inputs), detections, 3)
    check_detections(run(inputs[2:]), detections[2:], 1)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_graph_keeps_its_settings_and_may_find_nothing(ckpt, tmp_path, fmt):
    needs_runtime(fmt)
    path = export(ckpt, tmp_path, fmt, True, "--score-threshold", "0.999",
                  "--max-detections", "7")
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map["distill"])
    else:
        files = {"distill.json": ""}
        torch.jit.load(str(path), _extra_files=files)
        meta = json.loads(files["distill.json"])
    assert meta["score_threshold"] == 0.999 and meta["max_detections"] == 7
    outputs = runner(path, fmt)(torch.zeros(2, 3, 128, 128))
    assert [o.shape[0] for o in outputs] == [0, 0, 0, 0]  # nothing above 0.999: empty, no error


def test_export_errors_are_clear(ckpt, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--max-detections", "0",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert "--max-detections 0" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
