"""msr_sklearn: meta-learning symmetries by reparameterization, scikit-learn style.

``MetaSymmetryLearner`` meta-learns the weight sharing ``U`` of a network across many
related tasks; ``EquivariantRegressor`` / ``EquivariantClassifier`` then learn a new
task from a few examples by adapting only the filter values ``v`` with ``U`` frozen.
"""

from .learner import MetaSymmetryLearner
from .symmetry import LearnedSymmetry

__all__ = ["LearnedSymmetry", "MetaSymmetryLearner"]
__version__ = "0.1.0.dev0"


def __getattr__(name):
    # the per-task estimators import skorch; load them on first use
    if name in ("EquivariantRegressor", "EquivariantClassifier"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'msr_sklearn' has no attribute {name!r}")
