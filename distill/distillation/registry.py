"""Name -> class registries for the distillation extension points (terms and losses).

A new term kind or loss is one file that defines a class and registers it::

    from distill.distillation.registry import FEATURE_LOSSES

    @FEATURE_LOSSES.register("my_loss")
    class MyLoss(nn.Module): ...

and one registration of that file: an import line (``distill/distillation/__init__.py`` for the
built-ins, or your own code before the recipe is loaded), or, from your own package, an entry
point in its ``pyproject.toml`` (``[project.entry-points."distill.losses"]`` for losses,
``"distill.terms"`` for term kinds) that the registry imports when a name is looked up.
"""

from __future__ import annotations

from distill.registry import Registry

# per-level nn.Module(channels, **options)
FEATURE_LOSSES = Registry("feature loss", entry_point_group="distill.losses")
# fn(student, teacher, tau, ...)
CLS_KD_LOSSES = Registry("class-score distillation loss", entry_point_group="distill.losses")
# fn(student boxes, teacher boxes, weights)
BOX_KD_LOSSES = Registry("box distillation loss", entry_point_group="distill.losses")
# DistillTerm subclasses with a Config dataclass
TERMS = Registry("distillation term kind", entry_point_group="distill.terms")
