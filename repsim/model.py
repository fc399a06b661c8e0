"""The conv4 network of the MAML setup, and the body/head split every algorithm relies on.

The meta-learning code never looks inside conv4: it only needs a module whose parameter
names say which belong to the head (``head.*``) and which to the body (everything else).
Any user model that follows that naming convention works with every algorithm and analysis.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from repsim.names import HEAD

if TYPE_CHECKING:
    from repsim.config import Config

HEAD_PREFIX = HEAD + "."


class BatchStatNorm(nn.Module):
    """BatchNorm that always normalises with the current batch's statistics (no running ones).

    y = weight * (x - mean_batch) / sqrt(var_batch + eps) + bias, per channel;
    without ``scale`` there is no weight (y = (x - mean) / sqrt(var + eps) + bias), as in
    ``tf.contrib.layers.batch_norm``'s defaults, which Finn et al.'s MAML used (eps 1e-3).

    Written out rather than using nn.BatchNorm2d(track_running_stats=False): the same function,
    but PyTorch 2.13's vmap rule for batch_norm gives wrong second-order gradients (0.6% off a
    finite-difference check), and task-batched MAML needs them. Parameter names match
    nn.BatchNorm2d's, so state dicts from other code load unchanged.
    """

    def __init__(self, channels: int, eps: float = 1e-5, scale: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two passes (centre, then square) are stable, and their double backward is faster
        # on the CPU than var_mean's or the fused kernel's
        centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
        factor = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            factor = self.weight[:, None, None] * factor
        return centred * factor + self.bias[:, None, None]


def same_padding(size: int, stride: int, kernel: int = 3) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one dimension: the output has ceil(size / stride)
    positions, and where the padding is odd its extra row or column goes at the end.

    For 3x3 stride-2 convolutions on even sizes that is (0, 1): the kernel starts on the
    first pixel, where symmetric padding (1, 1) starts it one pixel before.
    """
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBlock(nn.Module):
    """3x3 conv, BatchNorm on the current batch's statistics, ReLU, optional 2x2 max-pool.

    BatchNorm keeps no running statistics: as in the paper, it normalises with the statistics
    of the batch it is given, at training and at test time alike. ``padding`` is
    ``symmetric`` (one pixel on every side, PyTorch's usual ``padding=1``), ``same``
    (TensorFlow's, :func:`same_padding`; they differ only for stride-2 convolutions) or
    ``valid`` (none: each 3x3 convolution loses a border pixel, as in higher's MAML example).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: bool, *,
                 padding: str = "symmetric", bn_eps: float = 1e-5, bn_scale: bool = True):
        super().__init__()
        if padding not in ("symmetric", "same", "valid"):
            raise ValueError(f"padding must be 'symmetric', 'same' or 'valid', not {padding!r}")
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride,
                              padding=1 if padding == "symmetric" else 0)
        self.bn = BatchStatNorm(out_channels, bn_eps, bn_scale)
        self.pool = pool
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            stride = self.conv.stride[0]
            top, bottom = same_padding(x.shape[-2], stride)
            left, right = same_padding(x.shape[-1], stride)
            x = F.pad(x, (left, right, top, bottom))
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class Conv4(nn.Module):
    """Four conv blocks (``conv1``..``conv4``; ``blocks`` sets how many) and a linear ``head``.

    Omniglot (Finn et al.): 64 filters, stride-2 convolutions, features averaged over the
    remaining 2x2 positions. MiniImageNet: 32 filters, 2x2 max-pooling, features flattened
    (32 x 5 x 5 = 800).

    ``pooling`` and ``feature_pooling`` (``mean`` or ``flatten``, by default as above) make
    the other libraries' conv4s (torchmeta's Omniglot one max-pools). The other keyword
    arguments are the conventions of repsim.config (``padding``, BatchNorm's ``bn_eps`` and
    ``bn_scale``, and the initialisations, see :func:`initialise`).
    """

    def __init__(self, in_channels: int = 1, ways: int = 5, filters: int = 64,
                 image_size: int = 28, pooling: str = "stride", *, feature_pooling: str | None = None,
                 blocks: int = 4, padding: str = "symmetric",
                 bn_eps: float = 1e-5, bn_scale: bool = True, conv_init: str = "pytorch",
                 head_init: str = "pytorch"):
        super().__init__()
        if pooling not in ("stride", "maxpool"):
            raise ValueError(f"pooling must be 'stride' or 'maxpool', not {pooling!r}")
        stride, pool = (2, False) if pooling == "stride" else (1, True)
        channels = [in_channels] + [filters] * blocks
        for i in range(blocks):
            self.add_module(f"conv{i + 1}", ConvBlock(channels[i], channels[i + 1], stride, pool,
                                                      padding=padding, bn_eps=bn_eps,
                                                      bn_scale=bn_scale))
        self.pooling = pooling
        self.feature_pooling = feature_pooling or ("mean" if pooling == "stride" else "flatten")
        if self.feature_pooling not in ("mean", "flatten"):
            raise ValueError(f"feature_pooling must be 'mean' or 'flatten', not {feature_pooling!r}")
        self.blocks = blocks
        size = image_size
        for _ in range(blocks):
            if padding == "valid":
                size = (size - 3) // stride + 1
            else:
                size = (size + stride - 1) // stride
            size = size // 2 if pool else size
        self.feature_dim = filters if self.feature_pooling == "mean" else filters * size * size
        self.head = nn.Linear(self.feature_dim, ways)
        initialise(self, conv_init, head_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The body: penultimate features, the input of the head."""
        for i in range(1, self.blocks + 1):
            x = getattr(self, f"conv{i}")(x)
        return x.mean(dim=(2, 3)) if self.feature_pooling == "mean" else x.flatten(1)

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The logits. ``start`` = k: ``x`` is conv{k}'s output and only the blocks after it run;
        ``stop`` = k: conv{k}'s output is returned. An inner loop that leaves conv1..conv{k}
        frozen computes them once (meta.adapt)."""
        for i in range(start + 1, (self.blocks if stop is None else stop) + 1):
            x = getattr(self, f"conv{i}")(x)
        if stop is not None:
            return x
        return self.head(x.mean(dim=(2, 3)) if self.feature_pooling == "mean" else x.flatten(1))

    def frozen_blocks(self, adapted) -> int:
        """How many leading blocks none of the ``adapted`` parameter names belongs to."""
        for i in range(1, self.blocks + 1):
            if any(n.startswith(f"conv{i}.") for n in adapted):
                return i - 1
        return self.blocks


INITS = {"conv": ("pytorch", "xavier_uniform"), "head": ("pytorch", "normal", "xavier_uniform")}


def draw_weights(shape: tuple[int, ...], how: str, generator: torch.Generator | None = None,
                 bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fresh weights of a layer whose weight has ``shape`` (out, in, *kernel), drawn as ``how``:

    pytorch         weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's defaults
                    for Linear and Conv2d)
    xavier_uniform  weight U(-a, a), a = sqrt(6 / (fan_in + fan_out)), bias 0 (Finn et al.'s
                    convolutions and MiniImageNet head)
    normal          weight N(0, 1), bias 0 (Finn et al.'s Omniglot head, ``tf.random_normal``)

    with fan_in = in * kernel size and fan_out = out * kernel size.
    """
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive

    def uniform(size, bound):
        return (torch.rand(size, generator=generator) * 2 - 1) * bound

    if how == "pytorch":
        weight = uniform(shape, 1 / math.sqrt(fan_in))
        return weight, uniform(shape[:1], 1 / math.sqrt(fan_in)) if bias else None
    if how == "xavier_uniform":
        weight = uniform(shape, math.sqrt(6 / (fan_in + fan_out)))
    elif how == "normal":
        weight = torch.randn(shape, generator=generator)
    else:
        raise ValueError(f"unknown initialisation {how!r}: choose pytorch, xavier_uniform or normal")
    return weight, torch.zeros(shape[0]) if bias else None


