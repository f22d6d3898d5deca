"""End to end: `distill train` on embedded data raises mAP; `distill eval` reproduces it."""

import json
from pathlib import Path

import pytest
import torch
from data_fixtures import embedded_slice

from distill.cli import main
from distill.config import load_recipe, recipe_to_dict
from distill.lightning import DetectionModule
from distill.training import build_trainer, prepare_data

REPO = Path(__file__).resolve().parents[1]


def small_recipe_overrides(tmp_path: Path) -> list[str]:
    """A small slice of the embedded data, trained and evaluated on the same images (~1 min).

    From-scratch detectors need thousands of steps to generalise; fitting 32 images shows in
    about a hundred that the whole loop (loss, schedule, EMA, evaluation, checkpoints) learns.
    """
    return [*embedded_slice(tmp_path, "e2e"), "model.name=efficientdet_dm3", "model.image_size=128",
            "trainer.epochs=80", "trainer.val_every=40"]


def untrained_map(overrides: list[str]) -> float:
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", overrides)
    torch.manual_seed(recipe.seed)
    data = prepare_data(recipe)
    module = DetectionModule(recipe_to_dict(recipe), data.class_names)
    trainer = build_trainer(recipe, Path(recipe.output_dir), callbacks=[], logger=False)
    trainer.validate(module, datamodule=data, verbose=False)
    return module.last_metrics["map"]


@pytest.mark.slow
def test_training_raises_map_and_eval_reproduces_it(tmp_path, capsys):
    overrides = small_recipe_overrides(tmp_path)
    before = untrained_map(overrides)

    assert main(["train", str(REPO / "recipes" / "quickstart.yaml"), *overrides]) == 0
    run_dir = tmp_path / "runs" / "e2e"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["map"] > before + 0.2, (before, metrics["map"])
    assert set(metrics["per_class"]) == {"circle", "square", "triangle", "cross", "ring", "star"}
    assert (run_dir / "recipe.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    args = ["eval", str(REPO / "recipes" / "quickstart.yaml"), *overrides]
    assert main([*args, "--checkpoint", str(checkpoint)]) == 0
    evaluated = json.loads((run_dir / "eval-last.json").read_text())
    assert evaluated["map"] == pytest.approx(metrics["map"], abs=1e-6)

    # The same checkpoint under a recipe of another model: both models are named.
    wrong = [*args, "model.name=efficientdet_dm2", "--checkpoint", str(checkpoint)]
    assert main(wrong) == 2
    err = capsys.readouterr().err
    assert "holds the model efficientdet_dm3" in err and "builds efficientdet_dm2" in err
