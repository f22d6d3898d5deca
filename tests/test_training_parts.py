"""Schedules, EMA averaging and metric summaries."""

import json
import math
from pathlib import Path

import pytest
import torch

from distill.evaluation import (
    COCO_IOU_THRESHOLDS,
    COCO_RECALL_THRESHOLDS,
    make_map_metric,
    summarize_map,
    to_original_pixels,
)
from distill.io import write_json_atomic
from distill.lightning.ema import warmup_ema_avg_fn
from distill.lightning.schedules import warmup_cosine


def test_warmup_then_cosine():
    f = [
        warmup_cosine(s, total=100, warmup=10, warmup_factor=0.1, min_ratio=0.01)
        for s in range(101)
    ]
    assert f[0] == pytest.approx(0.1)
    assert f[5] == pytest.approx(0.55)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5)
    assert f[100] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone after warm-up


def test_ema_decay_ramps_up_then_caps():
    avg = warmup_ema_avg_fn(0.99)
    a, c = torch.zeros(3), torch.ones(3)
    # step 0: beta = 1/10 -> 90% of the new value
    assert torch.allclose(avg(a, c, torch.tensor(0)), torch.full((3,), 0.9))
    # late: beta capped at the decay
    assert torch.allclose(avg(a, c, torch.tensor(10_000)), torch.full((3,), 0.01))


def _box(x0, y0, x1, y1):
    return torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)


def test_map_summary_perfect_and_missing_class():
    metric = make_map_metric()
    targets = [{"boxes": _box(20, 20, 60, 80) * 0.5, "labels": torch.tensor([1]), "scale": 0.5}]
    preds = [
        {
            "boxes": _box(20, 20, 60, 80) * 0.5,
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        }
    ]
    p, g = to_original_pixels(preds, targets)
    assert torch.allclose(g[0]["boxes"], _box(20, 20, 60, 80))
    metric.update(p, g)
    summary = summarize_map(metric.compute(), ["a", "b", "c"])
    assert summary["map"] == pytest.approx(1.0)
    assert summary["map_50"] == pytest.approx(1.0)
    assert summary["per_class"] == {"a": None, "b": pytest.approx(1.0), "c": None}


def test_map_summary_wrong_class_is_zero():
    metric = make_map_metric()
    metric.update(
        [{"boxes": _box(0, 0, 10, 10), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}],
        [{"boxes": _box(0, 0, 10, 10), "labels": torch.tensor([1])}],
    )
    summary = summarize_map(metric.compute(), ["a", "b"])
    assert summary["map"] == pytest.approx(0.0)
    assert not math.isnan(summary["map_50"])


def test_map_equals_pycocotools_and_per_class_equals_a_run_per_class():
    """One evaluation gives COCO's mAP and the per-class APs of torchmetrics' per-class runs."""
    from torchmetrics.detection import MeanAveragePrecision

    gen = torch.Generator().manual_seed(0)
    preds, gts = [], []
    for _ in range(30):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * 80
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=gen) * 30], dim=1)
        labels = torch.randint(0, 4, (n,), generator=gen)
        jitter = torch.randn(n, 4, generator=gen) * 3
        gts.append({"boxes": boxes, "labels": labels})
        preds.append({"boxes": boxes + jitter, "scores": torch.rand(n, generator=gen),
                      "labels": torch.where(torch.rand(n, generator=gen) < 0.8, labels, 3)})
    ours = make_map_metric()
    ours.update(preds, gts)
    summary = summarize_map(ours.compute(), ["a", "b", "c", "d"])
    per_class = MeanAveragePrecision(box_format="xyxy", class_metrics=True,
                                     iou_thresholds=COCO_IOU_THRESHOLDS,
                                     rec_thresholds=COCO_RECALL_THRESHOLDS)
    per_class.update(preds, gts)
    ref = per_class.compute()
    assert 0.2 < summary["map"] == pytest.approx(float(ref["map"]), abs=1e-6)
    expected = dict(zip("abcd", ref["map_per_class"].tolist()))
    assert summary["per_class"] == pytest.approx(expected, abs=1e-6)


def test_atomic_json_write(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "m.json", {"map": 0.5})
    assert json.loads(path.read_text()) == {"map": 0.5}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left