@torch.no_grad()
def initialise(model: nn.Module, conv_init: str = "pytorch", head_init: str = "pytorch") -> None:
    """Initialise the convolutions and the ``head`` as named (:func:`draw_weights`), from
    torch's global generator, so a seeded run starts from the same weights. ``pytorch``
    keeps the layers as PyTorch built them."""
    if conv_init not in INITS["conv"] or head_init not in INITS["head"]:
        raise ValueError(f"unknown initialisation conv={conv_init!r}, head={head_init!r}: "
                         f"conv is one of {INITS['conv']}, head one of {INITS['head']}")
    layers = [(m, conv_init) for m in model.modules() if isinstance(m, nn.Conv2d)]
    layers.append((model.head, head_init))
    for layer, how in layers:
        if how == "pytorch":
            continue  # as constructed
        weight, bias = draw_weights(tuple(layer.weight.shape), how, bias=layer.bias is not None)
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)


def conv4_for(dataset: str, ways: int, filters: int | None = None, pooling: str | None = None,
              **conventions) -> Conv4:
    """conv4 configured as in the MAML setup for ``dataset``, unless ``pooling`` says
    otherwise (``conventions``: Conv4's other keywords)."""
    if dataset == "miniimagenet":
        return Conv4(3, ways, filters or 32, 84, pooling or "maxpool", **conventions)
    return Conv4(1, ways, filters or 64, 28, pooling or "stride", **conventions)


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


def model_for(config: "Config", params: dict[str, torch.Tensor] | None = None,
              head_width: int | None = None) -> torch.nn.Module:
    """conv4 for the config; the head's width follows the weights when they are given
    (multiclass pretraining has one output per training class, not ``ways``)."""
    ways = head_width or config.ways
    if params is not None and HEAD_PREFIX + "weight" in params:
        ways = params[HEAD_PREFIX + "weight"].shape[0]
    model = conv4_for(config.dataset, ways, config.filters, pooling=config.pooling, blocks=config.blocks,
                     feature_pooling=config.feature_pooling, padding=config.conv_padding,
                     bn_eps=config.batchnorm_eps, bn_scale=config.batchnorm_scale,
                     conv_init=config.conv_init, head_init=config.head_init)
    if config.dataset == "omniglot" and config.image_ink == "dark":
        # repsim's Omniglot images have bright ink (1 on 0); this network learned dark ink
        # (torchmeta's ToTensor of the PNGs), so it sees every image inverted, as it did then
        model.register_forward_pre_hook(invert_ink)
    return model


def invert_ink(module, args):
    """Forward pre-hook: ``1 - x``, dark ink for bright (the other arguments unchanged)."""
    return (1 - args[0],) + tuple(args[1:])
