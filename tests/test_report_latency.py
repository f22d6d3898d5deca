"""Latency measurement, the run report and the W&B validation-image callback."""

import json
import time
import types

import numpy as np
import pytest
import torch
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch import nn

from distill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from distill.latency import measure_latencies, measure_latency
from distill.lightning.image_logging import ValidationImageLogger, denormalize, wandb_boxes
from distill.models import build_model
from distill.report import (
    STAGES,
    StageRows,
    compare_stages,
    format_report_table,
    write_report,
)


def tiny_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())


def test_measure_latency_numbers_and_restored_state():
    model = tiny_conv().train()
    before = torch.get_num_threads()
    out = measure_latency(model, (24, 32), batch_size=2, warmup=1, runs=5, threads=1)
    assert out["median_ms"] > 0 and out["mean_ms"] > 0 and out["p90_ms"] > 0
    assert out["median_ms"] <= out["p90_ms"]
    assert out["image_size"] == [24, 32]
    assert (out["runs"], out["batch_size"], out["threads"], out["device"]) == (5, 2, 1, "cpu")
    assert model.training  # training flag restored
    assert torch.get_num_threads() == before
    model.eval()
    square = measure_latency(model, 16, warmup=0, runs=1)
    assert square["image_size"] == [16, 16] and not model.training
    assert square["median_ms"] == square["p90_ms"] == square["mean_ms"]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"runs": 0}, "runs"),
        ({"warmup": -1}, "warmup"),
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 0}, "threads"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": (8, 8, 8)}, "image_size"),
        ({"device": "not-a-device"}, "device"),
    ],
)
def test_measure_latency_rejects_bad_arguments(kwargs, name):
    args = {"image_size": 8, **kwargs}
    with pytest.raises(ValueError, match=name):
        measure_latency(tiny_conv(), **args)


class Recorder(nn.Module):
    """Appends its name to ``calls`` on every forward; ``delay`` seconds of sleep."""

    def __init__(self, name: str, calls: list, delay: float = 0.0) -> None:
        super().__init__()
        self.name, self.calls, self.delay = name, calls, delay
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        self.calls.append(self.name)
        time.sleep(self.delay)
        return self.conv(x)


def test_measure_latencies_times_the_models_in_turn():
    calls: list = []
    fast, slow = Recorder("fast", calls).train(), Recorder("slow", calls, delay=0.01).eval()
    out = measure_latencies({"fast": (fast, 8), "slow": (slow, (8, 12))}, warmup=2, runs=3)
    assert calls == ["fast"] * 2 + ["slow"] * 2 + ["fast", "slow"] * 3  # warm-up, then rounds
    assert out["slow"]["median_ms"] >= 10.0 > out["fast"]["median_ms"]
    assert out["slow"]["image_size"] == [8, 12] and out["fast"]["runs"] == 3
    assert fast.training and not slow.training  # each model's own flag restored


def test_stage_rows_fill_latency_after_the_stages(tmp_path):
    rows = StageRows()
    rows.add("teacher", {"model": "a", "map": 0.4, "image_size": 16}, tiny_conv())
    rows.add("baseline", {"model": "b", "map": 0.2, "image_size": 8}, tiny_conv())
    assert rows["teacher"]["latency_ms"] is None  # not timed yet: the stages are still running
    rows.time_models(runs=2)
    assert all(rows[s]["latency_ms"] > 0 for s in ("teacher", "baseline"))
    payload = json.loads(write_report(tmp_path, rows)[0].read_text())
    assert payload["stages"]["baseline"]["latency_ms"] == rows["baseline"]["latency_ms"]


