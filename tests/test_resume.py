"""Exact resume: a `distill run` killed with SIGKILL mid-stage and resumed ends where an
uninterrupted run ends; checkpoints are written atomically; the sampler order is (seed, epoch)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_distillation_module import REPO, save_detector, tiny_overrides

from distill.checkpoints import read_checkpoint
from distill.config import recipe_to_dict
from distill.data.sampling import EpochSampler, sample_seed
from distill.lightning.detection import build_detector
from distill.lightning.resume import AtomicCheckpointIO


def run_args(tmp_path: Path, out: str, *extra: str, every: str = "1", val: str = "1") -> list[str]:
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.ckpt"
    if not teacher.is_file():
        save_detector(build_detector({"name": "efficientdet_dm2", "image_size": 128}, 6), teacher)
    overrides = tiny_overrides(tmp_path, **{
        "output_dir": str(tmp_path / out),
        "logger": "none",
        "teacher.checkpoint": str(teacher),
        "distill.stages": "[distilled]",
        "trainer.epochs": "3",
        "trainer.val_every": val,
        "trainer.deterministic": "true",
        "trainer.checkpoint_every_steps": every,
        "model.drop_path_rate": "0.1",  # a training step that draws from the global RNG
    })
    return [sys.executable, "-m", "distill.cli", "run", str(REPO / "recipes" / "quickstart.yaml"),
            *overrides, *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def final_state(stage: Path) -> tuple[dict, dict]:
    student = read_checkpoint(stage / "checkpoints" / "student.ckpt")["state_dict"]
    return student, json.loads((stage / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("every", ["1", "0"], ids=["mid-epoch", "epoch-end"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, every):
    """every=1: last.ckpt after each step, the kill lands mid-epoch; 0: at epoch ends only,
    validating every second epoch (the first last.ckpt comes from an epoch without validation)."""
    opts = {"every": every, "val": "1" if every == "1" else "2"}
    subprocess.run(run_args(tmp_path, "whole", **opts), env=env(), check=True,
                   capture_output=True)
    reference, ref_metrics = final_state(tmp_path / "whole" / "tiny" / "distilled")

    stage = tmp_path / "killed" / "tiny" / "distilled"
    last = stage / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(run_args(tmp_path, "killed", **opts), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert last.is_file() and not (stage / "metrics.json").exists()
    killed_at = read_checkpoint(last)["global_step"]
    assert 0 < killed_at < 6  # 3 epochs of 2 steps: killed mid-run
    # the kill follows the first checkpoint within ~20 ms, long before the second: every=1 the
    # first step's, every=0 the end of epoch 0, which does not validate (Lightning 2.6's
    # ModelCheckpoint(save_top_k=0) wrote none there: the first last.ckpt came at step 4)
    assert killed_at == (1 if every == "1" else 2)

    done = subprocess.run(run_args(tmp_path, "killed", "resume=true", **opts), env=env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout
    assert not list((tmp_path / "killed").glob("tiny-*"))  # the same run folder, not tiny-2
    resumed, metrics = final_state(stage)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
    assert metrics["steps"] == ref_metrics["steps"] == 6
    for key in ("map", "map_50", "best_map", "per_class"):
        assert metrics[key] == ref_metrics[key], key

    again = subprocess.run(run_args(tmp_path, "killed", "resume=true", **opts), env=env(),
                           capture_output=True, text=True)
    assert again.returncode == 0 and "is finished" in again.stdout  # finished stages are skipped


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch():
    one = EpochSampler(10, seed=3)
    first = list(one)
    assert sorted(i for i, _ in first) == list(range(10))
    assert all(s == sample_seed(3, 0, i) for i, s in first)
    assert list(EpochSampler(10, seed=3)) == first  # a new process: the same order
    one.epoch = 1
    second = list(one)
    assert [i for i, _ in second] != [i for i, _ in first]
    one.skip = 4
    assert list(one) == second[4:] and list(one) == second  # skip applies to one pass only
    ranks = [list(EpochSampler(10, seed=3, world=2, rank=r)) for r in (0, 1)]
    assert [i for i, _ in ranks[0]] == [i for i, _ in first][0::2]
    assert [i for i, _ in ranks[1]] == [i for i, _ in first][1::2]
    with pytest.raises(ValueError, match="rank 2"):
        EpochSampler(10, seed=3, world=2, rank=2)


def test_sample_augmentation_depends_on_its_seed_only(tmp_path):
    from test_distillation_module import tiny_recipe

    from distill.training import prepare_data

    data = prepare_data(tiny_recipe(tmp_path))
    dataset = data.train_dataset
    torch.manual_seed(1)
    a = dataset[(2, 123)][0]
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = dataset[(2, 123)][0]
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    assert torch.equal(a, b)
    differs = [not torch.equal(a, dataset[(2, s)][0]) for s in range(124, 130)]
    assert any(differs)  # augmentation does draw from the seed


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"x": torch.ones(3)}, path)
    assert torch.equal(torch.load(path)["x"], torch.ones(3))

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["x"], torch.ones(3))  # the previous file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


@pytest.mark.parametrize("workers", ["0", "1"])
def test_each_epoch_draws_the_sampler_order_of_that_epoch(tmp_path, one_thread, workers):
    import pytorch_lightning as pl
    from test_distillation_module import tiny_recipe

    from distill.lightning import DetectionModule
    from distill.lightning.resume import ResumeState
    from distill.training import prepare_data

    recipe = tiny_recipe(tmp_path, **{"data.num_workers": workers, "data.batch_size": "4"})
    data = prepare_data(recipe)
    seen: dict[int, list[int]] = {}

    class Ids(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault(trainer.current_epoch, []).extend(t["image_id"] for t in batch[1])

    module = DetectionModule(recipe_to_dict(recipe), data.class_names)
    trainer = pl.Trainer(max_epochs=2, limit_val_batches=0, logger=False, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ResumeState(data), Ids()])
    trainer.fit(module, datamodule=data)
    ids = [s.image_id for s in data.train_index.samples]
    for epoch in (0, 1):
        sampler = EpochSampler(len(ids), seed=recipe.seed)
        sampler.epoch = epoch
        assert seen[epoch] == [ids[i] for i, _ in sampler]
    assert seen[0] != seen[1]


def test_bad_distributed_and_checkpoint_values_name_the_key(tmp_path):
    from distill.config import load_recipe
    from distill.errors import RecipeError

    quickstart = REPO / "recipes" / "quickstart.yaml"
    for override, key in (("trainer.devices=0", "trainer.devices"),
                          ("trainer.num_nodes=-1", "trainer.num_nodes"),
                          ("trainer.checkpoint_every_steps=-5", "trainer.checkpoint_every_steps")):
        with pytest.raises(RecipeError, match=f"'{key}' is -?[0-9]+"):
            load_recipe(quickstart, [override])
    with pytest.raises(RecipeError, match="resume"):
        load_recipe(quickstart, ["resume=maybe"])


def test_checkpoints_overwrite_files_left_in_the_run_folder(tmp_path):
    """A run folder moved or re-trained holds last.ckpt / best.ckpt from before: they are
    replaced, never joined by last-v1.ckpt (which a later resume would not read)."""
    from test_distillation_module import tiny_recipe

    from distill.training import train

    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("last.ckpt", "best.ckpt"):
        (checkpoints / name).write_bytes(b"left from an earlier run")
    train(tiny_recipe(tmp_path, logger="none"), run_dir=run_dir)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 2  # 16 images, batch 8
