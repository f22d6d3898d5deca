"""What every distillation term shares: its config, its inputs, its weight, level pairing.

A term kind is a ``DistillTerm`` subclass with a ``Config`` dataclass (the recipe keys of the
kind), registered in ``TERMS``; ``resolve_terms`` turns a recipe's ``distill`` section into one
config per term, with the section's values as defaults, before any model is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from distill.config import DistillConfig, WeightConfig
from distill.distillation.registry import TERMS
from distill.distillation.schedules import WeightSchedule
from distill.errors import RecipeError
from distill.models.detector import DetectorOutput


@dataclass
class TermConfig:
    """Keys every term has. ``strides`` pairs the two models' levels by stride (null: all
    shared); ``weight`` is the term's weight schedule (default: the ``distill.weight``)."""

    kind: str = "feature"
    name: Optional[str] = None  # log and checkpoint name (default: the kind)
    strides: Optional[list[int]] = None
    weight: WeightConfig = field(default_factory=WeightConfig)

    # keys of the `distill` section a term takes when its own mapping does not set them
    INHERITED: ClassVar[tuple[str, ...]] = ("strides",)


@dataclass
class TermInputs:
    """One training batch as the terms see it: both models' raw outputs and the targets."""

    student: DetectorOutput  # with the taps the terms declare
    teacher: DetectorOutput  # float32, no grad
    targets: list[dict]  # per image boxes (xyxy, student input pixels) and labels
    image_shape: tuple[int, int]  # the student's input (h, w)

    def box_fractions(self) -> list[Tensor]:
        """Per image ground-truth boxes as fractions of the image (xyxy, 0..1)."""
        h, w = self.image_shape
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        return [t["boxes"].float().reshape(-1, 4) / scale.to(t["boxes"].device)
                for t in self.targets]


@dataclass
class BuildContext:
    """What a term is built against: the two detectors and their input sizes."""

    student: nn.Module
    teacher: nn.Module
    student_size: int
    teacher_size: int


def paired_levels(
    student: nn.Module, teacher: nn.Module, strides: list[int] | None, key: str = "distill.strides"
) -> tuple[list[int], list[int], list[int]]:
    """Pair levels by stride: ``(strides, student level indices, teacher level indices)``.

    ``strides`` None means every stride both models have. A stride one model lacks is an error.
    """
    s_strides, t_strides = list(student.strides), list(teacher.strides)
    wanted = [s for s in s_strides if s in t_strides] if strides is None else list(strides)
    for stride in wanted:
        for who, have in (("student", s_strides), ("teacher", t_strides)):
            if stride not in have:
                raise RecipeError(
                    f"{key}: the {who} has no level at stride {stride} (its strides: {have})"
                )
    if not wanted:
        raise RecipeError(f"{key}: no shared strides ({s_strides} vs {t_strides})")
    return wanted, [s_strides.index(s) for s in wanted], [t_strides.index(s) for s in wanted]


def _mean_over_ranks(*values: Tensor) -> tuple[Tensor, ...]:
    """``values`` averaged over the DDP processes (as they are without DDP): every process
    then keeps the same running averages and so applies the same weight."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    stacked = torch.stack(values)
    dist.all_reduce(stacked)
    return tuple(stacked / dist.get_world_size())


class TermWeight(nn.Module):
    """A term's weight at each optimizer step: a ``WeightSchedule``, or ``auto`` balancing.

    ``auto``: the cosine from ``start`` to ``end`` times ``target * det_avg / term_avg``, the
    running averages (momentum 0.98, bias-corrected) of the detection loss and of the term's
    value, so the weighted term is about ``target`` x the detection loss whatever the data and
    the loss's own scale. The averages are buffers: saved, resumed, synced under DDP.
    """

    MOMENTUM = 0.98

    def __init__(self, cfg: WeightConfig) -> None:
        super().__init__()
        self.auto = cfg.schedule == "auto"
        self.schedule = WeightSchedule(
            kind="cosine" if self.auto else cfg.schedule, start=cfg.start, end=cfg.end,
            stop_at=cfg.stop_at, milestones=tuple(cfg.milestones), gamma=cfg.gamma,
        )
        if not cfg.target > 0:
            raise ValueError(f"weight.target: must be > 0, got {cfg.target}")
        self.target = float(cfg.target)
        self.register_buffer("det_avg", torch.zeros(()))
        self.register_buffer("term_avg", torch.zeros(()))
        self.register_buffer("updates", torch.zeros(()))

    def scheduled(self, step: int, total: int) -> float:
        """The schedule's value at ``step`` of ``total`` (0 means: skip the term)."""
        return self.schedule(step, total)

    def forward(self, scheduled: float, value: Tensor, det: Tensor) -> Tensor | float:
        """The weight to multiply ``value`` by (updates the running averages in training)."""
        if not self.auto:
            return scheduled
        if self.training:
            with torch.no_grad():
                det, value = _mean_over_ranks(det.detach().float(), value.detach().float())
                self.updates += 1
                # bias-corrected EMA: the first update takes the value itself
                m = torch.clamp(1.0 - 1.0 / self.updates, max=self.MOMENTUM)
                self.det_avg.lerp_(det, 1.0 - m)
                self.term_avg.lerp_(value, 1.0 - m)
        return scheduled * self.target * self.det_avg / self.term_avg.clamp(min=1e-12)

    def extra_repr(self) -> str:
        kind = f"auto, target={self.target}" if self.auto else self.schedule.kind
        return f"{kind}, start={self.schedule.start}, end={self.schedule.end}"


