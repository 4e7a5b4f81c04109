"""msr_sklearn: meta-learning symmetries by reparameterization, scikit-learn style."""

from .symmetry import LearnedSymmetry

__all__ = ["LearnedSymmetry"]
__version__ = "0.1.0.dev0"
