"""How :func:`msr_sklearn.datasets.make_rotation2d_tasks` compares with the paper's generator.

The paper's ``2d_rot8`` / ``2d_rot8_flip`` data come from e2cnn's ``R2Conv`` (trivial
-> 3 regular fields of C8 / D8, 3×3, no bias, generalized He init per task). This
one-off script builds those layers with e2cnn and measures, for each group:

* the channel order: which of this module's (flip, rotation) channels each e2cnn
  channel equals, for a random filter;
* the largest principal angle between the two 18-dimensional filter spans;
* the relative difference of the filter covariances over tasks (e2cnn's from its
  expanded basis and He variances, ours from the basis and scales);
* target variances: the analytic one, ours and e2cnn's empirical ones, and the time
  per task of both generators.

e2cnn is not a dependency. It runs on torch 2.13 / numpy 2.4 after two changes (the
layer must be built under ``torch.no_grad()``, and numpy 2 has no
``ndarray.tostring``)::

    python -m pip install --no-deps --target /tmp/e2cnn_pkg e2cnn==0.2.3
    grep -rl "tostring()" /tmp/e2cnn_pkg/e2cnn | xargs sed -i 's/tostring()/tobytes()/g'
    E2CNN_PATH=/tmp/e2cnn_pkg python benchmarks/rotation2d_e2cnn.py
"""

import os
import sys
import time

import numpy as np
import torch

from msr_sklearn.datasets import make_rotation2d_tasks, rotation2d_sharing
from msr_sklearn.datasets.rotation2d import _field_basis

torch.set_num_threads(1)
sys.path.insert(0, os.environ.get("E2CNN_PATH", "/tmp/e2cnn_pkg"))
from e2cnn import gspaces  # noqa: E402
from e2cnn import nn as enn  # noqa: E402
from e2cnn.nn import init  # noqa: E402


def e2cnn_layer(group):
    space = gspaces.FlipRot2dOnR2(N=8) if group == "d8" else gspaces.Rot2dOnR2(N=8)
    with torch.no_grad():
        return enn.R2Conv(enn.FieldType(space, [space.trivial_repr]),
                          enn.FieldType(space, 3 * [space.regular_repr]),
                          kernel_size=3, bias=False)


def expanded_basis(conv):
    """(C_out * 9, dim) filters of every unit weight vector."""
    dim = conv.basisexpansion.dimension()
    columns = []
    with torch.no_grad():
        for i in range(dim):
            conv.weights.data.zero_()
            conv.weights.data[i] = 1.0
            columns.append(conv.expand_parameters()[0].double().numpy().ravel())
    return np.stack(columns, axis=1)


def largest_angle_deg(a, b):
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    residual = qa - qb @ (qb.T @ qa)
    return np.degrees(np.arcsin(min(1.0, np.linalg.norm(residual, 2))))


def main(n_tasks=200):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for group in ("c8", "d8"):
        conv = e2cnn_layer(group)
        basis_e = expanded_basis(conv)
        std_e = init._generalized_he_init_variances(conv.basisexpansion).double().numpy()
        cov_e = basis_e @ np.diag(std_e ** 2) @ basis_e.T
        field, scale = _field_basis(group)
        ours = np.kron(np.eye(3), field)
        cov_o = ours @ np.diag(np.tile(scale, 3) ** 2) @ ours.T
        order = field.shape[0] // 9
        # channel order on a random filter of field 0
        f_e = (basis_e.reshape(3, order * 9, -1)[0] @ rng.standard_normal(basis_e.shape[1]))
        coef, *_ = np.linalg.lstsq(field, f_e, rcond=None)
        f_o = (field @ coef).reshape(order, 9)
        match = [int(np.argmin(np.linalg.norm(f_o - row, axis=1)))
                 for row in f_e.reshape(order, 9)]
        print(f"{group}: e2cnn basis dimension {basis_e.shape[1]}, ours "
              f"{rotation2d_sharing(group).shape[1]}; channel c of e2cnn = our channel "
              f"{match} (fit residual {np.linalg.norm(field @ coef - f_e):.1e})")
        print(f"  largest principal angle {largest_angle_deg(basis_e, ours):.2e} deg; "
              f"covariance relative difference "
              f"{np.linalg.norm(cov_o - cov_e) / np.linalg.norm(cov_e):.1e}; "
              f"analytic target variance {np.trace(cov_o) / (3 * order):.4f}")
        ys, start = [], time.process_time()
        with torch.no_grad():
            for _ in range(n_tasks):
                init.generalized_he_init(conv.weights.data, conv.basisexpansion)
                conv.train()  # the filter is re-expanded from the new weights
                ys.append(conv(enn.GeometricTensor(torch.randn(20, 1, 32, 32),
                                                   conv.in_type)).tensor.numpy())
        t_e = (time.process_time() - start) / n_tasks
        start = time.process_time()
        _, y = make_rotation2d_tasks(group, n_tasks=n_tasks, random_state=0)
        t_o = (time.process_time() - start) / n_tasks
        v_e = np.stack(ys).var(axis=(1, 3, 4)).mean()  # per task, then averaged
        v_o = y.var(axis=(1, 3, 4)).mean()
        se_e = np.stack(ys).var(axis=(1, 2, 3, 4)).std() / np.sqrt(n_tasks)
        print(f"  target variance over {n_tasks} tasks: e2cnn {v_e:.4f} (+- {se_e:.4f} s.e.), "
              f"ours {v_o:.4f}; time per task e2cnn {1e3 * t_e:.1f} ms, ours {1e3 * t_o:.1f} ms")


if __name__ == "__main__":
    main()