def test_stage_rows_time_every_detector_in_one_memory_format():
    rows, fresh = StageRows(), build_model("efficientdet_dm3", num_classes=2)
    rows.add("baseline", {"model": "dm3", "image_size": 64}, fresh)
    rows.time_models(runs=1, channels_last=True)
    conv = next(m for m in fresh.modules() if isinstance(m, nn.Conv2d) and m.groups == 1
                and m.in_channels > 1 and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert rows["baseline"]["latency_ms"] > 0


def _rows() -> dict:
    return {
        "distilled": {"model": "dm3", "map": 0.3, "map_50": 0.5, "params": 1_020_000,
                      "macs": 220_000_000, "latency_ms": 4.25, "train_seconds": 725},
        "teacher": {"model": "d0", "map": 0.4, "map_50": 0.6, "params": 3_900_000,
                    "macs": 2_500_000_000, "latency_ms": None},
        "baseline": {"model": "dm3", "map": 0.2, "map_50": 0.4, "params": 1_020_000,
                     "macs": 220_000_000, "latency_ms": 4.0, "train_seconds": 3700},
    }


def test_write_report_json_and_markdown(tmp_path):
    json_path, md_path = write_report(tmp_path / "run", _rows(), extra={"recipe": "x.yaml"})
    assert json_path == tmp_path / "run" / "report.json"
    payload = json.loads(json_path.read_text())
    assert list(payload["stages"]) == list(STAGES)
    assert payload["stages"]["distilled"] == _rows()["distilled"]
    assert payload["recipe"] == "x.yaml"
    comp = payload["comparison"]
    assert comp["distilled_minus_baseline_map"] == pytest.approx(0.1)
    assert comp["teacher_minus_baseline_map"] == pytest.approx(0.2)
    assert comp["gap_closed"] == pytest.approx(0.5)
    assert not list((tmp_path / "run").glob("*.tmp"))  # temp files renamed away

    md = md_path.read_text()
    lines = md.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| stage")]
    assert [r.split("|")[1].strip() for r in rows] == ["teacher", "baseline", "distilled"]
    teacher = [c.strip() for c in rows[0].strip("|").split("|")]
    assert teacher == ["teacher", "d0", "0.400", "0.600", "3.90M", "2.50B", "-", "-"]
    baseline = [c.strip() for c in rows[1].strip("|").split("|")]
    assert baseline[4:] == ["1.02M", "0.22B", "4.0", "1h01m"]
    assert rows[2].rstrip(" |").endswith("12m05s")
    assert "gap closed by distillation: 50.0%" in md
    assert "+0.100" in md and "+0.200" in md


def test_gap_closed_none_when_teacher_not_better_or_missing(tmp_path):
    rows = _rows()
    rows["teacher"]["map"] = 0.2  # == baseline
    assert compare_stages(rows)["gap_closed"] is None
    rows["teacher"]["map"] = 0.1
    comp = compare_stages(rows)
    assert comp["gap_closed"] is None and comp["teacher_minus_baseline_map"] == pytest.approx(-0.1)

    no_teacher = {k: v for k, v in _rows().items() if k != "teacher"}
    no_teacher["baseline"] = {"model": "dm3", "map": 0.2}  # other values missing
    json_path, md_path = write_report(tmp_path, no_teacher)
    comp = json.loads(json_path.read_text())["comparison"]
    assert comp["teacher_minus_baseline_map"] is None and comp["gap_closed"] is None
    assert comp["distilled_minus_baseline_map"] == pytest.approx(0.1)
    md = md_path.read_text()
    assert "| baseline | dm3 | 0.200 | - | - | - | - | - |" in md
    assert "| teacher" not in md and "gap closed" not in md
    table = format_report_table(no_teacher)
    assert table.splitlines()[0].startswith("| stage | model | mAP | mAP50 | params | MACs |")
    assert len(table.splitlines()) == 2 + 2


def test_write_report_rejects_reserved_extra_keys(tmp_path):
    with pytest.raises(ValueError, match="comparison"):
        write_report(tmp_path, _rows(), extra={"comparison": 1})


def test_wandb_boxes_two_boxes():
    boxes = torch.tensor([[1.0, 2.0, 10.0, 20.0], [5.5, 6.0, 7.0, 8.0]])
    out = wandb_boxes(boxes, torch.tensor([0, 1]), torch.tensor([0.9, 0.25]), ["cat", "dog"])
    assert out["class_labels"] == {0: "cat", 1: "dog"}
    first, second = out["box_data"]
    assert first == {
        "position": {"minX": 1.0, "minY": 2.0, "maxX": 10.0, "maxY": 20.0},
        "domain": "pixel",
        "class_id": 0,
        "box_caption": "cat 0.90",
        "scores": {"score": pytest.approx(0.9)},
    }
    assert second["class_id"] == 1 and second["box_caption"] == "dog 0.25"
    assert second["position"] == {"minX": 5.5, "minY": 6.0, "maxX": 7.0, "maxY": 8.0}
    gt = wandb_boxes(boxes[:1], [3], None, ["cat"])
    assert gt["box_data"][0]["box_caption"] == "class_3" and "scores" not in gt["box_data"][0]
    assert gt["class_labels"] == {0: "cat", 3: "class_3"}
    empty = wandb_boxes(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), None, ["cat"])
    assert empty == {"box_data": [], "class_labels": {0: "cat"}}


def test_denormalize_inverts_imagenet_normalisation():
    pixels = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = denormalize((pixels.float() / 255 - mean) / std)
    assert out.dtype == np.uint8 and out.shape == (2, 5, 7, 3)
    assert np.array_equal(out, pixels.permute(0, 2, 3, 1).numpy())


