"""The distillation LightningModule and `distill run` / `distill check` on tiny embedded data."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from distill.checkpoints import read_checkpoint
from distill.cli import main
from distill.config import load_recipe, recipe_to_dict
from distill.distillation.module import DistillationModule, paired_levels
from distill.distillation.terms import TermInputs
from distill.errors import RecipeError
from distill.lightning.detection import build_detector
from distill.pipeline import check
from distill.stages import load_teacher
from distill.training import evaluate, prepare_data

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(tmp_path: Path, **extra: str) -> list[str]:
    """dm2 teaches dm3 on 16 + 8 images of 128 px, one epoch: seconds, not minutes."""
    values = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "logger": "csv",
        "data.root": str(tmp_path / "data"),
        "data.num_workers": "0",
        "data.batch_size": "8",
        "data.synthetic.num_train": "16",
        "data.synthetic.num_val": "8",
        "model.name": "efficientdet_dm3",
        "model.image_size": "128",
        "teacher.model.name": "efficientdet_dm2",
        "teacher.model.image_size": "128",
        "trainer.epochs": "1",
        "trainer.progress_bar": "false",
        "trainer.log_every": "1",
        "distill.latency_runs": "2",
        "distill.terms": "null",  # the feature term (these tests check its machinery)
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def tiny_recipe(tmp_path: Path, **extra: str):
    return load_recipe(REPO / "recipes" / "quickstart.yaml", tiny_overrides(tmp_path, **extra))


def build_module(recipe, class_names, teacher=None) -> DistillationModule:
    cfg = recipe_to_dict(recipe)
    if teacher is None:
        teacher = build_detector(cfg["teacher"]["model"], num_classes=len(class_names))
    return DistillationModule(cfg, class_names, teacher=teacher)


def test_teacher_is_frozen_and_kept_out_of_state_dict(tmp_path):
    module = build_module(tiny_recipe(tmp_path), ["a", "b"])
    module.train()
    assert not module.teacher.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    keys = list(module.state_dict())
    assert not any(k.startswith("teacher") for k in keys)
    assert "distiller.feature.levels.norm.0.running_var" in keys
    assert "distiller.feature.levels.align.0.weight" in keys
    assert list(module.distiller["feature"].levels.norm.parameters()) == []
    own = {id(p) for p in module.parameters()}
    assert not own & {id(p) for p in module.teacher.parameters()}
    assert module.student_state_dict().keys() == {k for k in keys if k.startswith("model.")}


def test_training_step_leaves_teacher_bit_identical_and_trains_align(tmp_path):
    recipe = tiny_recipe(tmp_path)
    data = prepare_data(recipe)
    module = build_module(recipe, data.class_names)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    align_before = module.distiller["feature"].levels.align[0].weight.detach().clone()
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, logger=False, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, gradient_clip_val=30.0,
                         log_every_n_steps=1)
    trainer.fit(module, datamodule=data)

    after = module.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in teacher_before)
    assert not torch.equal(align_before, module.distiller["feature"].levels.align[0].weight)
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(module.distiller["feature"].levels.align[0].weight) in optimized
    assert not optimized & {id(p) for p in module.teacher.parameters()}
    logged = trainer.callback_metrics
    for key in ("train/det_loss", "train/kd_feature_s8", "train/kd_feature_s32",
                "train/kd_feature_weight", "train/kd_feature_ratio", "train/distill_ratio"):
        assert key in logged, key
    total = 2
    expected = module.distiller["feature"].weight.scheduled(1, total)  # logged at the last step
    assert float(logged["train/kd_feature_weight"]) == pytest.approx(expected)


def test_teacher_at_its_own_resolution_is_paired_by_stride(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"teacher.model.image_size": "256"})
    module = build_module(recipe, ["a", "b"])
    images = torch.randn(2, 3, 128, 128)
    teacher = module.teacher_output(images)
    term = module.distiller["feature"]
    assert [teacher.features[i].shape[-1] for i in term.teacher_levels] == [32, 16, 8]
    inputs = TermInputs(module.model(images), teacher, [], (128, 128))
    assert term(inputs)["total"] > 0


def test_levels_pair_by_stride_and_unknown_strides_are_named():
    student = build_detector({"name": "efficientdet_dm3", "image_size": 128}, 2)
    teacher = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 2)
    assert paired_levels(student, teacher, [16, 32]) == ([16, 32], [1, 2], [1, 2])
    assert paired_levels(student, teacher, None)[0] == [8, 16, 32, 64, 128]
    with pytest.raises(RecipeError, match="stride 4"):
        paired_levels(student, teacher, [4, 8])


def save_detector(model, path: Path) -> Path:
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_mismatched_teacher_checkpoint_names_missing_keys(tmp_path):
    recipe = tiny_recipe(tmp_path)  # teacher: dm2
    small = build_detector({"name": "efficientdet_dm3", "image_size": 128}, 6)
    path = save_detector(small, tmp_path / "dm3.ckpt")
    with pytest.raises(RecipeError, match="missing keys: .*neck|shape mismatches") as err:
        load_teacher(recipe, 6, path)
    assert str(path) in str(err.value)
    good = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 6)
    state = {f"model.{k}": v for k, v in good.state_dict().items()}
    state["model.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "extra.ckpt")
    with pytest.raises(RecipeError, match="unexpected keys: extra.weight"):
        load_teacher(recipe, 6, tmp_path / "extra.ckpt")
    partial = dict(list(state.items())[:-2])
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(RecipeError, match="missing keys"):
        load_teacher(recipe, 6, tmp_path / "partial.ckpt")


def test_check_reports_levels_and_flags_an_untrained_teacher(tmp_path, capsys):
    teacher = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 6)
    path = save_detector(teacher, tmp_path / "teacher.ckpt")
    recipe = tiny_recipe(tmp_path, **{"teacher.checkpoint": str(path)})
    report = check(recipe, batches=1)
    (term,) = report["terms"]
    assert term["name"] == "feature" and term["settings"]["loss"] == "cwd"
    assert [row["stride"] for row in term["levels"]] == [8, 16, 32]
    assert [row["student_channels"] for row in term["levels"]] == [24, 24, 24]
    assert [row["teacher_channels"] for row in term["levels"]] == [32, 32, 32]
    assert report["distiller_params"] == term["params"] == 3 * (24 * 32 + 32)
    assert report["teacher_at_chance"] is True
    out = capsys.readouterr().out
    assert "WARNING" in out and "16x16" in out
    missing = tiny_recipe(tmp_path, **{"teacher.checkpoint": str(tmp_path / "nope.ckpt")})
    with pytest.raises(RecipeError, match="teacher.checkpoint: file not found"):
        check(missing)


def test_distill_run_writes_report_and_a_student_only_checkpoint(tmp_path, capsys):
    recipe_file = str(REPO / "recipes" / "quickstart.yaml")
    assert main(["run", recipe_file, *tiny_overrides(tmp_path)]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    report = json.loads((run_dir / "report.json").read_text())
    assert list(report["stages"]) == ["teacher", "baseline", "distilled"]
    for row in report["stages"].values():
        assert row["params"] > 0 and row["macs"] > 0 and row["latency_ms"] > 0
        assert 0.0 <= row["map"] <= 1.0
    stages = report["stages"]
    assert stages["teacher"]["params"] > stages["baseline"]["params"]
    assert stages["baseline"]["params"] == stages["distilled"]["params"]
    markdown = (run_dir / "report.md").read_text()
    assert "| distilled | efficientdet_dm3 |" in markdown
    assert set(report["plots"]) == {"tradeoff", "per_class_ap", "curves", "pr_curves"}
    for path in report["plots"].values():
        assert (run_dir / path).stat().st_size > 10_000 and f"]({path})" in markdown

    student = Path(stages["distilled"]["checkpoint"])
    state = read_checkpoint(student)["state_dict"]
    assert state and all(k.startswith("model.") for k in state)
    recipe = load_recipe(recipe_file, tiny_overrides(tmp_path))
    metrics = evaluate(recipe, student, output=tmp_path / "eval.json")
    assert metrics["map"] == pytest.approx(stages["distilled"]["map"], abs=1e-6)
    stage_checkpoint = run_dir / "distilled" / "checkpoints" / "last.ckpt"  # student + distiller
    assert any(k.startswith("distiller.") for k in read_checkpoint(stage_checkpoint)["state_dict"])
    again = evaluate(recipe, stage_checkpoint, output=tmp_path / "eval-last.json")
    assert again["map"] == pytest.approx(metrics["map"], abs=1e-6)

    # A second run reuses the teacher trained by the first (same teacher recipe).
    capsys.readouterr()
    assert main(["run", recipe_file, *tiny_overrides(tmp_path), "distill.stages=[teacher]"]) == 0
    assert "reusing" in capsys.readouterr().out
    second = json.loads((tmp_path / "runs" / "tiny-2" / "report.json").read_text())
    assert second["stages"]["teacher"]["checkpoint"] == stages["teacher"]["checkpoint"]
    assert stages["teacher"]["checkpoint"].endswith("/checkpoints/last.ckpt")
    # teacher.use=best: this teacher never validated (2 epochs, val_every 3), so it has none
    assert main(["run", recipe_file, *tiny_overrides(tmp_path), "distill.stages=[teacher]",
                 "teacher.use=best"]) == 2
    assert "teacher.use: best: the training in" in capsys.readouterr().err


def test_frozen_bn_phase_keeps_running_stats_while_weights_train(tmp_path):
    from distill.lightning import DetectionModule
    from distill.lightning.freeze_bn import FreezeBatchNorm

    recipe = tiny_recipe(tmp_path)
    data = prepare_data(recipe)
    module = DetectionModule(recipe_to_dict(recipe), data.class_names)
    snapshots = {}

    class Snapshot(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            bn = pl_module.model.class_head.bn_rep[0][0]
            weight = next(pl_module.model.parameters())
            snapshots[trainer.current_epoch] = (bn.running_mean.clone(), weight.detach().clone())

    trainer = pl.Trainer(max_epochs=3, limit_val_batches=0, logger=False, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False,
                         callbacks=[FreezeBatchNorm(0.5), Snapshot()])
    assert FreezeBatchNorm(0.5).start_epoch(trainer) == 2
    trainer.fit(module, datamodule=data)
    assert not torch.equal(snapshots[0][0], snapshots[1][0])  # epoch 1: statistics still move
    assert torch.equal(snapshots[1][0], snapshots[2][0])  # epoch 2: frozen
    assert not torch.equal(snapshots[1][1], snapshots[2][1])  # ... while the weights train
    with pytest.raises(ValueError, match="freeze_bn_at"):
        FreezeBatchNorm(1.5)


def test_teacher_cache_is_keyed_by_what_shapes_the_teacher(tmp_path):
    from distill.stages import teacher_cache_dir, teacher_recipe

    base = teacher_cache_dir(tiny_recipe(tmp_path))
    assert base == teacher_cache_dir(tiny_recipe(tmp_path, **{"distill.loss": "mimic",
                                                              "model.name": "efficientdet_dm2"}))
    assert base != teacher_cache_dir(tiny_recipe(tmp_path, seed="1"))
    assert base != teacher_cache_dir(tiny_recipe(tmp_path, **{"teacher.epochs": "3"}))
    # the teacher trains twice the students' epochs unless teacher.epochs says otherwise
    assert base == teacher_cache_dir(tiny_recipe(tmp_path, **{"teacher.epochs": "2"}))
    assert teacher_recipe(tiny_recipe(tmp_path, **{"trainer.epochs": "5"})).trainer.epochs == 10
    fixed = {"teacher.seed": "0"}
    assert teacher_cache_dir(tiny_recipe(tmp_path, seed="1", **fixed)) == teacher_cache_dir(
        tiny_recipe(tmp_path, seed="2", **fixed))
    assert base == teacher_cache_dir(tiny_recipe(tmp_path, **{"trainer.log_every": "7"}))


def test_teacher_cache_key_reads_the_data_root_as_an_absolute_path(tmp_path, monkeypatch):
    from distill.stages import teacher_cache_dir

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    absolute = tiny_recipe(tmp_path, **{"data.root": str(tmp_path / "shapes"),
                                        "output_dir": str(tmp_path / "runs")})
    relative = tiny_recipe(tmp_path, **{"data.root": "../shapes",
                                        "output_dir": str(tmp_path / "runs")})
    other = tiny_recipe(tmp_path, **{"data.root": "shapes", "output_dir": str(tmp_path / "runs")})
    assert teacher_cache_dir(relative) == teacher_cache_dir(absolute)
    assert teacher_cache_dir(other) != teacher_cache_dir(absolute)  # work/shapes: other data


def test_teacher_cache_key_ignores_unset_keys():
    """A new optional recipe key (null or empty by default) must not orphan cached teachers."""
    from distill.stages.teacher import _without_unset

    settings = {"a": None, "b": {}, "c": {"d": None, "e": 1, "f": {"g": None}}, "h": [], "i": 0}
    assert _without_unset(settings) == {"c": {"e": 1}, "h": [], "i": 0}


def test_teacher_below_min_map_stops_before_the_students(tmp_path, capsys):
    recipe_file = str(REPO / "recipes" / "quickstart.yaml")
    args = ["run", recipe_file, *tiny_overrides(tmp_path), "teacher.min_map=0.5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "teacher.min_map" in err and "below 0.5" in err
    run_dir = tmp_path / "runs" / "tiny"
    report = json.loads((run_dir / "report.json").read_text())
    assert list(report["stages"]) == ["teacher"] and report["stopped"]
    assert not (run_dir / "baseline").exists() and not (run_dir / "distilled").exists()


def test_after_stop_at_the_teacher_is_not_run_and_align_grads_are_zero(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"distill.weight.stop_at": "0.5"})
    data = prepare_data(recipe)
    module = build_module(recipe, data.class_names)
    calls = []
    run_teacher = module.teacher_output
    module.teacher_output = lambda images: calls.append(1) or run_teacher(images)
    grads = []

    class AlignGrad(pl.Callback):
        def on_after_backward(self, trainer, pl_module):
            grads.append(pl_module.distiller["feature"].levels.align[0].weight.grad.abs().sum().item())

    trainer = pl.Trainer(max_steps=4, limit_val_batches=0, logger=False, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[AlignGrad()])
    trainer.fit(module, datamodule=data)
    assert len(calls) == 2  # steps 0 and 1 of 4; from step 2 (= 0.5 * 4) the weight is 0
    assert grads[0] > 0 and grads[1] > 0 and grads[2] == 0.0 and grads[3] == 0.0


def test_training_values_are_logged_on_the_logging_steps_only(tmp_path):
    """trainer.log_every=3: the CSV has every value on steps 3 and 6, and nothing else."""
    recipe = tiny_recipe(tmp_path, **{"trainer.log_every": "3", "trainer.epochs": "3",
                                      "data.batch_size": "8", "trainer.val_every": "3"})
    data = prepare_data(recipe)
    module = build_module(recipe, data.class_names)
    trainer = pl.Trainer(max_steps=6, limit_val_batches=0, accelerator="cpu",
                         logger=pl.loggers.CSVLogger(tmp_path / "csv", name="", version=""),
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=3)
    trainer.fit(module, datamodule=data)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header, rows = rows[0].split(","), [r.split(",") for r in rows[1:]]
    steps = [int(r[header.index("step")]) for r in rows]
    assert steps == [2, 5]  # Lightning's 0-based step of the 3rd and 6th optimizer step
    for key in ("train/loss", "train/det_loss", "train/kd_feature_s8",
                "train/kd_feature_weight"):
        assert all(r[header.index(key)] for r in rows), key


def count_term_resolves(monkeypatch) -> list[int]:
    """Count ``resolve_terms`` calls where the stages and the module look it up."""
    import distill.distillation.module as module_file
    import distill.stages.link as link_file

    calls = []
    for where in (link_file, module_file):
        real = where.resolve_terms
        monkeypatch.setattr(where, "resolve_terms",
                            lambda cfg, real=real: calls.append(1) or real(cfg))
    return calls


def test_distill_run_resolves_the_terms_once_per_link(tmp_path, monkeypatch):
    from distill.pipeline import run

    calls = count_term_resolves(monkeypatch)
    recipe = tiny_recipe(tmp_path, **{"distill.stages": "[distilled]", "teacher.epochs": "1"})
    out = run(recipe)  # check, teacher training, distilled stage: one link
    assert len(calls) == 1
    assert list(json.loads(Path(out["report"]).read_text())["stages"]) == ["distilled"]
    # Lightning rebuilding the module from a checkpoint's saved recipe resolves them itself
    saved = read_checkpoint(Path(out["run_dir"]) / "distilled" / "checkpoints" / "last.ckpt")
    rebuilt = DistillationModule(saved["hyper_parameters"]["recipe"],
                                 saved["hyper_parameters"]["class_names"])
    rebuilt.load_state_dict(saved["state_dict"])
    assert len(calls) == 2 and list(rebuilt.distiller) == ["feature"]
