"""SM-NAS modular level: around one front member, the backbone's channel plan and the widths of
neck and head.

SM-NAS picks the initial width from {48, 56, 64, 72}, where to double it, and neck / head widths
from {128, 256, 512}, for ResNet-sized detectors. The students here are far smaller, so the
defaults are those sets scaled to the member: initial widths 48/64 .. 72/64 of its first stage's
width (even numbers), neck and head widths 1/2, 1 and 2 times its own (multiples of 8). A
recipe's ``search.modular`` lists replace them. Only searched (MAE-NAS) backbones have a plan;
a timm backbone keeps its channels and the level searches the widths alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from .channel_plan import mutate_plan, parse_plan, plan_of, random_plan
from .presets import is_structure, resolve_structure
from .space import load_structure
from .structural import Candidate, canonical

SMNAS_INITIAL_WIDTHS = (48, 56, 64, 72)  # SM-NAS, for stage widths starting at 64
SMNAS_WIDTH_RATIOS = (0.5, 1.0, 2.0)  # {128, 256, 512} around 256


def _scaled(base: int, ratios: list[float], multiple: int) -> list[int]:
    return sorted({max(multiple, int(round(base * r / multiple)) * multiple) for r in ratios})


def default_initial_widths(first_stage: int) -> list[int]:
    """SM-NAS's initial widths scaled to a first stage ``first_stage`` wide (even numbers)."""
    return _scaled(first_stage, [w / 64 for w in SMNAS_INITIAL_WIDTHS], 2)


def default_widths(width: int) -> list[int]:
    """SM-NAS's {128, 256, 512} scaled around ``width`` (multiples of 8)."""
    return _scaled(width, list(SMNAS_WIDTH_RATIOS), 8)


@dataclass
class ModularSpace:
    """The choices around ``base``: plans (``initial_widths``, depths up to ``max_depth``) when
    ``stages`` is set (a searched backbone of that many stages), neck and head widths."""

    base: Candidate
    stages: int | None
    base_depths: tuple[int, ...] | None
    initial_widths: list[int]
    neck_widths: list[int]
    head_widths: list[int]
    max_depth: int

    def genes(self) -> list[str]:
        """The genes this level changes."""
        found = ["channel_plan"] if self.stages else []
        found.append("neck_width")
        if self.base.neck != "bifpn":  # bifpn heads follow the neck's width
            found.append("head_width")
        return found

    def problems(self, candidate: Candidate) -> list[str]:
        """What in ``candidate`` lies outside this level's choices (or is not ``base``'s)."""
        found = []
        fixed = replace(candidate, neck_width=self.base.neck_width,
                        head_width=self.base.head_width, channel_plan=self.base.channel_plan)
        if fixed != self.base:
            found.append("a structural gene differs from the front member's")
        if candidate.neck_width not in self.neck_widths:
            found.append(f"neck_width {candidate.neck_width} not in {self.neck_widths}")
        if "head_width" in self.genes() and candidate.head_width not in self.head_widths:
            found.append(f"head_width {candidate.head_width} not in {self.head_widths}")
        if candidate.channel_plan is not None and candidate.channel_plan != self.base.channel_plan:
            plan = parse_plan(candidate.channel_plan)
            if plan.width not in self.initial_widths or len(plan.depths) != self.stages or \
                    not all(1 <= d <= self.max_depth for d in plan.depths):
                found.append(f"channel_plan {candidate.channel_plan!r} outside the plans")
        return found

    def sample(self, rng: random.Random) -> Candidate:
        """Random widths and (searched backbones) a random plan with the member's depths."""
        plan = None
        if self.stages:
            plan = str(random_plan(self.stages, self.initial_widths, self.max_depth, rng,
                                   self.base_depths))
        return canonical(replace(self.base, channel_plan=plan,
                                 neck_width=rng.choice(self.neck_widths),
                                 head_width=rng.choice(self.head_widths)))

    def mutate(self, candidate: Candidate, rng: random.Random, tries: int = 100) -> Candidate:
        """One gene of ``genes()`` changed."""
        for _ in range(tries):
            gene = rng.choice(self.genes())
            if gene == "channel_plan":
                plan = parse_plan(candidate.channel_plan) if candidate.channel_plan else \
                    random_plan(self.stages or 0, self.initial_widths, self.max_depth, rng,
                                self.base_depths)
                child = replace(candidate, channel_plan=str(
                    mutate_plan(plan, self.initial_widths, self.max_depth, rng)))
            else:
                values = self.neck_widths if gene == "neck_width" else self.head_widths
                child = replace(candidate, **{gene: rng.choice(values)})
            child = canonical(child)
            if child != candidate:
                return child
        raise RuntimeError(f"no modular mutation of {candidate.key} in {tries} tries")

    def crossover(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        """Each gene (the plan as a whole) from ``a`` or ``b``."""
        genes = {g: getattr(a if rng.random() < 0.5 else b, g) for g in self.genes()}
        return canonical(replace(a, **genes))


def modular_space(base: Candidate, cfg: Any) -> ModularSpace:
    """The ``ModularSpace`` of ``search.modular`` (``cfg``) around ``base``."""
    stages = depths = None
    first = None
    if is_structure(base.backbone):
        structure = load_structure(resolve_structure(base.backbone))
        plan = parse_plan(base.channel_plan) if base.channel_plan else plan_of(structure)
        stages, depths, first = len(plan.depths), plan.depths, plan.width
    return ModularSpace(
        base=base, stages=stages, base_depths=depths,
        initial_widths=list(cfg.initial_widths or default_initial_widths(first or 64)),
        neck_widths=list(cfg.neck_widths or default_widths(base.neck_width)),
        head_widths=list(cfg.head_widths or default_widths(base.head_width)),
        max_depth=cfg.max_depth,
    )
