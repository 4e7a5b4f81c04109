"""Torch layers that reparameterize weights as ``vec(W) = U v``."""

from .layers import (
    GlobalMeanPool,
    LocallyConnected1d,
    MetaLayer,
    SharedConv2d,
    SharedLinear,
    conv1d,
)
from .network import ACTIVATIONS, CONV_LAYER_KINDS, LAYER_KINDS, MetaNetwork, build_network
from .sharing import ConvFilterSharing, DenseSharing, FixedSharing, KroneckerSharing, Sharing

__all__ = [
    "ACTIVATIONS",
    "CONV_LAYER_KINDS",
    "LAYER_KINDS",
    "ConvFilterSharing",
    "DenseSharing",
    "FixedSharing",
    "GlobalMeanPool",
    "KroneckerSharing",
    "LocallyConnected1d",
    "MetaLayer",
    "MetaNetwork",
    "SharedConv2d",
    "SharedLinear",
    "Sharing",
    "build_network",
    "conv1d",
]
