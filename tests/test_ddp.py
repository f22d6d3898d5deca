"""DDP distillation on CPU with 2 gloo processes against one process with the doubled batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.lightning.sync_bn import (
    GlobalBatchNormAct2d,
    convert_global_batchnorm,
    revert_global_batchnorm,
)

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
REPO = WORKER.parents[1]


def run_worker(out: Path, devices: int, batch: int) -> list[dict]:
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(WORKER), str(out), str(devices), str(batch)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(devices)]


@pytest.mark.slow
def test_two_processes_of_b_match_one_process_of_2b(tmp_path):
    rank0, rank1 = run_worker(tmp_path / "ddp", devices=2, batch=8)
    (single,) = run_worker(tmp_path / "one", devices=1, batch=16)
    assert rank0["world"] == rank1["world"] == 2 and single["world"] == 1
    assert rank0["synced_bns"] > 60 and single["synced_bns"] == 0  # student + distiller BNs

    # after three steps the DDP-wrapped align convs (and everything else) agree on both ranks
    for key, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][key]), key
    assert any(k.startswith("distiller.feature.levels.align") for k in rank0["final"])

    # one step of 2 x 8 images (SyncBatchNorm, positives counted over ranks) == 1 x 16 images
    assert rank0["step1"].keys() == single["step1"].keys()
    for key, value in single["step1"].items():
        torch.testing.assert_close(rank0["step1"][key], value, rtol=0, atol=1e-5, msg=key)
    moved = [k for k, v in single["step1"].items()
             if v.is_floating_point() and not torch.equal(v, single["final"][k])]
    assert moved  # the weights do train

    for state in (rank0, rank1):  # the teacher is outside DDP and the optimizer: untouched
        before, after = state["teacher_before"], state["teacher_after"]
        assert all(torch.equal(before[k], after[k]) for k in before)

    # validation: each rank sees its half of the images, the mAP is computed over all of them
    assert rank0["val_images"] == rank1["val_images"] == single["val_images"] // 2
    assert rank0["synced_map"] == rank1["synced_map"] == pytest.approx(0.505, abs=0.01)
    assert rank0["metrics"]["map"] == rank1["metrics"]["map"]
    assert (tmp_path / "ddp" / "run" / "metrics.json").is_file()


def test_global_batchnorm_keeps_norm_act_layers_and_reverts():
    from timm.layers import BatchNormAct2d

    model = nn.Sequential(nn.Conv2d(3, 4, 1), BatchNormAct2d(4, act_layer=nn.SiLU),
                          nn.BatchNorm2d(4, affine=False))
    x = torch.randn(2, 3, 5, 5)
    expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    convert_global_batchnorm(model)
    assert isinstance(model[1], GlobalBatchNormAct2d) and isinstance(model[1].act, nn.SiLU)
    assert model.state_dict().keys() == state.keys()
    model.load_state_dict(state)
    torch.testing.assert_close(model(x), expected)  # one process: plain batch norm
    revert_global_batchnorm(model)
    assert type(model[1]) is BatchNormAct2d and type(model[2]) is nn.BatchNorm2d


@pytest.mark.slow
def test_distill_run_on_two_processes_shares_one_folder_and_writes_one_report(tmp_path):
    from test_distillation_module import save_detector, tiny_overrides

    from distill.lightning.detection import build_detector

    torch.manual_seed(0)
    teacher = build_detector({"name": "efficientdet_dm2", "image_size": 128}, 6)
    save_detector(teacher, tmp_path / "teacher.ckpt")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "older.txt").write_text("an earlier run")
    args = [sys.executable, "-m", "distill.cli", "run", str(REPO / "recipes" / "quickstart.yaml"),
            *tiny_overrides(tmp_path), "logger=none", f"teacher.checkpoint={tmp_path}/teacher.ckpt",
            "distill.stages=[distilled]", "trainer.devices=2", "trainer.accelerator=cpu",
            "trainer.strategy=ddp"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("== stage distilled") == 2  # both processes ran the stage ...
    assert done.stdout.count("report: ") == 1  # ... one wrote the report
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["tiny", "tiny-2"]  # a fresh folder, the same for both processes
    run_dir = tmp_path / "runs" / "tiny-2"
    assert (run_dir / "report.json").is_file()
    assert (run_dir / "distilled" / "checkpoints" / "student.ckpt").is_file()
    assert (run_dir / "distilled" / "metrics.json").is_file()