class FakeRun:
    """Stands in for a wandb run: records ``log`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, dict]] = []

    def log(self, data: dict, **kwargs) -> None:
        self.calls.append((data, kwargs))


def _module_and_batch():
    module = types.SimpleNamespace(
        model=build_model("efficientdet_dm3", num_classes=2, image_size=128).eval(),
        class_names=["a", "b"],
    )
    images = torch.randn(3, 3, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]),
         "scale": 0.5, "orig_size": (200, 256), "image_id": i}
        for i in range(3)
    ]
    return module, (images, targets)


def _trainer(loggers, **kw):
    base = dict(loggers=loggers, global_rank=0, sanity_checking=False, current_epoch=0,
                global_step=7)
    return types.SimpleNamespace(**{**base, **kw})


def test_image_logger_without_wandb_does_nothing(tmp_path):
    module, batch = _module_and_batch()
    callback = ValidationImageLogger(num_images=2, score_threshold=0.0)
    callback.on_validation_batch_end(_trainer([CSVLogger(tmp_path)]), module, None, batch, 0)
    callback.on_validation_batch_end(_trainer([]), module, None, batch, 0)


def test_image_logger_logs_to_wandb_logger(tmp_path, monkeypatch):
    import wandb

    made: list[dict] = []
    real_image = wandb.Image

    def spy_image(data, **kwargs):  # the real wandb.Image validates the boxes; keep its args
        made.append(kwargs)
        return real_image(data, **kwargs)

    monkeypatch.setattr(wandb, "Image", spy_image)
    module, batch = _module_and_batch()
    run = FakeRun()
    logger = WandbLogger(experiment=run, save_dir=str(tmp_path))
    callback = ValidationImageLogger(num_images=2, score_threshold=0.0, every_n_epochs=2)
    hook = callback.on_validation_batch_end
    hook(_trainer([CSVLogger(tmp_path), logger], current_epoch=0), module, None, batch, 0)
    hook(_trainer([logger], current_epoch=1, sanity_checking=True), module, None, batch, 0)
    hook(_trainer([logger], current_epoch=1, global_rank=1), module, None, batch, 0)
    hook(_trainer([logger], current_epoch=1), module, None, batch, 1)  # not the first batch
    assert run.calls == [] and made == []
    hook(_trainer([logger], current_epoch=1), module, None, batch, 0)
    assert len(run.calls) == 1
    data, kwargs = run.calls[0]
    assert data["trainer/global_step"] == 7 and kwargs == {}
    images = data["val/examples"]
    assert len(images) == 2 and all(isinstance(im, real_image) for im in images)
    assert images[0].image.size == (128, 100)  # padding (200x256 * 0.5 -> 100x128) cropped
    assert len(made) == 2 and set(made[0]["boxes"]) == {"predictions", "ground_truth"}
    gt = made[0]["boxes"]["ground_truth"]
    assert gt["box_data"][0]["position"] == {"minX": 10.0, "minY": 10.0, "maxX": 50.0, "maxY": 40.0}
    assert gt["class_labels"] == {0: "a", 1: "b"}
    preds = made[0]["boxes"]["predictions"]["box_data"]
    assert preds and all(0 <= b["position"]["maxY"] <= 100 for b in preds)
    assert all(b["scores"]["score"] >= 0.0 and b["domain"] == "pixel" for b in preds)


def test_report_goes_to_an_offline_wandb_run_as_a_table(tmp_path):
    from distill.report import log_report_to_wandb

    rows = {
        "teacher": {"model": "efficientdet_d0", "map": 0.4, "map_50": 0.6, "params": 10,
                    "macs": 20, "latency_ms": 3.0},
        "baseline": {"model": "efficientdet_dm3", "map": 0.2, "map_50": 0.3, "params": 1,
                     "macs": 2, "latency_ms": 1.0},
    }
    log_report_to_wandb(rows, tmp_path, "distill-test", "t", "offline", {"seed": 0})
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/report_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["stage", "model", "map"]
    assert [row[0] for row in table["data"]] == ["teacher", "baseline"]
    assert table["data"][0][2] == 0.4


class ArtifactRun:
    """Stands in for a wandb run: records ``log_artifact`` calls."""

    def __init__(self) -> None:
        self.artifacts: list = []

    def log_artifact(self, artifact) -> None:
        self.artifacts.append(artifact)


def test_report_and_student_checkpoint_are_logged_as_artifacts(tmp_path):
    from distill.report import log_artifacts

    for name in ("report.json", "report.md", "plots/tradeoff.png", "distilled/student.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    rows = {"distilled": {"model": "damo_yolo_pico", "map": 0.3,
                          "checkpoint": str(tmp_path / "distilled" / "student.ckpt")}}
    run = ArtifactRun()
    log_artifacts(run, rows, tmp_path, "quick")
    report, model = run.artifacts
    assert (report.name, report.type) == ("quick-report", "report")
    assert sorted(report.manifest.entries) == ["plots/tradeoff.png", "report.json", "report.md"]
    assert (model.name, model.type) == ("quick-student", "model")
    assert list(model.manifest.entries) == ["student.ckpt"]
    assert model.metadata["model"] == "damo_yolo_pico"


def test_stage_loggers_join_the_runs_wandb_group(tmp_path, monkeypatch):
    from distill.config import load_recipe
    from distill.training import WANDB_GROUP_ENV, build_logger

    monkeypatch.setenv(WANDB_GROUP_ENV, "quickstart:quickstart-2")
    recipe = load_recipe(None, ["wandb_mode=disabled"])
    logger = build_logger(recipe, tmp_path / "baseline")
    assert logger._wandb_init["group"] == "quickstart:quickstart-2"
    assert logger._wandb_init["job_type"] == "baseline"
