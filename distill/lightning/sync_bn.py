"""Synchronised BatchNorm under DDP that keeps timm's norm+act layers and also runs on CPU.

``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (Lightning's ``sync_batchnorm=True``) turns
timm's ``BatchNormAct2d`` into a plain ``SyncBatchNorm``, silently dropping its activation, and
DDP refuses ``SyncBatchNorm`` on CPU. ``GlobalBatchNorm`` instead switches the class of each
``BatchNorm2d`` / ``BatchNormAct2d`` in place (same attributes, same ``state_dict`` keys): in
training, under an initialised process group of more than one process, the batch statistics
are those of the global batch (two differentiable all-reduces: sum, then centred squares), so
2 processes x batch B normalise like 1 process x batch 2B. Otherwise the layer is unchanged.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from pytorch_lightning.plugins.layer_sync import LayerSync
from timm.layers import BatchNormAct2d
from torch import Tensor, nn


class _AllReduce(torch.autograd.Function):
    """Sum over processes; the gradient is summed over processes too."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over the default process group."""
    return _AllReduce.apply(tensor)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """Batch norm of ``x`` ([N, C, H, W]) with statistics over every process's batch, computed
    in float32 (the output takes the input's dtype, as under autocast)."""
    dtype, x = x.dtype, x.float()
    channels, dims = x.shape[1], [0, 2, 3]
    count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
    stats = all_reduce(torch.cat([x.sum(dims), count]))
    n = stats[-1]
    mean = stats[:-1] / n
    centred = x - mean.view(1, -1, 1, 1)
    var = all_reduce((centred * centred).sum(dims)) / n
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
            bn.running_mean.lerp_(mean.detach(), float(factor))
            unbiased = var.detach() * n / torch.clamp(n - 1, min=1)
            bn.running_var.lerp_(unbiased, float(factor))
    out = centred * torch.rsqrt(var + bn.eps).view(1, -1, 1, 1)
    if bn.affine:
        out = out * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return out.to(dtype)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` with global-batch statistics in DDP training."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _distributed():
            return global_batch_norm(self, x)
        return super().forward(x)


class GlobalBatchNormAct2d(BatchNormAct2d):
    """timm's ``BatchNormAct2d`` (norm, drop, act) with global-batch statistics in DDP training."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and _distributed():
            return self.act(self.drop(global_batch_norm(self, x)))
        return super().forward(x)


_SYNCED = {BatchNormAct2d: GlobalBatchNormAct2d, nn.BatchNorm2d: GlobalBatchNorm2d}
_PLAIN = {synced: plain for plain, synced in _SYNCED.items()}


def convert_global_batchnorm(model: nn.Module) -> nn.Module:
    """Switch every ``BatchNorm2d`` / ``BatchNormAct2d`` of ``model`` to its global variant."""
    for module in model.modules():
        if type(module) in _SYNCED:
            module.__class__ = _SYNCED[type(module)]
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) not in _PLAIN:
            warnings.warn(f"sync_batchnorm: {type(module).__name__} has no synchronised variant "
                          "and keeps per-process statistics", stacklevel=2)
    return model


def revert_global_batchnorm(model: nn.Module) -> nn.Module:
    """Undo ``convert_global_batchnorm``."""
    for module in model.modules():
        if type(module) in _PLAIN:
            module.__class__ = _PLAIN[type(module)]
    return model


class GlobalSyncBatchNorm(LayerSync):
    """Lightning plugin: ``GlobalBatchNorm`` layers while fitting under DDP."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_global_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_global_batchnorm(model)
