"""Built-in networks: ordinary ``nn.Module`` s with a default sharing policy each.

:class:`MLP` (the learner's network when it is given no ``module``), the paper's 1-D
single layers (:class:`Conv1dLayer`, :class:`LocallyConnected1d`), a configurable
:class:`ConvNet`, the :class:`Conv4` few-shot backbone, :class:`GroupConvNet` (exact C4
/ D4 oracle) and :class:`DeepSets`. Any other module works as well:
``MetaSymmetryLearner(module=MyNet, module__width=64, sharing={...})``.
"""

from .convnet import Conv4, ConvNet, FieldBias, GlobalPool, GroupConvNet
from .deepsets import DeepSets, EquivariantLinear
from .mlp import ACTIVATIONS, MLP
from .paper1d import Conv1dLayer, LocallyConnected1d
from .policies import LAYER_KINDS, default_policy, layer_sharing, per_weight_filters

#: the built-in models a LearnedSymmetry file names directly (no import of user code)
BUILTIN_MODELS = {cls.__name__: cls for cls in (MLP, Conv1dLayer, LocallyConnected1d, ConvNet,
                                                Conv4, GroupConvNet, DeepSets)}

__all__ = [
    "ACTIVATIONS",
    "BUILTIN_MODELS",
    "Conv1dLayer",
    "Conv4",
    "ConvNet",
    "DeepSets",
    "EquivariantLinear",
    "FieldBias",
    "GlobalPool",
    "GroupConvNet",
    "LAYER_KINDS",
    "LocallyConnected1d",
    "MLP",
    "default_policy",
    "layer_sharing",
    "per_weight_filters",
]
