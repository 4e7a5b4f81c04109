"""The task-vectorized MSR engine: any module under a sharing policy, inner and outer loop
over a whole meta-batch at once, and the outer-loop optimizer.

No scikit-learn here: torch, the sharings and the data layer's
:class:`~msr_sklearn.data.batch.TaskBatch`.
"""

from .inner import (
    SYMMETRY_GRADIENTS,
    InnerLoop,
    adapt,
    inner_objective,
    inner_update,
    support_loss,
)
from .losses import LOSSES, cross_entropy_loss, mse_loss
from .model import MetaModel, SharedWeight, auto_inner_lrs
from .optim import (
    DEEP_TRUST_RATIO,
    HIDDEN_SHARING_SIZE,
    META_OPTIMIZERS,
    ONE_LAYER_DENSE_LR_SCALE,
    PRUNING_QUANTILES,
    MetaAdam,
    hidden_sharing_lr_scale,
    make_meta_optimizer,
    prune_rows,
)
from .outer import (adapted_outputs, evaluate_task_losses, meta_step, meta_step_chunk_size,
                    task_graph_bytes, task_losses)

__all__ = [
    "DEEP_TRUST_RATIO",
    "HIDDEN_SHARING_SIZE",
    "LOSSES",
    "META_OPTIMIZERS",
    "ONE_LAYER_DENSE_LR_SCALE",
    "PRUNING_QUANTILES",
    "SYMMETRY_GRADIENTS",
    "InnerLoop",
    "MetaAdam",
    "MetaModel",
    "SharedWeight",
    "adapt",
    "adapted_outputs",
    "auto_inner_lrs",
    "cross_entropy_loss",
    "evaluate_task_losses",
    "hidden_sharing_lr_scale",
    "inner_objective",
    "inner_update",
    "make_meta_optimizer",
    "meta_step",
    "meta_step_chunk_size",
    "mse_loss",
    "prune_rows",
    "support_loss",
    "task_graph_bytes",
    "task_losses",
]
