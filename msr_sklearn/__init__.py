"""msr_sklearn: meta-learning symmetries by reparameterization, scikit-learn style.

``MetaSymmetryLearner`` meta-learns the weight sharing ``U`` of a network across many
related tasks; ``EquivariantRegressor`` / ``EquivariantClassifier`` then learn a new
task from a few examples by adapting only the filter values ``v`` with ``U`` frozen.
"""

from ._pipeline import make_task_pipeline
from .estimators import EquivariantClassifier, EquivariantRegressor
from .learner import MetaSymmetryLearner
from .symmetry import LearnedSymmetry

__all__ = ["EquivariantClassifier", "EquivariantRegressor", "LearnedSymmetry",
           "MetaSymmetryLearner", "make_task_pipeline"]
__version__ = "0.1.0.dev0"
