"""Each extension point takes one new file and one registration, no core file edited.

Every test writes its plug-in as a module in a temporary folder and imports it (or, for a model
family, installs it as a throwaway distribution with a ``distill.models`` entry point), then
uses it through the public API only.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from distill.config import DistillConfig
from distill.distillation import FEATURE_LOSSES, TERMS
from distill.distillation.terms import BuildContext, TermInputs, resolve_terms
from distill.models import build_model, list_models, model_description
from distill.models.registry import MODELS
from distill.registry import Registry


@pytest.fixture
def clean_registries(monkeypatch):
    """Registries and module cache as they were, whatever a test registers (the installed
    plug-ins loaded first: their modules register only once, when first imported)."""
    for registry in (MODELS, FEATURE_LOSSES, TERMS):
        registry.load_plugins()
        for attr in ("_entries", "_descriptions", "_loaded_plugins"):
            monkeypatch.setattr(registry, attr, type(getattr(registry, attr))(
                getattr(registry, attr)))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("toy_"):
            del sys.modules[name]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _import_file(monkeypatch, folder: Path, name: str):
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    return importlib.import_module(name)


FAMILY = '''
    """A user's detector family: RetinaNet-style heads on the framework's FPN."""
    from dataclasses import dataclass

    from distill.models.dense import DenseDetectorConfig, assemble, timm_backbone
    from distill.models.fpn import FPN
    from distill.models.registry import register_preset


    @dataclass
    class ToyConfig(DenseDetectorConfig):
        width: int = 16


    def build_toy(cfg, num_classes, pretrained=False):
        backbone = timm_backbone(cfg, pretrained, cfg.strides)
        neck = FPN(backbone.channels, cfg.width, num_extra=0)
        return assemble(cfg, backbone, neck, neck.out_channels, num_classes, depth=1)


    register_preset("toy_family_det", build_toy,
                    ToyConfig("toy_family_det", image_size=64, backbone="resnet18"),
                    "toy family from a plug-in distribution")
'''


def test_model_family_from_an_installed_distribution(tmp_path, monkeypatch, clean_registries):
    site = tmp_path / "site"
    _write(site / "toy_family" / "__init__.py", FAMILY)
    dist = site / "toy_family-0.1.dist-info"
    _write(dist / "METADATA", "Metadata-Version: 2.1\nName: toy-family\nVersion: 0.1\n")
    _write(dist / "entry_points.txt", "[distill.models]\ntoy = toy_family\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert "toy_family_det" not in MODELS._entries  # nothing imported it
    assert "toy_family_det" in list_models()  # found through the entry point
    assert model_description("toy_family_det") == "toy family from a plug-in distribution"
    model = build_model("toy_family_det", num_classes=2, image_size=64).eval()
    out = model(torch.rand(1, 3, 64, 64))
    assert out.cls_logits.shape[-1] == 2
    assert [f.shape[-1] for f in out.features] == [8, 4, 2]  # P3..P5 of a 64 px input


def test_broken_plugin_is_named(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _write(site / "toy_broken.py", "raise RuntimeError('boom')\n")
    _write(site / "toy_broken-0.1.dist-info" / "METADATA",
           "Metadata-Version: 2.1\nName: toy-broken\nVersion: 0.1\n")
    _write(site / "toy_broken-0.1.dist-info" / "entry_points.txt",
           "[distill.test_group]\nbroken = toy_broken\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    with pytest.raises(ImportError, match="distill.test_group plug-in 'broken'.*boom"):
        Registry("thing", entry_point_group="distill.test_group").names()


def test_student_preset_in_one_file(tmp_path, monkeypatch, clean_registries):
    _write(tmp_path / "toy_preset.py", '''
        from distill.models.efficientdet import build_efficientdet, efficientdet_config
        from distill.models.registry import register_preset

        register_preset("toy_dm3_wide", build_efficientdet,
                        efficientdet_config(-3, "toy_dm3_wide").replace(fpn_channels=40))
    ''')
    _import_file(monkeypatch, tmp_path, "toy_preset")
    wide = build_model("toy_dm3_wide", num_classes=3)
    base = build_model("efficientdet_dm3", num_classes=3)
    assert wide.neck_channels == [40] * 5 and base.neck_channels != wide.neck_channels
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in base.parameters())


def _pair():
    student = build_model("efficientdet_dm3", num_classes=3).eval()
    teacher = build_model("efficientdet_dm2", num_classes=3, image_size=128).eval()
    images = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}
               for _ in range(2)]
    with torch.no_grad():
        t_out = teacher(images)
    inputs = TermInputs(student(images), t_out, targets, (128, 128))
    return BuildContext(student, teacher, 128, 128), inputs


def test_feature_loss_in_one_file(tmp_path, monkeypatch, clean_registries):
    _write(tmp_path / "toy_l1.py", '''
        from torch import nn
        from distill.distillation.registry import FEATURE_LOSSES

        @FEATURE_LOSSES.register("toy_l1")
        class ToyL1(nn.Module):
            def __init__(self, channels, scale=1.0):
                super().__init__()
                self.scale = scale

            def forward(self, student, teacher, boxes=None):
                return self.scale * (student - teacher).abs().mean()
    ''')
    _import_file(monkeypatch, tmp_path, "toy_l1")
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "feature", "loss": "toy_l1",
                                                 "options": {"scale": 2.0}}]))
    ctx, inputs = _pair()
    term = TERMS.get("feature")(cfg, ctx)
    out = term(inputs)
    assert torch.isfinite(out["total"]) and out["total"] > 0
    out["total"].backward()
    align = next(term.parameters())
    assert align.grad is not None and align.grad.abs().sum() > 0


def test_term_kind_in_one_file(tmp_path, monkeypatch, clean_registries):
    _write(tmp_path / "toy_term.py", '''
        from dataclasses import dataclass

        from distill.distillation.registry import TERMS
        from distill.distillation.terms.base import DistillTerm, TermConfig


        @dataclass
        class CountConfig(TermConfig):
            kind: str = "toy_logit_l2"
            scale: float = 1.0


        @TERMS.register("toy_logit_l2")
        class LogitL2(DistillTerm):
            """Squared difference of the two models' class logits."""

            Config = CountConfig

            def forward(self, inputs):
                diff = inputs.student.cls_logits - inputs.teacher.cls_logits
                return {"total": self.cfg.scale * diff.pow(2).mean()}
    ''')
    _import_file(monkeypatch, tmp_path, "toy_term")
    (cfg,) = resolve_terms(DistillConfig(terms=[{"kind": "toy_logit_l2", "scale": 3.0}]))
    assert type(cfg).__name__ == "CountConfig" and cfg.scale == 3.0
    ctx, inputs = _pair()
    value = TERMS.get("toy_logit_l2")(cfg, ctx)(inputs)["total"]
    expected = 3.0 * (inputs.student.cls_logits - inputs.teacher.cls_logits).pow(2).mean()
    assert torch.allclose(value, expected)


def test_a_registry_of_the_packages_own_plugins_refuses_to_run_empty():
    registry = Registry("thing", entry_point_group="distill.no_such_group", installed_by="pkg")
    with pytest.raises(ImportError, match="no distill.no_such_group entry points.*install it"):
        registry.names()
    assert Registry("thing", entry_point_group="distill.no_such_group").names() == []
