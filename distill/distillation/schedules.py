"""Per-iteration weight of the distillation loss (DAMO-YOLO's cosine decay and variants)."""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("cosine", "linear", "constant", "step")


@dataclass
class WeightSchedule:
    """Distillation weight as a function of (step, total_steps).

    - ``cosine``: ``end + (start - end) * (1 + cos(pi * t / T)) / 2`` (DAMO-YOLO).
    - ``linear``: straight line from ``start`` at 0 to ``end`` at T.
    - ``constant``: ``start``.
    - ``step``: ``start * gamma ** (milestones passed)``; a milestone m (a fraction of the run)
      counts as passed once ``t / T >= m``.

    ``stop_at`` (fraction of the run in (0, 1]): at and after it the weight is 0.0 (the
    "stop distilling for the last epochs" stage). ``t`` is clipped to [0, T].
    """

    kind: str = "cosine"
    start: float = 1.0
    end: float = 0.1
    stop_at: float | None = None
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and the allowed values when a field is invalid."""
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown schedule '{self.kind}'; allowed: {', '.join(KINDS)}")
        for field in ("start", "end", "gamma"):
            value = getattr(self, field)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"{field}: must be >= 0, got {value}")
        if self.stop_at is not None and not 0 < self.stop_at <= 1:
            raise ValueError(
                f"stop_at: must be a fraction of the run in (0, 1] or None, got {self.stop_at}"
            )
        ms = self.milestones
        if any(not 0 < m < 1 for m in ms) or any(a >= b for a, b in zip(ms, ms[1:])):
            raise ValueError(
                f"milestones: must be strictly increasing fractions in (0, 1), got {ms}"
            )

    def __call__(self, step: int, total_steps: int) -> float:
        """The weight at iteration ``step`` of ``total_steps``."""
        if total_steps <= 0:
            raise ValueError(f"total_steps: must be > 0, got {total_steps}")
        t = min(max(step, 0), total_steps)
        frac = t / total_steps
        if self.stop_at is not None and frac >= self.stop_at:
            return 0.0
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * (1 + math.cos(math.pi * frac)) / 2
        if self.kind == "linear":
            return self.start + (self.end - self.start) * frac
        if self.kind == "step":
            passed = sum(1 for m in self.milestones if frac >= m)
            return self.start * self.gamma**passed
        return float(self.start)
