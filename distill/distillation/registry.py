"""Name -> class registries for the distillation extension points (terms and losses).

A new term kind or loss is one file that defines a class and registers it::

    from distill.distillation.registry import FEATURE_LOSSES

    @FEATURE_LOSSES.register("my_loss")
    class MyLoss(nn.Module): ...

and one import line (in ``distill/distillation/__init__.py`` for the built-ins, or anywhere in
your own code before the recipe is loaded); no core module changes.
"""

from __future__ import annotations

from distill.registry import Registry

FEATURE_LOSSES = Registry("feature loss")  # per-level nn.Module(channels, **options)
CLS_KD_LOSSES = Registry("class-score distillation loss")  # fn(student, teacher, tau, ...)
BOX_KD_LOSSES = Registry("box distillation loss")  # fn(student boxes, teacher boxes, weights)
TERMS = Registry("distillation term kind")  # DistillTerm subclasses with a Config dataclass
