"""``trainer.compile``: torch.compile of the trained model's forward, same numbers and keys."""

import pytest
import torch
from test_distillation_module import tiny_recipe

from distill.config import recipe_to_dict
from distill.lightning.detection import DetectionModule, build_detector


@pytest.mark.slow
def test_compiled_forward_matches_eager_and_keeps_checkpoint_keys(tmp_path):
    cfg = recipe_to_dict(tiny_recipe(tmp_path, **{"trainer.compile": "true",
                                                  "model.image_size": "64"}))
    torch.manual_seed(0)
    module = DetectionModule(cfg, ["a", "b"]).eval()
    eager = build_detector(cfg["model"], num_classes=2).eval()
    # in place: the state dict has the plain model's keys (no ``_orig_mod.``), so checkpoints
    # load into an uncompiled model and the other way round
    assert list(module.model.state_dict()) == list(eager.state_dict())
    eager.load_state_dict(module.model.state_dict())
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        compiled_out, eager_out = module(images), eager(images)
    assert module.model._compiled_call_impl is not None  # compiled in place
    torch.testing.assert_close(compiled_out.cls_logits, eager_out.cls_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(compiled_out.box_deltas, eager_out.box_deltas, atol=1e-4, rtol=0)
    for ours, ref in zip(compiled_out.features, eager_out.features, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
