"""Every term kind trained from a recipe: values fall, the teacher stays, gradients stay home."""

import pytest
import pytorch_lightning as pl
import torch
from distill_steps import fit_steps
from test_distillation_module import build_module, tiny_recipe

from distill.training import prepare_data

TERMS = ("[{kind: prediction, weight: {schedule: constant}},"
         " {kind: crosskd, weight: {schedule: constant}},"
         " {kind: feature, loss: fgd, weight: {schedule: constant}},"
         " {kind: feature, name: mgd, loss: mgd, weight: {schedule: auto, target: 0.5}}]")


class TermValues(pl.Callback):
    """Each term's logged value per step."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for name in pl_module.distiller:
            value = trainer.callback_metrics[f"train/kd_{name}"]
            self.values.setdefault(name, []).append(float(value))


def test_all_term_kinds_train_together_and_leave_the_teacher_alone(tmp_path):
    torch.manual_seed(0)
    recipe = tiny_recipe(tmp_path, **{"distill.terms": TERMS, "optim.lr": "0.01"})
    data = prepare_data(recipe)
    module = build_module(recipe, data.class_names)
    assert list(module.distiller) == ["prediction", "crosskd", "feature", "mgd"]
    assert module.student_taps == ("box_hidden", "cls_hidden")
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    batch = next(iter(data.train_dataloader()))
    values = TermValues()
    record = fit_steps(module, batch, 12, callbacks=[values])
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher_before.items())
    for name, series in values.values.items():
        first, last = sum(series[:3]) / 3, sum(series[-3:]) / 3
        assert last < first, (name, series)
    assert record.losses[-1] < record.losses[0]
    keys = set(module.state_dict())
    assert "distiller.crosskd.cls_align.weight" in keys
    assert "distiller.mgd.weight.term_avg" in keys  # the auto balance is saved and resumed
    assert not any(k.startswith("teacher") for k in keys)


def test_check_lists_every_term_and_stops_on_unpairable_predictions(tmp_path, capsys):
    from distill.errors import RecipeError
    from distill.pipeline import check, run

    recipe = tiny_recipe(tmp_path, **{"distill.terms": TERMS})
    report = check(recipe, batches=1)
    assert [t["name"] for t in report["terms"]] == ["prediction", "crosskd", "feature", "mgd"]
    out = capsys.readouterr().out
    assert "term crosskd (crosskd):" in out and "teacher_layers=1" in out
    assert "term mgd (feature):" in out and "weight auto, target=0.5" in out
    crosskd = report["terms"][1]["params"]
    assert crosskd == 2 * (24 * 32 + 32)  # two 1x1 align convs, dm3 heads (24) -> dm2 heads (32)
    other_size = tiny_recipe(tmp_path, **{"distill.terms": "[{kind: prediction}]",
                                          "teacher.model.image_size": "192"})
    with pytest.raises(RecipeError, match=r"stride 8 .*same input size"):
        check(other_size, batches=1)
    typo = tiny_recipe(tmp_path, **{"distill.terms": "[{kind: prediction, bx: giou}]",
                                    "data.root": str(tmp_path / "fresh")})
    with pytest.raises(RecipeError, match=r"distill.terms\[0\]: unknown key\(s\) \['bx'\]"):
        run(typo)
    assert not (tmp_path / "fresh").exists()  # stopped before the data was generated
