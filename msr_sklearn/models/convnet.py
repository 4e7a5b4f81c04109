"""Convolutional networks for image tasks: a configurable ConvNet, the Conv-4 few-shot
backbone, and a group-convolution network for exact-symmetry oracles.

All take images ``(n, C, H, W)`` (or flat rows ``(n, C*H*W)``, reshaped to
``input_shape``) and are ordinary modules: a policy decides which weights are shared.
Their ``default_sharing`` gives the convolutions an MSR-Conv sharing with ``n_copies``
channels per field (:class:`~msr_sklearn.sharing.ConvFilterSharing`) and the dense head
the ``layer`` kind; ``layer="dense"`` is MAML on everything.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..groups import grid_transforms
from ..sharing import ConvFilterSharing, exact_group_conv_sharing, exact_lifting_sharing
from .mlp import ACTIVATIONS, MLP
from .policies import per_weight_filters

__all__ = ["Conv4", "ConvNet", "FieldBias", "GlobalPool", "GroupConvNet"]

#: the global pooling of the last feature maps before the head
GLOBAL_POOLS = ("none", "mean", "mean_fields")
#: the normalization after each convolution
NORMS = (None, "batch", "group", "layer")


class FieldBias(nn.Module):
    """One bias per field of ``copies`` consecutive channels, shared by its copies.

    A group convolution between regular fields stays equivariant only with tied biases.

    Parameters
    ----------
    channels : int
        The channels it adds a bias to; a multiple of ``copies``.
    copies : int
        Consecutive channels per field.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import FieldBias
    >>> bias = FieldBias(8, copies=4)
    >>> bias.bias.shape, bias(torch.zeros(2, 8, 3, 3)).shape
    (torch.Size([2]), torch.Size([2, 8, 3, 3]))
    """

    def __init__(self, channels, copies):
        super().__init__()
        if channels % copies:
            raise ValueError(f"copies={copies} must divide the {channels} channels")
        self.copies = int(copies)
        self.bias = nn.Parameter(torch.zeros(channels // copies))

    def forward(self, x):
        return x + self.bias.repeat_interleave(self.copies)[:, None, None]


class GlobalPool(nn.Module):
    """Features of the last maps: flattened (``"none"``), a mean per channel, or per field.

    ``"mean_fields"`` averages each field of ``copies`` channels over its copies and
    pixels, so the features do not change when a field's copies are permuted: after an
    equivariant front-end with regular fields any head is invariant.

    Parameters
    ----------
    kind : {"mean", "mean_fields", "none"}, default="mean"
    copies : int, default=1
        Consecutive channels per field (``"mean_fields"``).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import GlobalPool
    >>> x = torch.arange(16.).reshape(1, 4, 2, 2)
    >>> GlobalPool("mean")(x), GlobalPool("mean_fields", copies=2)(x)
    (tensor([[ 1.5000,  5.5000,  9.5000, 13.5000]]), tensor([[ 3.5000, 11.5000]]))
    """

    def __init__(self, kind="mean", copies=1):
        super().__init__()
        if kind not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}; got {kind!r}")
        self.kind, self.copies = kind, int(copies)

    def forward(self, x):
        if self.kind == "none":
            return x.flatten(-3)
        if self.kind == "mean":
            return x.mean((-2, -1))
        # channel-major (field, copy, pixel): one mean per field over copies and pixels
        return x.reshape(*x.shape[:-3], -1, self.copies * x.shape[-2] * x.shape[-1]).mean(-1)

    def extra_repr(self):
        return f"kind={self.kind!r}" + (f", copies={self.copies}" if self.copies > 1 else "")


def _norm(kind, channels, copies):
    if kind is None:
        return None
    if kind == "batch":  # statistics of each task's own batch (no running averages)
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    groups = channels // copies if copies > 1 else math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


class ConvNet(nn.Module):
    """Convolution blocks, a global pooling and a dense head.

    Each block is ``conv → [field bias] → [norm] → activation → [2×2 pool]``; the
    features are flattened or pooled (``global_pool``) and an
    :class:`~msr_sklearn.models.MLP` head maps them to ``n_outputs``. With
    ``n_outputs=None`` there is no head: the last convolution is the output layer
    (no activation after it) and its maps are returned flattened, for tasks whose
    targets are feature maps.

    Parameters
    ----------
    input_shape : tuple of int (C, H, W)
        One image. Flat rows of ``C*H*W`` values are reshaped to it.
    n_outputs : int or None, default=None
        Outputs of the head; ``None``: no head.
    channels : tuple of int, default=(16,)
        Output channels of each convolution.
    kernel_size : int, default=3
        Square kernels.
    padding : int, default=0
        Zero padding of every convolution (``kernel_size // 2`` keeps the size).
    stride : int, default=1
        Stride of every convolution.
    pool : {None, "max", "avg"}, default=None
        A 2×2 pooling after each block.
    norm : {None, "batch", "group", "layer"}, default=None
        Normalization after each convolution: ``"batch"`` uses the statistics of each
        task's own batch (``track_running_stats=False``, as MAML's networks do);
        ``"group"`` normalizes each field of ``n_copies`` channels (8 groups without
        copies), ``"layer"`` all channels of a sample.
    global_pool : {"none", "mean", "mean_fields"}, default="none"
        See :class:`GlobalPool`.
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the head.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    bias : bool, default=True
        Biases of the convolutions and of the head.
    field_bias : bool, default=False
        One bias per field of ``n_copies`` channels instead of one per channel.
    n_copies : int, default=1
        Channels per field: the copies of MSR-Conv's default sharing, the fields of
        ``field_bias``, ``"mean_fields"`` and ``"group"`` norm.
    couple_copies : bool, default=False
        Default sharing only: every convolution after the first reads its input in
        fields of ``n_copies`` channels (``ConvFilterSharing(in_copies=n_copies)``), as a
        group convolution between regular fields does.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import ConvNet
    >>> net = ConvNet((1, 8, 8), n_outputs=5, channels=(8, 8), padding=1, n_copies=4,
    ...               global_pool="mean_fields")
    >>> net(torch.randn(3, 1, 8, 8)).shape, net(torch.randn(3, 64)).shape
    (torch.Size([3, 5]), torch.Size([3, 5]))
    >>> sorted(net.default_sharing("msr", n_filters=4))
    ['features.0.weight', 'features.2.weight', 'head.0.weight']
    """

    def __init__(self, input_shape, n_outputs=None, channels=(16,), kernel_size=3, padding=0,
                 stride=1, pool=None, norm=None, global_pool="none", hidden_layer_sizes=(),
                 activation="relu", bias=True, field_bias=False, n_copies=1,
                 couple_copies=False):
        super().__init__()
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be (channels, height, width); got {input_shape}")
        if pool not in (None, "max", "avg"):
            raise ValueError(f"pool must be None, 'max' or 'avg'; got {pool!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got "
                             f"{activation!r}")
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must hold at least one positive count; got {channels}")
        if (field_bias or global_pool == "mean_fields") and any(c % n_copies for c in channels):
            raise ValueError(f"n_copies={n_copies} must divide every entry of channels="
                             f"{channels} for field biases or mean_fields pooling")
        self.input_shape, self.n_copies, self.couple_copies = input_shape, int(n_copies), \
            bool(couple_copies)
        blocks, c_in = [], input_shape[0]
        for i, c_out in enumerate(channels):
            last = n_outputs is None and i == len(channels) - 1
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding,
                                    bias=bias and not field_bias))
            if bias and field_bias:
                blocks.append(FieldBias(c_out, self.n_copies))
            if norm is not None:
                blocks.append(_norm(norm, c_out, self.n_copies))
            if not last:
                blocks.append(ACTIVATIONS[activation]())
                if pool is not None:
                    blocks.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = GlobalPool(global_pool, self.n_copies)
        try:  # two images: batch statistics need more than one value per channel
            with torch.no_grad():
                shape = self.features(torch.zeros(2, *input_shape)).shape
        except (RuntimeError, ValueError) as exc:  # a kernel larger than what is left
            raise ValueError(f"the convolutions and poolings shrink {input_shape} images "
                             f"below a kernel ({exc})") from exc
        if 0 in shape:
            raise ValueError(f"the convolutions and poolings shrink {input_shape} images to "
                             f"nothing (last maps {tuple(shape[1:])}); use larger images, "
                             "fewer blocks, padding or no pooling")
        self.output_shape = tuple(shape[1:])  # the last maps
        n_features = self.pool(torch.zeros(shape)).shape[-1]
        self.head = None if n_outputs is None else MLP(n_features, n_outputs,
                                                        hidden_layer_sizes, activation, bias)
        self.reset_parameters()

    @property
    def convolutions(self):
        """The ``nn.Conv2d`` layers, by parameter-name prefix."""
        return {f"features.{i}": m for i, m in enumerate(self.features)
                if isinstance(m, nn.Conv2d)}

    def reset_parameters(self):
        """LeCun-normal filters (``N(0, 1/fan_in)``), zero biases; the head as :class:`MLP`.

        Without a head the last convolution is the output layer and starts at
        ``N(0, 1/n_outputs²)``, ``n_outputs`` its flat output size.
        """
        convs = list(self.convolutions.values())
        with torch.no_grad():
            for i, conv in enumerate(convs):
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                output = self.head is None and i == len(convs) - 1
                std = 1.0 / math.prod(self.output_shape) if output else 1.0 / math.sqrt(fan_in)
                conv.weight.normal_(0.0, std)
                if conv.bias is not None:
                    conv.bias.zero_()
            for m in self.features:
                if isinstance(m, FieldBias):
                    m.bias.zero_()

    def forward(self, x):
        if x.dim() == 2:
            x = x.reshape(x.shape[0], *self.input_shape)
        features = self.pool(self.features(x))
        return features if self.head is None else self.head(features)

    def default_sharing(self, layer="msr", n_filters=8):
        """MSR-Conv on the convolutions and ``layer``'s sharing on the head.

        ``layer="dense"``: MAML on everything. Otherwise every convolution gets a
        :class:`~msr_sklearn.sharing.ConvFilterSharing` with ``n_copies`` copies per
        field (random factors; ``in_copies=n_copies`` after the first with
        ``couple_copies``), with a residual for the ``"_residual"`` kinds, and the head
        :class:`~msr_sklearn.models.MLP`'s default sharing (``n_filters`` per head layer).
        """
        if layer.removesuffix("_residual") == "dense":
            return {}
        from ..sharing import Residual

        policy = {}
        for i, name in enumerate(self.convolutions):
            in_copies = self.n_copies if self.couple_copies and i else 1
            conv = ConvFilterSharing(self.n_copies, in_copies)
            policy[f"{name}.weight"] = Residual(conv) if layer.endswith("_residual") else conv
        if self.head is not None:
            head = self.head.default_sharing(layer, n_filters)
            policy.update({f"head.{k}": v for k, v in head.items()})
        return policy


class Conv4(ConvNet):
    """The standard Conv-4 few-shot backbone: four 3×3 blocks of ``channels`` and a linear head.

    Each block is ``conv (padding 1) → norm → ReLU → 2×2 max-pool`` (Vinyals et al.
    2016, Finn et al. 2017); the flattened maps feed one linear layer. Batch
    normalization uses each task's own batch statistics.

    Parameters
    ----------
    input_shape : tuple of int (C, H, W), default=(1, 28, 28)
        One image (28×28 for Omniglot-like data, 84×84 for MiniImagenet).
    n_outputs : int, default=5
        Ways.
    channels : int, default=64
        Channels of every block.
    norm : {"batch", "group", "layer", None}, default="batch"
    n_copies : int, default=4
        Channels per field of the default MSR-Conv sharing.
    couple_copies : bool, default=False
        See :class:`ConvNet`.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import Conv4
    >>> net = Conv4((1, 28, 28), n_outputs=5, channels=8)
    >>> net(torch.randn(2, 1, 28, 28)).shape, net.output_shape
    (torch.Size([2, 5]), (8, 1, 1))
    """

    def __init__(self, input_shape=(1, 28, 28), n_outputs=5, channels=64, norm="batch",
                 n_copies=4, couple_copies=False):
        super().__init__(input_shape, n_outputs, channels=(int(channels),) * 4, kernel_size=3,
                         padding=1, pool="max", norm=norm, n_copies=n_copies,
                         couple_copies=couple_copies)


class GroupConvNet(ConvNet):
    """An exactly C4- or D4-invariant network: lifting and group convolutions, field pooling.

    The first convolution lifts the image to regular fields of ``m`` channels (4 for
    C4, 8 for D4), the next ones are group convolutions between regular fields, every
    field has one bias, and ``"mean_fields"`` pooling makes the head's features
    invariant. Its :meth:`default_sharing` fixes every convolution to the group's exact
    sharing (:func:`~msr_sklearn.sharing.exact_lifting_sharing`,
    :func:`~msr_sklearn.sharing.exact_group_conv_sharing`): whatever the filter values,
    the network is invariant to the group's rotations and flips of a square input —
    the oracle a learned sharing is compared with.

    Parameters
    ----------
    input_shape : tuple of int (C, H, W)
        One square image.
    n_outputs : int
        Outputs of the head.
    group : {"c4", "d4"}, default="d4"
    fields : tuple of int, default=(4,)
        Regular fields of each convolution.
    kernel_size : int, default=3
    padding : int, default=0
        Zero padding (symmetric, so rotations of a square image commute with it).
    hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the head.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    bias : bool, default=True

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import GroupConvNet
    >>> net = GroupConvNet((1, 8, 8), n_outputs=3, group="c4", fields=(2, 2))
    >>> x = torch.randn(5, 1, 8, 8)
    >>> torch.allclose(net(x), net(torch.rot90(x, 1, (-2, -1))), atol=1e-5)
    True
    >>> sorted(net.default_sharing())   # exact sharings; the head is adapted as is
    ['features.0.weight', 'features.3.weight']
    """

    def __init__(self, input_shape, n_outputs, group="d4", fields=(4,), kernel_size=3,
                 padding=0, hidden_layer_sizes=(), activation="relu", bias=True):
        m = len(grid_transforms(group))
        h, w = tuple(input_shape)[1:]
        if h != w:
            raise ValueError(f"a group convolution on rotations needs square images; got "
                             f"input_shape={tuple(input_shape)}")
        self.group, self.fields = group, tuple(int(f) for f in fields)
        super().__init__(input_shape, n_outputs, channels=tuple(f * m for f in self.fields),
                         kernel_size=kernel_size, padding=padding, global_pool="mean_fields",
                         hidden_layer_sizes=hidden_layer_sizes, activation=activation,
                         bias=bias, field_bias=True, n_copies=m, couple_copies=True)

    def reset_parameters(self):
        """As :class:`ConvNet`, then every filter projected onto the group's exact span."""
        super().reset_parameters()
        convs = self.convolutions
        with torch.no_grad():
            for name, sharing in self.default_sharing().items():
                conv = convs[name.removesuffix(".weight")]
                conv.weight.copy_(sharing(sharing.right_inverse(conv.weight)))

    def default_sharing(self, layer="msr", n_filters=8):
        """The exact group sharings, fixed, on every convolution (``layer`` is not used)."""
        policy, in_fields = {}, self.input_shape[0]
        for i, (name, conv) in enumerate(self.convolutions.items()):
            k = conv.kernel_size[0]
            policy[f"{name}.weight"] = (
                exact_lifting_sharing(self.group, self.fields[0], in_fields, k) if i == 0 else
                exact_group_conv_sharing(self.group, self.fields[i], self.fields[i - 1], k))
        return policy