def test_recipe_model_keys_reach_the_model():
    from distill.config import load_recipe, recipe_to_dict
    from distill.lightning.detection import build_detector

    recipe = load_recipe(
        None,
        ["model.name=efficientdet_dm3", "model.bn_momentum=0.3", "model.fusion=softmax"],
    )
    detector = build_detector(recipe_to_dict(recipe)["model"], num_classes=3)
    norms = [m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.3 for m in norms)
    assert detector.config.fusion == "softmax" and detector.num_classes == 3
    default = build_detector(recipe_to_dict(load_recipe(None))["model"], num_classes=3)
    assert {m.momentum for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d)} != {0.3}


def test_sync_batchnorm_is_on_for_several_devices_only(tmp_path):
    from distill.config import load_recipe
    from distill.lightning.sync_bn import GlobalSyncBatchNorm
    from distill.training import build_trainer

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    ddp = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp"]
    trainer = build_trainer(load_recipe(quickstart, ddp), tmp_path, [], False)
    assert isinstance(trainer.strategy._layer_sync, GlobalSyncBatchNorm)
    off = build_trainer(load_recipe(quickstart, [*ddp, "trainer.sync_batchnorm=false"]),
                        tmp_path, [], False)
    assert off.strategy._layer_sync is None
    single_recipe = load_recipe(quickstart, ["trainer.accelerator=cpu"])
    single = build_trainer(single_recipe, tmp_path, [], False)
    assert getattr(single.strategy, "_layer_sync", None) is None


def test_teacher_cache_key_ignores_keys_at_their_defaults(tmp_path):
    """A recipe key added in a later version, at its default, finds the teachers trained before
    it; a value that shapes the teacher still changes the key."""
    from distill.config import load_recipe
    from distill.stages import teacher_cache_dir
    from distill.stages.teacher import _without_unset

    defaults = {"data": {"batch_size": 8, "new_key": True}, "seed": 0}
    before = {"data": {"batch_size": 16}, "seed": 0}
    after = {"data": {"batch_size": 16, "new_key": True}, "seed": 0}
    assert _without_unset(after, defaults) == _without_unset(before, defaults) == {
        "data": {"batch_size": 16}}
    base = teacher_cache_dir(load_recipe(None, [f"output_dir={tmp_path}"]))
    same = load_recipe(None, [f"output_dir={tmp_path}", "data.verify_images=true"])
    other = load_recipe(None, [f"output_dir={tmp_path}", "data.batch_size=4"])
    assert teacher_cache_dir(same) == base != teacher_cache_dir(other)


def test_the_module_owns_its_training_callbacks_for_every_trainer(tmp_path):
    """``DetectionModule.configure_callbacks``: EMA, frozen BN and ResumeState as the recipe
    says, in `distill train`'s trainer and the search's proxy trainer alike; one EMA for the
    fit and the validation after it (the averaged weights are validated)."""
    import pytorch_lightning as pl
    from test_distillation_module import tiny_recipe

    from distill.lightning import DetectionModule, WarmupEMA
    from distill.lightning.finite import StopOnNonFiniteLoss
    from distill.lightning.freeze_bn import FreezeBatchNorm
    from distill.lightning.resume import ResumeState
    from distill.training import build_trainer, prepare_data

    recipe = tiny_recipe(tmp_path, **{"optim.ema_decay": "0.9", "optim.freeze_bn_at": "0.5",
                                      "trainer.max_steps": "1", "logger": "none"})
    data = prepare_data(recipe)
    module = DetectionModule(recipe, data.class_names)  # the typed recipe; saved as a dict
    assert module.hparams["recipe"]["optim"]["ema_decay"] == 0.9
    trainer = build_trainer(recipe, tmp_path, [], logger=False)
    trainer.fit(module, datamodule=data)
    kinds = [type(c) for c in trainer.callbacks]
    for kind in (WarmupEMA, FreezeBatchNorm, ResumeState):
        assert kinds.count(kind) == 1, kind
    ema = next(c for c in trainer.callbacks if isinstance(c, WarmupEMA))
    assert ema.decay == 0.9 and ema._average_model is not None
    trainer.validate(module, datamodule=data, verbose=False)
    assert next(c for c in trainer.callbacks if isinstance(c, WarmupEMA)) is ema

    off = {"optim.ema_decay": "0", "optim.freeze_bn_at": "null"}
    plain = DetectionModule(tiny_recipe(tmp_path, **off), data.class_names)
    bare = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, accelerator="cpu",
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    bare.fit(plain, datamodule=data)
    assert [type(c) for c in bare.callbacks if type(c).__module__.startswith("distill")] == [
        StopOnNonFiniteLoss, ResumeState]