class DistillTerm(nn.Module):
    """Base of the term kinds: ``forward(inputs)`` returns ``{"total": value, part: ...}``."""

    Config: ClassVar[type] = TermConfig
    # the student's intermediate outputs the term reads (``Detector.TAPS`` names), e.g. CrossKD's
    # head tower outputs; the student is run with them whenever the term is active
    taps: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TermConfig, ctx: BuildContext) -> None:
        super().__init__()
        offered = getattr(ctx.student, "TAPS", frozenset())
        missing = sorted(set(self.taps) - offered)
        if missing:
            raise RecipeError(
                f"a {cfg.kind} term reads the student's {missing}, which a "
                f"{type(ctx.student).__name__} does not offer (its taps: "
                f"{sorted(offered) or 'none'}); use a feature or prediction term")
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self.weight = TermWeight(cfg.weight)

    def forward(self, inputs: TermInputs) -> dict[str, Tensor]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A summary for `distill check`: kind, settings and trainable parameters."""
        settings = {k: v for k, v in dataclasses.asdict(self.cfg).items()
                    if k not in ("kind", "name", "weight")}
        return {"name": self.name, "kind": self.cfg.kind, "settings": settings,
                "weight": self.weight.extra_repr(),
                "params": sum(p.numel() for p in self.parameters())}


def _term_config(spec: dict[str, Any], section: dict[str, Any], where: str) -> TermConfig:
    """One term's typed config: ``spec`` over the section's inherited values and weight."""
    if not isinstance(spec, dict):
        raise RecipeError(f"{where}: a term is a mapping with a 'kind', got {spec!r}")
    kind = spec.get("kind", "feature")
    try:
        cls = TERMS.get(kind).Config
    except ValueError as err:
        raise RecipeError(f"{where}.kind: {err}") from err
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown} for a {kind} term; valid: "
                          f"{', '.join(valid)}")
    values = {key: section[key] for key in cls.INHERITED if key not in spec}
    weight = OmegaConf.merge(section["weight"], spec.get("weight") or {})
    values.update({**spec, "weight": OmegaConf.to_container(weight)})
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except OmegaConfBaseException as err:
        raise RecipeError(f"{where}: bad value for '{getattr(err, 'key', '?')}': {err.msg}"
                          ) from err


def resolve_terms(cfg: DistillConfig) -> list[TermConfig]:
    """The recipe's terms as typed configs (one feature term from the section's own keys when
    ``terms`` is empty); errors name ``distill.terms[i]`` and the key."""
    section = OmegaConf.to_container(OmegaConf.structured(cfg))
    specs = cfg.terms if cfg.terms else [{"kind": "feature"}]
    terms = [_term_config(dict(spec) if isinstance(spec, dict) else spec, section,
                          f"distill.terms[{i}]") for i, spec in enumerate(specs)]
    names = [t.name or t.kind for t in terms]
    for name in names:
        if names.count(name) > 1:
            raise RecipeError(f"distill.terms: two terms are named '{name}'; give each its own "
                              "'name'")
    for i, term in enumerate(terms):
        schedule = term.weight.schedule
        if schedule not in ("cosine", "linear", "constant", "step", "auto"):
            raise RecipeError(f"distill.terms[{i}].weight.schedule: '{schedule}', expected one "
                              "of cosine, linear, constant, step, auto")
    return terms


def build_terms(configs: list[TermConfig], ctx: BuildContext) -> nn.ModuleDict:
    """The terms of ``configs`` (``resolve_terms``'s) built against ``ctx``, keyed by name
    (insertion order kept)."""
    terms = nn.ModuleDict()
    for i, term_cfg in enumerate(configs):
        try:
            term = TERMS.get(term_cfg.kind)(term_cfg, ctx)
        except (ValueError, TypeError) as err:
            if isinstance(err, RecipeError):
                raise
            raise RecipeError(f"distill.terms[{i}] ({term_cfg.kind}): {err}") from err
        terms[term.name] = term
    return terms
