"""SM-NAS channel plans of a searched (MAE-NAS) backbone: ``"16 1-2-211-1-2"``.

A plan is the width of the stem and first stage (SM-NAS: the initial width, e.g. 64 of
{48, 56, 64, 72}), then one group of digits per stage, separated by ``-``: one digit per residual
unit of the stage, ``2`` for the unit that doubles the width, ``1`` for one that keeps it. A
searched block holds one width for all its units, so only a stage's first unit may double.
Applied to a structure, a plan sets every width and depth and keeps each stage's block class,
kernel and stride; bottlenecks keep their share of the stage's width.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from .space import STEM, Block, Structure

PLAN = re.compile(r"^(\d+) ([12]+(?:-[12]+)*)$")
BOTTLENECK_MULTIPLE = 4  # bottleneck widths of a planned structure are multiples of this


@dataclass(frozen=True)
class ChannelPlan:
    """The initial width and, per stage, its depth and whether its first unit doubles."""

    width: int
    depths: tuple[int, ...]
    doubles: tuple[bool, ...]

    def __str__(self) -> str:
        stages = "-".join(("2" if double else "1") + "1" * (depth - 1)
                          for depth, double in zip(self.depths, self.doubles))
        return f"{self.width} {stages}"

    def widths(self) -> list[int]:
        """The output width of each stage."""
        found, width = [], self.width
        for double in self.doubles:
            width *= 2 if double else 1
            found.append(width)
        return found


def parse_plan(text: str, key: str = "channel_plan") -> ChannelPlan:
    """Read ``"64 1-21-21-12"``-style text; an error names ``key`` and the expected form."""
    match = PLAN.match(str(text).strip())
    if not match:
        raise ValueError(f"{key}: {text!r} is not a channel plan such as '16 1-2-211-1-2' (the "
                         "initial width, then per stage one digit per unit: 2 doubles, 1 keeps)")
    width = int(match.group(1))
    stages = match.group(2).split("-")
    if width < 1 or any("2" in stage[1:] for stage in stages):
        raise ValueError(f"{key}: {text!r}: the width must be >= 1 and only a stage's first unit "
                         "may double (a searched block has one width)")
    return ChannelPlan(width, tuple(len(s) for s in stages), tuple(s[0] == "2" for s in stages))


def plan_of(structure: Structure) -> ChannelPlan:
    """The plan nearest to ``structure``: its first stage's width, its depths, and a doubling
    wherever a stage is at least 1.5x wider than the one before."""
    stages = structure[1:]
    doubles = tuple(i > 0 and b.out_ch >= 1.5 * stages[i - 1].out_ch for i, b in enumerate(stages))
    return ChannelPlan(stages[0].out_ch, tuple(b.depth for b in stages), doubles)


def _bottleneck(block: Block, width: int) -> int:
    share = block.bottleneck / block.out_ch
    value = int(round(width * share / BOTTLENECK_MULTIPLE)) * BOTTLENECK_MULTIPLE
    return min(width, max(BOTTLENECK_MULTIPLE, value))


def apply_plan(structure: Structure, plan: ChannelPlan) -> Structure:
    """``structure`` with the widths and depths of ``plan`` (stem and first stage at the
    initial width); an error says when the numbers of stages differ."""
    stages = structure[1:]
    if len(plan.depths) != len(stages):
        raise ValueError(f"channel_plan '{plan}' has {len(plan.depths)} stages, the structure "
                         f"{len(stages)}")
    stem = structure[0]
    if stem.kind != STEM:
        raise ValueError("apply_plan: the structure does not start with a stem")
    blocks = [replace(stem, out_ch=plan.width)]
    for block, width, depth in zip(stages, plan.widths(), plan.depths):
        blocks.append(replace(block, in_ch=blocks[-1].out_ch, out_ch=width, depth=depth,
                              bottleneck=_bottleneck(block, width)))
    return tuple(blocks)


def random_plan(stages: int, widths: list[int], max_depth: int, rng: random.Random,
                depths: tuple[int, ...] | None = None) -> ChannelPlan:
    """A random plan: an initial width of ``widths``, each stage doubling with probability
    one half, depths as given (else uniform in ``1..max_depth``)."""
    width = rng.choice(widths)
    doubles = tuple(rng.random() < 0.5 for _ in range(stages))
    if depths is None:
        depths = tuple(rng.randint(1, max_depth) for _ in range(stages))
    return ChannelPlan(width, tuple(min(max_depth, d) for d in depths), doubles)


def mutate_plan(plan: ChannelPlan, widths: list[int], max_depth: int,
                rng: random.Random) -> ChannelPlan:
    """One change: another initial width, one stage's doubling switched, or one stage one
    unit deeper or shallower (within ``1..max_depth``)."""
    what = rng.choice(("width", "double", "depth"))
    i = rng.randrange(len(plan.depths))
    if what == "width":
        return replace(plan, width=rng.choice(widths))
    if what == "double":
        doubles = list(plan.doubles)
        doubles[i] = not doubles[i]
        return replace(plan, doubles=tuple(doubles))
    depths = list(plan.depths)
    depths[i] = min(max_depth, max(1, depths[i] + rng.choice((-1, 1))))
    return replace(plan, depths=tuple(depths))
