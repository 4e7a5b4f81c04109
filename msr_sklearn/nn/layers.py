"""Layers whose weights are functions of a sharing (outer) and filter values (inner).

Every layer works on flat features ``(..., n_samples, n_features)`` and accepts its
inner parameters as keyword arguments; passed with a leading task dimension
(``filters`` of shape ``(n_tasks, k)`` and ``x`` of shape ``(n_tasks, n, d)``) one
call runs a whole meta-batch, each task with its own adapted filters. Called without
them, a layer uses its own parameters (the meta-learned initial values), so it is
also an ordinary ``nn.Module`` for per-task training.

Which parameters are *inner* (adapted per task) is declared in one place,
:attr:`MetaLayer.inner_parameters`; every other parameter is *outer*.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# ConvFilterSharing lives in sharing.py; imported here so that old imports keep working
from .sharing import ConvFilterSharing, FixedSharing, Sharing  # noqa: F401


class MetaLayer(nn.Module):
    """Base class: a layer with a sharing, inner ``filters`` and an optional inner ``bias``.

    ``filters`` (``v``, shape ``(sharing.n_filters,)``) and ``bias`` are the *inner*
    parameters, listed in :attr:`inner_parameters`; their values on the module are the
    meta-learned initial ones. The sharing's parameters (``U``) are *outer*.
    ``forward(x, filters=None, bias=None, residual=None)`` computes the layer with the
    given inner values (with a leading task dimension for a meta-batch) or, when
    omitted, its own. Subclasses implement ``_apply_weight`` and the ``in_features``,
    ``out_features`` and ``fan_in`` properties, and call :meth:`reset_parameters` once
    built (this base class leaves ``filters`` and ``bias`` uninitialized).

    **Soft symmetry** (``residual=True``): the weight is ``W = reshape(U v) + R`` with a
    free inner ``residual`` ``R`` of the weight's shape beside the shared part. Its
    value on the module is the meta-learned ``R0`` (initialized at 0); it is adapted
    per task like ``v``, with its own meta-learned inner learning rate, so a rate
    ``→ 0`` is the strict symmetry and a large one plain MAML. With ``pull=True`` the
    layer also carries an outer ``log_pull``, and :meth:`inner_penalty` is
    ``exp(log_pull) * ||R - R0||^2``, which the inner loop adds to the support loss.

    Parameters
    ----------
    sharing : Sharing
        Builds the weight from the filter values (outer parameters).
    n_outputs : int
        Output features (the bias size).
    bias : bool, default=True
        Whether the layer has an inner bias.
    residual : bool, default=False
        Add the free inner weight ``R`` (initialized at 0) to the shared one.
    pull : bool, default=False
        With ``residual``: an outer, meta-learned pull weight ``exp(log_pull)``
        (initially 1) of the inner penalty ``||R - R0||^2``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import DenseSharing, MetaLayer, SharedLinear
    >>> layer = SharedLinear(DenseSharing((3, 4), n_filters=2))
    >>> isinstance(layer, MetaLayer), MetaLayer.inner_parameters
    (True, ('filters', 'bias', 'residual'))
    >>> [name for name, _ in layer.named_parameters()]   # inner first, then U (outer)
    ['filters', 'bias', 'sharing.basis']
    >>> layer.filters.shape, layer.weight().shape
    (torch.Size([2]), torch.Size([3, 4]))

    A soft layer: a residual ``R`` beside ``U v``, pulled towards ``R0``:

    >>> soft = SharedLinear(DenseSharing((3, 4), n_filters=2), residual=True, pull=True)
    >>> [name for name, _ in soft.named_parameters()]
    ['filters', 'bias', 'residual', 'log_pull', 'sharing.basis']
    >>> soft.residual.shape, bool(soft.residual.abs().max() == 0)
    (torch.Size([3, 4]), True)
    >>> soft.inner_penalty(torch.ones(5, 3, 4))   # 5 tasks: exp(0) * 12 each
    tensor([12., 12., 12., 12., 12.], grad_fn=<MulBackward0>)
    """

    #: names of the parameters adapted in the inner loop; all others are outer
    inner_parameters = ("filters", "bias", "residual")

    def __init__(self, sharing: Sharing, n_outputs: int, bias: bool = True,
                 residual: bool = False, pull: bool = False):
        super().__init__()
        if pull and not residual:
            raise ValueError("pull=True needs residual=True: the pull acts on the residual R")
        self.sharing = sharing
        self.n_outputs = int(n_outputs)
        self.filters = nn.Parameter(torch.empty(sharing.n_filters))
        self.bias = nn.Parameter(torch.empty(self.n_outputs)) if bias else None
        self.residual = nn.Parameter(torch.empty(sharing.weight_shape)) if residual else None
        self.log_pull = nn.Parameter(torch.empty(())) if pull else None

    def reset_parameters(self, generator=None, filter_std=None):
        """Draw the initial filters ``v ~ N(0, filter_std^2)``; zero the bias.

        By default ``filter_std`` gives ``W = U v`` a LeCun-like scale
        (``Var(W_ij) ≈ 1 / fan_in`` for orthonormal ``U``, where ``||W||_F = ||v||``),
        which keeps signals alive through hidden layers. :func:`build_network` starts
        the *output* layer much smaller (the paper's ``1 / n_out``): the mean task is
        then close to the zero function, and a large random initial output would only
        add query error that the outer loop must first unlearn (on rank-1 tasks it
        delayed meta-learning by hundreds of steps).
        """
        if filter_std is None:
            filter_std = math.sqrt(self.sharing.n_weights / (self.fan_in * self.sharing.n_filters))
        with torch.no_grad():
            self.filters.copy_(torch.randn(self.sharing.n_filters, generator=generator) * filter_std)
            for zeroed in (self.bias, self.residual, self.log_pull):  # R0 = 0, pull = exp(0)
                if zeroed is not None:
                    zeroed.zero_()

    @property
    def fan_in(self):
        raise NotImplementedError

    @property
    def in_features(self):
        """Flat input size."""
        raise NotImplementedError

    @property
    def out_features(self):
        """Flat output size."""
        raise NotImplementedError

    def weight(self, filters=None, residual=None):
        """``reshape(U v) + R`` for the given (or the layer's own) inner values.

        Inside :meth:`MetaNetwork.holding_sharings() <msr_sklearn.nn.MetaNetwork.holding_sharings>`
        ``U v`` is :meth:`Sharing.held_weight <msr_sklearn.nn.Sharing.held_weight>`.
        """
        filters = self.filters if filters is None else filters
        held = getattr(self, "_holding_sharing", False)
        weight = self.sharing.held_weight(filters) if held else self.sharing.weight(filters)
        if self.residual is None:
            return weight
        return weight + (self.residual if residual is None else residual)

    def inner_penalty(self, residual, initial=None):
        """``exp(log_pull) * ||residual - initial||^2`` per leading (task) index, or None.

        ``initial`` defaults to the layer's own ``R0``; ``None`` without a pull.
        """
        if self.log_pull is None:
            return None
        diff = residual - (self.residual if initial is None else initial)
        return self.log_pull.exp() * diff.pow(2).flatten(-len(self.sharing.weight_shape)).sum(-1)

    def forward(self, x, filters=None, bias=None, residual=None):
        out = self._apply_weight(x, self.weight(filters, residual))
        bias = self.bias if bias is None else bias
        if bias is not None:
            out = out + bias.unsqueeze(-2)
        return out

    def _apply_weight(self, x, weight):
        raise NotImplementedError

    def _soft_repr(self):
        if self.residual is None:
            return ""
        return f", residual=True, pull={self.log_pull is not None}"


class SharedLinear(MetaLayer):
    """``y = x W^T + b`` with ``vec(W) = U v`` (row-major).

    With a :class:`~msr_sklearn.nn.DenseSharing` this is MSR-FC; with an identity
    :class:`~msr_sklearn.nn.FixedSharing` it is an ordinary linear layer (MAML).
    Input ``(..., n, n_in)``, output ``(..., n, n_out)``. The filters ``v`` and the
    bias are inner parameters; the sharing's ``U`` is outer.

    Parameters
    ----------
    sharing : Sharing
        With ``weight_shape == (n_out, n_in)``; ``k = sharing.n_filters`` filter values.
    bias : bool, default=True
        Whether to add an inner bias of shape ``(n_out,)`` (initialized to zero).
    generator : torch.Generator or None, default=None
        Source of the random initial filters ``v`` (see
        :meth:`~MetaLayer.reset_parameters`); ``None`` uses torch's global generator.
    residual : bool, default=False
        Soft symmetry: ``W = reshape(U v) + R`` with a free inner ``R`` of shape
        ``(n_out, n_in)`` starting at the meta-learned ``R0`` (see :class:`MetaLayer`).
    pull : bool, default=False
        With ``residual``: a meta-learned inner penalty ``exp(log_pull) ||R - R0||^2``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import DenseSharing, SharedLinear
    >>> layer = SharedLinear(DenseSharing((4, 5), n_filters=3), bias=False)
    >>> layer(torch.ones(2, 5)).shape
    torch.Size([2, 4])
    >>> per_task = torch.zeros(7, 3)          # 7 tasks, each with its own filters
    >>> layer(torch.ones(7, 2, 5), filters=per_task).shape
    torch.Size([7, 2, 4])
    >>> soft = SharedLinear(DenseSharing((4, 5), n_filters=3), residual=True)
    >>> soft(torch.ones(7, 2, 5), filters=per_task, residual=torch.ones(7, 4, 5))[0, 0]
    tensor([5., 5., 5., 5.], grad_fn=<SelectBackward0>)
    """

    def __init__(self, sharing: Sharing, bias: bool = True, generator=None,
                 residual: bool = False, pull: bool = False):
        if len(sharing.weight_shape) != 2:
            raise ValueError(f"a linear layer needs a 2-D weight; got {sharing.weight_shape}")
        super().__init__(sharing, sharing.weight_shape[0], bias, residual=residual, pull=pull)
        self.reset_parameters(generator)

    @property
    def in_features(self):
        return self.sharing.weight_shape[1]

    @property
    def out_features(self):
        return self.sharing.weight_shape[0]

    @property
    def fan_in(self):
        return self.in_features

    def _apply_weight(self, x, weight):
        # (W x^T)^T rather than x W^T: the backward then yields dL/dW contiguous,
        # saving a transposing copy of every task's weight per step
        return (weight @ x.transpose(-1, -2)).transpose(-1, -2)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}" + self._soft_repr()
        )


def _unfold_1d(x, length, channels, kernel_size):
    """(..., n, C*L) -> (..., n, C, L - K + 1, K) sliding windows (valid, stride 1)."""
    x = x.reshape(*x.shape[:-1], channels, length)
    return x.unfold(-1, kernel_size, 1)


class SharedConv2d(MetaLayer):
    """A valid, stride-1 2-D convolution whose filter tensor is ``vec(W) = U v``.

    Input and output are flat: ``(..., n, C_in*H*W)`` → ``(..., n, C_out*H'*W')``.
    Translation equivariance comes from the convolution; ``U`` adds sharing across
    the filter tensor ``(C_out, C_in, kh, kw)`` on top (MSR-Conv).

    The filters ``v`` (``sharing.n_filters`` values) and the per-channel bias are
    inner parameters; the sharing's ``U`` is outer (none for an identity
    :class:`~msr_sklearn.nn.FixedSharing`, i.e. a plain convolution). The output has
    ``output_shape = (C_out, H - kh + 1, W - kw + 1)``.

    Parameters
    ----------
    input_shape : tuple of int (C_in, H, W)
        Shape of one input image; the flat input has ``C_in*H*W`` features.
    sharing : Sharing
        With ``weight_shape == (C_out, C_in, kh, kw)``, e.g. a
        :class:`~msr_sklearn.nn.ConvFilterSharing`; the kernel must fit the image.
    bias : bool, default=True
        One inner bias per output channel, shared by its pixels.
    generator : torch.Generator or None, default=None
        Source of the random initial filters ``v``; ``None`` uses torch's global
        generator.
    residual : bool, default=False
        Soft symmetry: free per-copy filters ``R`` of shape ``(C_out, C_in, kh, kw)``
        beside the shared ones, ``W = reshape(U v) + R`` (see :class:`MetaLayer`).
    pull : bool, default=False
        With ``residual``: a meta-learned inner penalty ``exp(log_pull) ||R - R0||^2``.
    bias_copies : int, default=1
        Consecutive output channels that share one bias (``C_out / bias_copies``
        biases): the ``n_copies`` copies of a field, whose biases a group convolution
        between regular fields must tie to stay equivariant.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import ConvFilterSharing, SharedConv2d
    >>> sharing = ConvFilterSharing(n_fields=2, in_channels=1, kernel_size=3, n_copies=4)
    >>> conv = SharedConv2d((1, 5, 5), sharing)
    >>> conv.output_shape, conv.filters.shape, conv.bias.shape
    ((8, 3, 3), torch.Size([18]), torch.Size([8]))
    >>> conv(torch.ones(2, 25)).shape               # 2 images of 5x5
    torch.Size([2, 72])
    >>> conv(torch.ones(3, 2, 25), filters=torch.zeros(3, 18),
    ...      bias=torch.zeros(3, 8)).shape          # 3 tasks at once
    torch.Size([3, 2, 72])
    >>> soft = SharedConv2d((1, 5, 5), sharing, residual=True)
    >>> soft.residual.shape                         # one free filter per copy
    torch.Size([8, 1, 3, 3])
    >>> SharedConv2d((1, 5, 5), sharing, bias_copies=4).bias.shape   # one per field
    torch.Size([2])
    """

    def __init__(self, input_shape, sharing: Sharing, bias: bool = True, generator=None,
                 residual: bool = False, pull: bool = False, bias_copies: int = 1):
        c_in, h, w = (int(s) for s in input_shape)
        if len(sharing.weight_shape) != 4 or sharing.weight_shape[1] != c_in:
            raise ValueError(
                f"a conv sharing over inputs with {c_in} channels needs weight_shape "
                f"(C_out, {c_in}, kh, kw); got {sharing.weight_shape}"
            )
        c_out, _, kh, kw = sharing.weight_shape
        if kh > h or kw > w:
            raise ValueError(f"kernel {(kh, kw)} is larger than the input {(h, w)}")
        if isinstance(bias_copies, bool) or int(bias_copies) != bias_copies or \
                bias_copies < 1 or c_out % bias_copies:
            raise ValueError(f"bias_copies={bias_copies!r} must be a positive integer that "
                             f"divides the {c_out} output channels")
        self.bias_copies = int(bias_copies)
        super().__init__(sharing, c_out // self.bias_copies, bias, residual=residual, pull=pull)
        self.input_shape = (c_in, h, w)
        self.output_shape = (c_out, h - kh + 1, w - kw + 1)
        self.reset_parameters(generator)

    @property
    def fan_in(self):
        _, c_in, kh, kw = self.sharing.weight_shape
        return c_in * kh * kw

    @property
    def in_features(self):
        return math.prod(self.input_shape)

    @property
    def out_features(self):
        return math.prod(self.output_shape)

    def forward(self, x, filters=None, bias=None, residual=None):
        # the bias is per channel (or per field of bias_copies channels), not per feature
        out = self._apply_weight(x, self.weight(filters, residual))
        bias = self.bias if bias is None else bias
        if bias is not None:
            pixels = self.output_shape[1] * self.output_shape[2] * self.bias_copies
            out = out + bias.repeat_interleave(pixels, dim=-1).unsqueeze(-2)
        return out

    def _apply_weight(self, x, weight):
        c_in, h, w = self.input_shape
        c_out, _, kh, kw = weight.shape[-4:]
        task_shape = weight.shape[:-4]
        lead = x.shape[:-1]
        patches = F.unfold(x.reshape(-1, c_in, h, w), (kh, kw))  # (N, C*kh*kw, P)
        patches = patches.reshape(*lead, c_in * kh * kw, -1)
        kernel = weight.reshape(*task_shape, c_out, c_in * kh * kw)
        # a kernel per task: (T, C_out, CK) against patches (T, n, CK, P)
        out = kernel.unsqueeze(-3) @ patches if task_shape else kernel @ patches
        return out.reshape(*lead, -1)

    def extra_repr(self):
        return (
            f"input_shape={self.input_shape}, output_shape={self.output_shape}, "
            f"bias={self.bias is not None}" + self._soft_repr()
        )


class GlobalMeanPool(nn.Module):
    """Average each channel over its pixels: ``(..., n, C*H*W)`` → ``(..., n, C)``.

    No parameters. After a convolution front-end it makes the features invariant to
    any permutation of pixels, such as a 90° rotation of a square image.

    Parameters
    ----------
    channels : int
        Number of channels ``C``; the input's last axis must be a multiple of it,
        laid out channel-major (``C`` blocks of ``H*W`` pixels).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import GlobalMeanPool
    >>> pool = GlobalMeanPool(2)
    >>> pool(torch.arange(8.).reshape(1, 8))      # channels [0, 1, 2, 3] and [4, 5, 6, 7]
    tensor([[1.5000, 5.5000]])
    >>> pool(torch.ones(7, 10, 2 * 9)).shape, pool.out_features
    (torch.Size([7, 10, 2]), 2)
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = int(channels)

    def forward(self, x):
        return x.reshape(*x.shape[:-1], self.channels, -1).mean(-1)

    @property
    def out_features(self):
        return self.channels

    def extra_repr(self):
        return f"channels={self.channels}"


class LocallyConnected1d(MetaLayer):
    """A 1-D locally connected layer: an untied ``K``-tap filter at every position.

    Weight ``(C_out, C_in, L - K + 1, K)``, valid, stride 1, no padding; input
    ``(..., n, C_in*L)``, output ``(..., n, C_out*(L-K+1))``. The paper's MAML-LC.
    The sharing is the identity (:class:`~msr_sklearn.nn.FixedSharing`, no outer
    parameters): every weight is an inner filter value, so ``k = C_out*C_in*(L-K+1)*K``.

    Parameters
    ----------
    in_channels : int
        Input channels ``C_in``.
    out_channels : int
        Output channels ``C_out``.
    input_length : int
        Input positions ``L`` per channel.
    kernel_size : int, default=3
        Taps ``K`` per filter; at most ``input_length``.
    bias : bool, default=True
        Whether to add an inner bias, one per output feature (``C_out*(L-K+1)``).
    generator : torch.Generator or None, default=None
        Source of the random initial filters; ``None`` uses torch's global generator.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import LocallyConnected1d
    >>> layer = LocallyConnected1d(1, 1, input_length=6, kernel_size=3)
    >>> layer.sharing.weight_shape, layer.filters.shape, layer.bias.shape
    ((1, 1, 4, 3), torch.Size([12]), torch.Size([4]))
    >>> layer(torch.ones(10, 6)).shape
    torch.Size([10, 4])
    >>> layer(torch.ones(7, 10, 6), filters=torch.zeros(7, 12)).shape   # 7 tasks
    torch.Size([7, 10, 4])
    """

    def __init__(self, in_channels, out_channels, input_length, kernel_size=3, bias=True,
                 generator=None):
        positions = input_length - kernel_size + 1
        if positions < 1:
            raise ValueError(f"kernel_size={kernel_size} exceeds input_length={input_length}")
        sharing = FixedSharing((out_channels, in_channels, positions, kernel_size))
        super().__init__(sharing, out_channels * positions, bias)
        self.in_channels, self.input_length, self.kernel_size = in_channels, input_length, kernel_size
        self.reset_parameters(generator)

    @property
    def fan_in(self):
        return self.in_channels * self.kernel_size

    @property
    def in_features(self):
        return self.in_channels * self.input_length

    @property
    def out_features(self):
        return self.n_outputs

    def _apply_weight(self, x, weight):
        windows = _unfold_1d(x, self.input_length, self.in_channels, self.kernel_size)
        out = torch.einsum("...ncpk,...ocpk->...nop", windows, weight)
        return out.flatten(-2)

    def extra_repr(self):
        return (
            f"in_channels={self.in_channels}, input_length={self.input_length}, "
            f"kernel_size={self.kernel_size}, bias={self.bias is not None}"
        )


def conv1d(in_channels, out_channels, input_length, kernel_size=3, bias=True, generator=None):
    """An ordinary 1-D convolution (valid, stride 1): the paper's MAML-Conv.

    It is a :class:`SharedConv2d` over inputs of height 1 with a ``(1, K)`` kernel and
    the identity sharing, so the same code path serves both. Input
    ``(..., n, C_in*L)``, output ``(..., n, C_out*(L-K+1))``; the inner filters are
    the ``C_out*C_in*K`` kernel weights, and there are no outer parameters.

    Parameters
    ----------
    in_channels : int
        Input channels ``C_in``.
    out_channels : int
        Output channels ``C_out``.
    input_length : int
        Input positions ``L`` per channel.
    kernel_size : int, default=3
        Taps ``K``; at most ``input_length``.
    bias : bool, default=True
        Whether to add an inner bias, one per output channel.
    generator : torch.Generator or None, default=None
        Source of the random initial filters; ``None`` uses torch's global generator.

    Returns
    -------
    SharedConv2d
        With ``input_shape == (C_in, 1, L)`` and an identity
        :class:`~msr_sklearn.nn.FixedSharing` of ``weight_shape (C_out, C_in, 1, K)``.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import conv1d
    >>> conv = conv1d(1, 2, input_length=6, kernel_size=3)
    >>> conv.output_shape, conv.filters.shape, conv.bias.shape
    ((2, 1, 4), torch.Size([6]), torch.Size([2]))
    >>> with torch.no_grad():                     # channel 0 reads x[p], channel 1 x[p+1]
    ...     _ = conv.filters.copy_(torch.tensor([1., 0, 0, 0, 1, 0]))
    ...     conv(torch.arange(6.).reshape(1, 6))
    tensor([[0., 1., 2., 3., 1., 2., 3., 4.]])
    """
    sharing = FixedSharing((out_channels, in_channels, 1, kernel_size))
    return SharedConv2d((in_channels, 1, input_length), sharing, bias=bias, generator=generator)
