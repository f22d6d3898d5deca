"""Does a score rank architectures like their trained accuracy? Spearman and Kendall rank
correlations (torchmetrics) with percentile-bootstrap confidence intervals over architectures.

The bootstrap draws the architectures with replacement ``resamples`` times (seeded) and takes the
correlation of each draw; draws in which either side is constant (no ranking to compare) are
left out. With a dozen architectures the intervals are wide: that is the honest answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef


def _correlations(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spearman and Kendall (tau-b) of each column pair of ``x`` and ``y`` (N x D)."""
    if x.shape[1] == 1:  # torchmetrics reads a single column as one flat series
        x, y = x[:, 0], y[:, 0]
    return (spearman_corrcoef(x, y).reshape(-1),
            kendall_rank_corrcoef(x, y, variant="b").reshape(-1))


def rank_agreement(score: Sequence[float], accuracy: Sequence[float], resamples: int = 2000,
                   level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Spearman and Kendall tau-b of ``score`` against ``accuracy`` (one value per architecture),
    each with a ``level`` percentile-bootstrap interval and Kendall's two-sided p-value.

    Returns ``n``, ``spearman``, ``spearman_ci`` ([low, high]), ``kendall``, ``kendall_ci``,
    ``kendall_p`` and ``resamples`` (the draws that counted); the values are None when either
    side is constant. Raises ``ValueError`` for fewer than 3 pairs, unequal lengths or a level
    outside (0, 1).
    """
    x = torch.as_tensor(score, dtype=torch.float64)
    y = torch.as_tensor(accuracy, dtype=torch.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 3:
        raise ValueError(f"rank_agreement: need two equally long series of at least 3 values, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"rank_agreement: level {level} is not in (0, 1)")
    if not (x.std() > 0 and y.std() > 0):  # one side does not rank anything
        return {"n": len(x), "spearman": None, "spearman_ci": None, "kendall": None,
                "kendall_ci": None, "kendall_p": None, "resamples": 0}
    spearman, kendall = _correlations(x[:, None], y[:, None])
    _, p_value = kendall_rank_corrcoef(x, y, variant="b", t_test=True)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(x), (len(x), resamples), generator=generator)
    xs, ys = x[draws], y[draws]
    varied = (xs.std(dim=0) > 0) & (ys.std(dim=0) > 0)
    boot_s, boot_k = _correlations(xs[:, varied], ys[:, varied])
    tail = (1.0 - level) / 2
    quantiles = torch.tensor([tail, 1.0 - tail], dtype=torch.float64)

    def interval(values: torch.Tensor) -> list[float]:
        return [round(float(v), 3) for v in torch.quantile(values.double(), quantiles)]

    return {"n": len(x), "spearman": round(float(spearman), 3), "spearman_ci": interval(boot_s),
            "kendall": round(float(kendall), 3), "kendall_ci": interval(boot_k),
            "kendall_p": round(float(p_value), 4), "resamples": int(varied.sum())}
