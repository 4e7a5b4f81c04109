"""The meta-training loop (:class:`Trainer`, meta-lr schedules) and its callbacks.

See :mod:`msr_sklearn.training.loop` for the callback protocol and
:mod:`msr_sklearn.training.callbacks` for the built-in callbacks.
"""

from .loop import SCHEDULES, Callback, Trainer, meta_lr_at, seed_from, shared_seed

__all__ = ["Callback", "SCHEDULES", "Trainer", "meta_lr_at", "seed_from", "shared_seed"]
