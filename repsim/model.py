"""The conv4 network of the MAML setup, and the body/head split every algorithm relies on.

The meta-learning code never looks inside conv4: it only needs a module whose parameter
names say which belong to the head (``head.*``) and which to the body (everything else).
Any user model that follows that naming convention works with every algorithm and analysis.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

HEAD_PREFIX = "head."


class BatchStatNorm(nn.Module):
    """BatchNorm that always normalises with the current batch's statistics (no running ones).

    y = weight * (x - mean_batch) / sqrt(var_batch + eps) + bias, per channel.

    Written out rather than using nn.BatchNorm2d(track_running_stats=False): the same function,
    but PyTorch 2.13's vmap rule for batch_norm gives wrong second-order gradients (0.6% off a
    finite-difference check), and task-batched MAML needs them. Parameter names match
    nn.BatchNorm2d's, so state dicts from other code load unchanged.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two passes (centre, then square) are stable, and their double backward is faster
        # on the CPU than var_mean's or the fused kernel's
        centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
        return centred * (self.weight[:, None, None] * torch.rsqrt(var + self.eps)) + self.bias[:, None, None]


class ConvBlock(nn.Module):
    """3x3 conv, BatchNorm on the current batch's statistics, ReLU, optional 2x2 max-pool.

    BatchNorm keeps no running statistics: as in the paper, it normalises with the statistics
    of the batch it is given, at training and at test time alike.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn = BatchStatNorm(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class Conv4(nn.Module):
    """Four conv blocks (``conv1``..``conv4``) and a linear ``head``.

    Omniglot (Finn et al.): 64 filters, stride-2 convolutions, features averaged over the
    remaining 2x2 positions. MiniImageNet: 32 filters, 2x2 max-pooling, features flattened
    (32 x 5 x 5 = 800).
    """

    layer_names = ("conv1", "conv2", "conv3", "conv4", "head")

    def __init__(self, in_channels: int = 1, ways: int = 5, filters: int = 64,
                 image_size: int = 28, pooling: str = "stride"):
        super().__init__()
        if pooling not in ("stride", "maxpool"):
            raise ValueError(f"pooling must be 'stride' or 'maxpool', not {pooling!r}")
        stride, pool = (2, False) if pooling == "stride" else (1, True)
        channels = [in_channels, filters, filters, filters, filters]
        for i in range(4):
            self.add_module(f"conv{i + 1}", ConvBlock(channels[i], channels[i + 1], stride, pool))
        self.pooling = pooling
        size = image_size
        for _ in range(4):
            size = (size + 1) // 2 if pooling == "stride" else size // 2
        self.feature_dim = filters if pooling == "stride" else filters * size * size
        self.head = nn.Linear(self.feature_dim, ways)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The body: penultimate features, the input of the head."""
        for i in range(1, 5):
            x = getattr(self, f"conv{i}")(x)
        return x.mean(dim=(2, 3)) if self.pooling == "stride" else x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def conv4_for(dataset: str, ways: int, filters: int | None = None) -> Conv4:
    """conv4 configured as in the MAML setup for ``dataset``."""
    if dataset == "miniimagenet":
        return Conv4(3, ways, filters or 32, 84, "maxpool")
    return Conv4(1, ways, filters or 64, 28, "stride")


NORM_LAYERS = (BatchStatNorm, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_param_names(model: nn.Module) -> list[str]:
    """Names of the normalisation layers' parameters (BatchNorm weight and bias, and the like)."""
    return [f"{prefix}.{name}" if prefix else name
            for prefix, module in model.named_modules() if isinstance(module, NORM_LAYERS)
            for name, _ in module.named_parameters(recurse=False)]


def is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


def split_body_head(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the body's and the head's parameters; fails clearly if there is no head."""
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if is_head(n)]
    body = [n for n in names if not is_head(n)]
    if not head or not body:
        from repsim.errors import RepsimError
        raise RepsimError(
            f"cannot split {type(model).__name__} into body and head: repsim expects the "
            f"classifier's parameters to be named 'head.*' and at least one other parameter "
            f"(found {names[:6]}{'...' if len(names) > 6 else ''}); rename the last layer to 'head'")
    return body, head
