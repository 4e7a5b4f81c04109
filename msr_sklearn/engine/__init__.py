"""The vectorized MSR engine: inner and outer loop over a whole meta-batch, and its optimizer.

No scikit-learn here: torch, the sharings and the data layer's ``TaskBatch``.
"""

from .meta import (
    LOSSES,
    SYMMETRY_GRADIENTS,
    MetaModel,
    TaskBatch,
    adapt,
    adapted_outputs,
    cross_entropy_loss,
    evaluate_task_losses,
    meta_step,
    mse_loss,
    task_losses,
)
from .optim import (
    HIDDEN_SHARING_SIZE,
    META_OPTIMIZERS,
    MetaAdam,
    hidden_sharing_lr_scale,
    make_meta_optimizer,
)

__all__ = [
    "HIDDEN_SHARING_SIZE",
    "LOSSES",
    "META_OPTIMIZERS",
    "SYMMETRY_GRADIENTS",
    "MetaAdam",
    "MetaModel",
    "TaskBatch",
    "adapt",
    "adapted_outputs",
    "cross_entropy_loss",
    "evaluate_task_losses",
    "hidden_sharing_lr_scale",
    "make_meta_optimizer",
    "meta_step",
    "mse_loss",
    "task_losses",
]
