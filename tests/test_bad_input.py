"""Bad input stops before training with a message naming the key, file or folder: recipe values,
output folders, checkpoints to resume from (pickled code, truncated, another model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_distillation_module import REPO, tiny_recipe

from distill.config import load_recipe
from distill.errors import RecipeError

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


@pytest.mark.parametrize("override, key", [
    ("trainer.epochs=-3", "trainer.epochs"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.val_batch_size=0", "data.val_batch_size"),
    ("data.num_workers=-1", "data.num_workers"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("optim.lr=-0.5", "optim.lr"),
    ("optim.freeze_bn_at=1.5", "optim.freeze_bn_at"),
    ("teacher.epochs=0", "teacher.epochs"),
])
def test_numbers_out_of_range_name_the_key_and_what_was_expected(override, key):
    value = override.split("=")[1]
    with pytest.raises(RecipeError, match=rf"\(\+ command line\): '{key}' is {value}, expected "):
        load_recipe(QUICKSTART, [override])
    good = load_recipe(QUICKSTART, ["trainer.max_steps=-1", "data.val_batch_size=null"])
    assert good.trainer.max_steps == -1 and good.data.val_batch_size is None


def test_teacher_use_is_last_or_best():
    assert load_recipe(QUICKSTART).teacher.use == "last"
    assert load_recipe(QUICKSTART, ["teacher.use=best"]).teacher.use == "best"
    with pytest.raises(RecipeError, match="'teacher.use' is 'final', expected one of last, best"):
        load_recipe(QUICKSTART, ["teacher.use=final"])


# --------------------------------------------------------------------------- output folders


def read_only_folder() -> list[Path]:
    """A folder nobody may create, even root (sysfs), where this machine has one."""
    probe = Path("/sys/distill-test-output")
    try:
        probe.mkdir()
    except OSError:
        return [probe]
    probe.rmdir()
    return []


def test_impossible_or_read_only_output_dir_is_named_before_training(tmp_path, monkeypatch):
    from distill import training

    monkeypatch.setattr(training, "prepare_data", lambda r: pytest.fail("data prepared first"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for folder in (blocker, blocker / "runs", *read_only_folder()):
        recipe = tiny_recipe(tmp_path, output_dir=str(folder))
        with pytest.raises(RecipeError, match=f"output_dir: cannot write run files into {folder}"):
            training.train(recipe)


def test_a_failed_checkpoint_write_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    import errno

    import torch

    from distill.lightning.resume import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"x": torch.ones(2)}}, path)

    def disk_full(obj, handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(RecipeError, match=f"{path}: the checkpoint could not be written "
                                          r"\(No space left on device\); the previous file"):
        io.save_checkpoint({"state_dict": {"x": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# --------------------------------------------------------------------------- resume checkpoints


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def resume_with(tmp_path: Path, checkpoint: dict | bytes):
    """``train`` with resume=true in a run folder whose last.ckpt is ``checkpoint``."""
    import torch

    from distill.training import train

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    if isinstance(checkpoint, bytes):
        last.write_bytes(checkpoint)
    else:
        torch.save(checkpoint, last)
    recipe = tiny_recipe(tmp_path, logger="none", resume="true")
    with pytest.raises(RecipeError) as err:
        train(recipe, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    return str(err.value), last


def test_resume_never_runs_code_in_last_ckpt(tmp_path, monkeypatch):
    """Lightning's own loading would run it (torch.load without weights_only) when torch's
    default is switched off, as this environment variable does."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "code-ran"
    message, last = resume_with(tmp_path, {"state_dict": {}, "extra": Payload(marker)})
    assert not marker.exists()
    assert message.startswith(f"{last}: not a loadable checkpoint: refused, the file holds "
                              "Python objects")
    assert "none of its code ran" in message


def test_resume_from_a_truncated_or_foreign_last_ckpt_names_it(tmp_path):
    import torch

    from distill.lightning.detection import build_detector

    message, last = resume_with(tmp_path / "cut", b"PK\x03\x04 half a checkpoint")
    assert message.startswith(f"{last}: not a loadable checkpoint (truncated")
    other = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 6)
    state = {f"model.{k}": v for k, v in other.state_dict().items()}
    message, last = resume_with(tmp_path / "other", {"state_dict": state})
    assert message.startswith(f"resume: {last}: does not fit model 'efficientdet_dm3'")
    assert "shape mismatches" in message or "missing keys" in message
    assert torch.load(last, weights_only=True)["state_dict"].keys() == state.keys()  # untouched
