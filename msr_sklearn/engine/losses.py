"""Per-task losses of a meta-batch, with padded query rows masked out."""

from __future__ import annotations

from torch.nn import functional as F

__all__ = ["LOSSES", "cross_entropy_loss", "mse_loss"]


def _mean_over_samples(per_sample, mask):
    if mask is None:
        return per_sample.mean(-1)
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum(-1) / mask.sum(-1)


def mse_loss(pred, target, mask=None):
    """Per-task mean squared error, the mean over all output elements (as in the paper).

    Squared errors are averaged over each sample's outputs (any trailing shape), then
    over the (unmasked) samples.

    Parameters
    ----------
    pred, target : Tensor of shape (T, n, ...)
        Predictions and targets, with the same number of elements per sample.
    mask : bool Tensor of shape (T, n) or None, default=None
        Which samples count; ``None``: all of them.

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import mse_loss
    >>> target = torch.arange(6.0).reshape(2, 3, 1)
    >>> mse_loss(torch.zeros(2, 3, 1), target)
    tensor([ 1.6667, 16.6667])
    >>> mask = torch.tensor([[True, True, False], [True, False, False]])
    >>> mse_loss(torch.zeros(2, 3, 1), target, mask)
    tensor([0.5000, 9.0000])
    """
    diff = pred.flatten(2) - target.flatten(2)
    return _mean_over_samples((diff ** 2).mean(-1), mask)


def cross_entropy_loss(logits, target, mask=None):
    """Per-task mean cross-entropy over the (unmasked) samples.

    Parameters
    ----------
    logits : Tensor of shape (T, n, n_classes)
        Unnormalized class scores.
    target : int64 Tensor of shape (T, n)
        Class indices.
    mask : bool Tensor of shape (T, n) or None, default=None
        Which samples count; ``None``: all of them.

    Returns
    -------
    Tensor of shape (T,)

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.engine import cross_entropy_loss
    >>> cross_entropy_loss(torch.zeros(2, 3, 4), torch.tensor([[0, 1, 2], [3, 3, 3]]))
    tensor([1.3863, 1.3863])
    """
    per_sample = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none")
    return _mean_over_samples(per_sample.reshape(target.shape), mask)


#: the per-task losses by the ``loss`` names the engine accepts
LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss}
