"""Sharings: a weight as a function of filter values, ``vec(W) = U v``, and policies.

A :class:`Sharing` is a parametrization of one weight (``forward(v) -> W``,
``right_inverse(W) -> v``) whose ``U`` is meta-learned: dense (:class:`DenseSharing`,
MSR-FC), Kronecker-factored (:class:`KroneckerSharing`), a convolution's filters with
copies (:class:`ConvFilterSharing`, MSR-Conv), fixed (:class:`FixedSharing`: the
identity, or an exact group's ``U^G``), and a soft symmetry wrapper
(:class:`Residual`: ``W = U v + R``). A *policy* (:func:`resolve_policy`) says which
parameters of any ``nn.Module`` are shared, adapted per task, meta-learned or frozen.
Pure torch: usable without the rest of the library (:func:`attach_sharing`).
"""

from .attach import attach_sharing
from .base import Sharing, orthonormal_columns
from .conv import ConvFilterSharing
from .dense import DenseSharing, KroneckerSharing
from .exact import exact_group_conv_sharing, exact_lifting_sharing
from .fixed import FixedSharing
from .policy import ROLES, ParameterRole, resolve_policy
from .residual import Residual
from .spec import BUILTIN_SHARINGS, import_object, sharing_from_spec, sharing_spec

__all__ = [
    "BUILTIN_SHARINGS",
    "ConvFilterSharing",
    "DenseSharing",
    "FixedSharing",
    "KroneckerSharing",
    "ParameterRole",
    "ROLES",
    "Residual",
    "Sharing",
    "attach_sharing",
    "exact_group_conv_sharing",
    "exact_lifting_sharing",
    "import_object",
    "orthonormal_columns",
    "resolve_policy",
    "sharing_from_spec",
    "sharing_spec",
]
