"""The paper's single-layer 1-D baselines: a convolution and a locally connected layer.

Both map a flat signal of ``n_features`` values to ``n_features - kernel_size + 1``
outputs (valid, stride 1, one channel), as in the MSR paper's synthetic experiments:
MAML-Conv (the true sharing of translation tasks, fixed) and MAML-LC (an untied
filter at every position). MSR-FC is :class:`~msr_sklearn.models.MLP` with a learned
dense sharing.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv1dLayer", "LocallyConnected1d"]


def _check_kernel(n_features, kernel_size):
    if int(kernel_size) < 1 or int(kernel_size) > int(n_features):
        raise ValueError(f"kernel_size={kernel_size} must lie between 1 and n_features="
                         f"{n_features}")


class Conv1dLayer(nn.Module):
    """One valid, single-channel 1-D convolution on flat signals (MAML-Conv).

    Parameters
    ----------
    n_features : int
        The signal's length ``L``; the output has ``L - kernel_size + 1`` values.
    kernel_size : int, default=3
        Taps of the filter.
    bias : bool, default=True
        One bias shared by every output.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import Conv1dLayer
    >>> conv = Conv1dLayer(6, kernel_size=3)
    >>> with torch.no_grad():
    ...     _ = conv.conv.weight.copy_(torch.tensor([[[0., 1., 0.]]]))
    ...     _ = conv.conv.bias.zero_()
    >>> conv(torch.arange(6.).reshape(1, 6))   # reads x[p + 1]
    tensor([[1., 2., 3., 4.]], grad_fn=<SqueezeBackward1>)
    """

    def __init__(self, n_features, kernel_size=3, bias=True):
        super().__init__()
        _check_kernel(n_features, kernel_size)
        self.n_features, self.kernel_size = int(n_features), int(kernel_size)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, bias=bias)
        self.reset_parameters()

    @property
    def n_outputs(self):
        return self.n_features - self.kernel_size + 1

    def reset_parameters(self):
        """The output-layer scale of :class:`~msr_sklearn.models.MLP`: ``N(0, 1/n_out²)``."""
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 1.0 / self.n_outputs)
            if self.conv.bias is not None:
                self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x.unsqueeze(-2)).squeeze(-2)

    def default_sharing(self, layer="msr", n_filters=8):
        """Every parameter adapted as is (the convolution *is* the sharing)."""
        return {}


class LocallyConnected1d(nn.Module):
    """One valid 1-D locally connected layer: an untied filter at every position (MAML-LC).

    Parameters
    ----------
    n_features : int
        The signal's length ``L``; the output has ``L - kernel_size + 1`` values.
    kernel_size : int, default=3
        Taps of each position's filter.
    bias : bool, default=True
        One bias per output.

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.models import LocallyConnected1d
    >>> lc = LocallyConnected1d(6, kernel_size=3)
    >>> lc.weight.shape, lc(torch.ones(10, 6)).shape
    (torch.Size([4, 3]), torch.Size([10, 4]))
    """

    def __init__(self, n_features, kernel_size=3, bias=True):
        super().__init__()
        _check_kernel(n_features, kernel_size)
        self.n_features, self.kernel_size = int(n_features), int(kernel_size)
        positions = self.n_features - self.kernel_size + 1
        self.weight = nn.Parameter(torch.empty(positions, self.kernel_size))
        self.bias = nn.Parameter(torch.empty(positions)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """The output-layer scale of :class:`~msr_sklearn.models.MLP`: ``N(0, 1/n_out²)``."""
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / self.weight.shape[0])
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x):
        out = (x.unfold(-1, self.kernel_size, 1) * self.weight).sum(-1)
        return out if self.bias is None else out + self.bias

    def default_sharing(self, layer="msr", n_filters=8):
        """Every parameter adapted as is."""
        return {}

    def extra_repr(self):
        return f"n_features={self.n_features}, kernel_size={self.kernel_size}, " \
               f"bias={self.bias is not None}"
