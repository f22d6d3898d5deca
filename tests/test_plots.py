"""The report's numbers and pictures: PR curves in the metrics, history.json per run, PNGs."""

import json

import pytest
import torch
from PIL import Image

from distill.evaluation import make_map_metric, summarize_map
from distill.plots import plot_curves, plot_pr_curves, plot_report, plot_tradeoff

ROWS = {
    "teacher": {"model": "efficientdet_d0", "map": 0.43, "params": 3.8e6, "latency_ms": 40.0},
    "baseline": {"model": "efficientdet_dm2", "map": 0.38, "params": 1.0e6, "latency_ms": 9.0},
    "distilled": {"model": "efficientdet_dm2", "map": 0.41, "params": 1.0e6, "latency_ms": 9.0},
}


def box(x: float, y: float, size: float = 20.0) -> list[float]:
    return [x, y, x + size, y + size]


def test_pr_curve_of_perfect_and_of_half_wrong_detections():
    metric = make_map_metric()
    gts = {"boxes": torch.tensor([box(0, 0), box(50, 50), box(0, 50), box(50, 0)]),
           "labels": torch.tensor([0, 0, 1, 1])}
    # class 0: both found with the best scores; class 1: the best-scored detection is a miss,
    # then both objects are found
    preds = {"boxes": torch.tensor([box(0, 0), box(50, 50), box(100, 100), box(0, 50),
                                    box(50, 0)]),
             "scores": torch.tensor([0.9, 0.8, 0.95, 0.7, 0.6]),
             "labels": torch.tensor([0, 0, 1, 1, 1])}
    metric.update([preds], [gts])
    summary = summarize_map(metric.compute(), ["cell", "dot", "absent"])
    curves = summary["pr_50"]
    assert curves["cell"] == [1.0] * 101
    # class 1: precision 1/2 at recall 0.5 and 2/3 at recall 1; COCO interpolates the envelope
    assert curves["dot"][0] == pytest.approx(2 / 3, abs=1e-4)
    assert curves["dot"][-1] == pytest.approx(2 / 3, abs=1e-4)
    assert curves["absent"] is None
    assert json.loads(json.dumps(summary)) == summary  # plain numbers for metrics.json


def test_training_writes_a_per_epoch_history(tmp_path):
    from test_distillation_module import tiny_recipe

    from distill.training import train

    metrics = train(tiny_recipe(tmp_path, logger="none",
                                **{"trainer.epochs": "2", "trainer.val_every": "1"}),
                    run_dir=tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["step"] for r in history] == [2, 4]  # 16 images, batch 8
    assert all(r["train/loss"] > 0 and 0 <= r["val/map"] <= 1 for r in history)
    assert history[-1]["val/map"] == pytest.approx(metrics["map"], abs=1e-6)
    assert "pr_50" in metrics and set(metrics["pr_50"]) == set(metrics["per_class"])
    # base.yaml freezes BatchNorm statistics for the second half (freeze_bn_at 0.5): epoch 2
    assert [r.get("bn_frozen", False) for r in history] == [False, True]


def image_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


def test_report_pictures_are_drawn_from_the_stage_folders(tmp_path):
    curve = [max(0.0, 1 - r / 100) for r in range(101)]
    records = {
        "baseline": [{"epoch": e, "train/loss": 1.0 / e, "val/map": 0.1 * e} for e in (1, 2, 3)],
        "distilled": [{"epoch": e, "train/det_loss": 1.0 / e, "train/kd_crosskd": 0.5 / e,
                       "train/kd_crosskd_weight": 1.0, "val/map": 0.12 * e} for e in (1, 2, 3)],
    }
    dirs = {}
    for stage in ("teacher", "baseline", "distilled"):
        folder = tmp_path / stage
        folder.mkdir()
        per_class = {"a": 0.5, "b": 0.3, "c": None}
        (folder / "metrics.json").write_text(json.dumps(
            {"per_class": per_class, "pr_50": {"a": curve, "b": curve, "c": None}}))
        if stage in records:
            (folder / "history.json").write_text(json.dumps({"epochs": records[stage]}))
        dirs[stage] = folder
    drawn = plot_report(tmp_path / "plots", ROWS, dirs)
    assert set(drawn) == {"tradeoff", "per_class_ap", "curves", "pr_curves"}
    for path in drawn.values():
        width, height = image_size(path)
        assert width > height > 200
    # two classes with curves: two panels side by side; a class without ground truth has none
    width, height = image_size(drawn["pr_curves"])
    assert 1.5 < width / height < 3.0


def test_nothing_to_draw_writes_no_file(tmp_path):
    assert plot_curves({"baseline": []}, tmp_path / "curves.png") is None
    assert plot_pr_curves({"baseline": {"a": None}}, tmp_path / "pr.png") is None
    assert plot_tradeoff({"baseline": {"map": None}}, tmp_path / "t.png") is None
    assert plot_report(tmp_path / "plots", {}, {"baseline": tmp_path / "missing"}) == {}
    assert not (tmp_path / "plots").exists()


def test_eighty_classes_stay_readable(tmp_path, monkeypatch):
    import distill.plots as plots
    from distill.plots import plot_per_class

    drawn = {}
    real = plots._save

    def keep(fig, path):
        drawn[path.name] = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        drawn[path.name + ":size"] = tuple(fig.get_size_inches())
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    names = [f"class{k:02d}" for k in range(80)]
    per_class = {"baseline": {n: k / 200 for k, n in enumerate(names)},
                 "distilled": {n: (80 - k) / 200 for k, n in enumerate(names)}}
    plot_per_class(per_class, tmp_path / "ap.png")
    (ax,) = drawn["ap.png"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 80 and labels[0] == "class79"  # horizontal, by distilled AP
    width, height = drawn["ap.png:size"]
    assert height > width
    curves = {"baseline": {n: [0.1] * 101 for n in names},
              "distilled": {n: [0.1 + (0.5 if k in (7, 42) else 0.0)] * 101
                            for k, n in enumerate(names)}}
    plot_pr_curves(curves, tmp_path / "pr.png")
    titles = [a.get_title() for a in drawn["pr.png"]]
    assert len(titles) == 12 and {"class07", "class42"} <= set(titles)


def test_the_loss_plot_marks_where_batchnorm_statistics_freeze(tmp_path, monkeypatch):
    import distill.plots as plots

    seen = {}
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (seen.update(
        lines=[line.get_label() for line in fig.axes[0].lines]), real(fig, path))[1])
    records = [{"epoch": e, "train/loss": 1.0 / e, "bn_frozen": e >= 3 or None} for e in (1, 2, 3)]
    plot_curves({"baseline": records}, tmp_path / "curves.png")
    assert "baseline: BatchNorm statistics frozen (optim.freeze_bn_at)" in seen["lines"]
