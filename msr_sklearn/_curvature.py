"""The largest curvature of a least-squares-like loss: what a safe default step size needs.

Gradient descent at rate ``1 / L`` cannot diverge on a loss whose curvature is at most
``L``. For a linear model that curvature is the top eigenvalue of the (weighted) Gram
matrix of the inputs; for a network, the top eigenvalue of the Gauss-Newton matrix
``J^T D J`` of its outputs with respect to the trained parameters (``D``: the rows'
weights), which for one linear layer is the same number.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call, jvp, vjp


def row_weights(sample_weight, n_samples):
    """Each row's share of a weighted mean loss, ``w / sum(w)`` (``1 / n`` without weights)."""
    if sample_weight is None:
        return np.full(n_samples, 1.0 / n_samples)
    w = np.asarray(sample_weight, dtype=np.float64)
    return w / w.sum()


def gram_top_eigenvalue(X, sample_weight=None):
    """``lambda_max(X~^T D X~)`` with ``X~ = [X, 1]`` (the bias column), in float64.

    ``D = diag(w / sum(w))``; ``1 / n`` per row without ``sample_weight``.
    """
    Xt = np.hstack([np.asarray(X, dtype=np.float64), np.ones((X.shape[0], 1))])
    if sample_weight is None:
        scale = 1.0 / Xt.shape[0]
    else:  # sqrt(D) X~: a weight of k is k copies of the row
        Xt, scale = Xt * np.sqrt(row_weights(sample_weight, len(Xt)))[:, None], 1.0
    n, d = Xt.shape
    # the smaller of the two Gram matrices has the same nonzero eigenvalues
    gram = Xt @ Xt.T if n <= d else Xt.T @ Xt
    return float(np.linalg.eigvalsh(gram)[-1]) * scale


def gauss_newton_top_eigenvalue(module, X, params, sample_weight=None, tol=1e-4):
    """``lambda_max(J^T D J)``: ``J`` the Jacobian of ``module(X)`` in ``params``.

    Lanczos iteration (ARPACK, from a fixed start vector: deterministic, and no global
    random state is used) on Jacobian-vector products (``torch.func``), never forming
    ``J``.

    Parameters
    ----------
    module : torch.nn.Module
        The network, evaluated at its current parameters.
    X : ndarray of shape (n_samples, n_features)
        Its inputs.
    params : dict of str to Tensor
        The parameters to differentiate, by their names in ``module.named_parameters()``.
    sample_weight : ndarray of shape (n_samples,) or None
        The rows' weights in the loss (``D = diag(w / sum(w))``); ``None``: ``1 / n``.
    tol : float
        ARPACK's relative accuracy of the eigenvalue.

    Returns
    -------
    float
    """
    names = list(params)
    primals = tuple(params[n].detach() for n in names)
    first = primals[0]
    x = torch.as_tensor(np.asarray(X), dtype=first.dtype, device=first.device)
    share = torch.as_tensor(row_weights(sample_weight, len(x)), dtype=first.dtype,
                            device=first.device)
    sizes = [p.numel() for p in primals]

    def outputs(*tensors):
        return functional_call(module, dict(zip(names, tensors)), (x,))

    with torch.enable_grad():
        out, pullback = vjp(outputs, *primals)
    share = share.reshape(-1, *([1] * (out.dim() - 1)))

    def product(vector):  # J^T D J v, in float64 for ARPACK
        chunks = torch.as_tensor(np.asarray(vector).ravel(), dtype=first.dtype,
                                 device=first.device).split(sizes)
        v = tuple(c.reshape(p.shape) for c, p in zip(chunks, primals))
        with torch.enable_grad():
            _, jv = jvp(outputs, primals, v)
            w = pullback(jv * share)
        return torch.cat([t.reshape(-1) for t in w]).detach().cpu().double().numpy()

    n = sum(sizes)
    start = np.random.default_rng(0).normal(size=n)
    if n < 3:  # ARPACK needs k < n - 1: build the tiny matrix instead
        matrix = np.column_stack([product(e) for e in np.eye(n)])
        return float(np.linalg.eigvalsh((matrix + matrix.T) / 2)[-1])
    operator = LinearOperator((n, n), matvec=product, dtype=np.float64)
    return float(eigsh(operator, k=1, which="LA", tol=tol, v0=start,
                       return_eigenvectors=False)[0])
