"""Reading a learned symmetry: which group it is, how equivariant, how soft; pictures.

A *layer* here is one adapted weight of a learned network (``layer=i`` counts
:attr:`LearnedSymmetry.weight_names <msr_sklearn.LearnedSymmetry.weight_names>`, or
names one), of a :class:`~msr_sklearn.LearnedSymmetry` or a
:class:`~msr_sklearn.engine.MetaModel`; a bound sharing or an array ``U`` works too.
:func:`symmetry_report` names the group a learned ``U`` is closest to, over
:func:`default_candidates` for every kind of layer; :func:`equivariance_error`
measures a model or a layer (inside its network); :func:`harden_to_group` and
:func:`tied_weight_partition` snap a learned sharing onto an exact one;
:func:`export_layer` turns it into a plain ``nn.Linear`` / ``nn.Conv2d`` whose weight
stays in ``span(U)``; :func:`plot_symmetry_matrix` draws it. The group math these use
is in :mod:`msr_sklearn.groups`.
"""

from .candidates import candidate_generators, default_candidates
from .diagnostics import equivariance_error, symmetry_report
from .export import export_layer
from .hardening import harden_to_group, tied_weight_partition
from .plotting import plot_symmetry_matrix

__all__ = [
    "candidate_generators",
    "default_candidates",
    "equivariance_error",
    "export_layer",
    "harden_to_group",
    "plot_symmetry_matrix",
    "symmetry_report",
    "tied_weight_partition",
]
